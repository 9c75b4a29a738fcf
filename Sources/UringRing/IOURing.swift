internal import CURing
import Glibc

/// The real ring: one `io_uring` owned by one thread.
///
/// Created with `SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs only when this thread asks for
/// events, so no interrupts between loop turns), falling back to `COOP_TASKRUN` and then to plain
/// flags on kernels that reject them with `EINVAL`.
public final class IOURing: RingBackend {
    private let ring: UnsafeMutablePointer<io_uring>
    // `@exclusivity(unchecked)`: loop-thread state touched per message (docs/architecture.md,
    // "Exclusivity checks").
    @exclusivity(unchecked) public private(set) var counters = RingCounters()
    @exclusivity(unchecked) public private(set) var pendingSubmissions = 0
    /// Entries prepared while the submission queue was full and the kernel took nothing.
    @exclusivity(unchecked) private var backlog: [(Submission, UInt64)] = []
    /// The setup flags the kernel accepted.
    public let setupFlags: UInt32
    public let features: RingFeatures
    /// Which descriptors are in the ring's file table, indexed by descriptor: slot `fd` holds `fd`,
    /// so no slot allocator is needed (a descriptor number is unique while it is open). Empty when
    /// the kernel refused the table.
    @exclusivity(unchecked) private var registeredFiles: [Bool] = []

    /// Opcodes the runtime cannot work without.
    static let requiredOpcodes: [(UInt8, String)] = [
        (UInt8(IORING_OP_RECV.rawValue), "RECV"), (UInt8(IORING_OP_SENDMSG.rawValue), "SENDMSG"),
        (UInt8(IORING_OP_ACCEPT.rawValue), "ACCEPT"), (UInt8(IORING_OP_CONNECT.rawValue), "CONNECT"),
        (UInt8(IORING_OP_READ.rawValue), "READ"), (UInt8(IORING_OP_TIMEOUT.rawValue), "TIMEOUT"),
        (UInt8(IORING_OP_ASYNC_CANCEL.rawValue), "ASYNC_CANCEL"),
    ]

    /// Creates a ring with room for `entries` submissions.
    /// - Throws: ``RingError/unavailable(reason:)`` naming the cause and the fix when io_uring is off
    ///   (no kernel support, the `io_uring_disabled` sysctl, seccomp) or lacks a needed opcode.
    public convenience init(entries: UInt32 = 256) throws(RingError) {
        try self.init(
            entries: entries,
            preferredFlags: [
                IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
                IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
                0,
            ])
    }

    /// Creates a ring with the first of `preferredFlags` the kernel accepts (tests use it to get
    /// the plain flags an old kernel gets).
    package init(entries: UInt32, preferredFlags preferred: [UInt32]) throws(RingError) {
        ring = .allocate(capacity: 1)
        var accepted: UInt32? = nil
        var lastError: Int32 = 0
        for flags in preferred {
            var params = io_uring_params()
            params.flags = flags | IORING_SETUP_CQSIZE
            params.cq_entries = entries * 8  // multishot receives post many completions per submission
            let result = io_uring_queue_init_params(entries, ring, &params)
            if result == 0 {
                accepted = flags
                break
            }
            lastError = -result
            if lastError != EINVAL { break }
        }
        guard let flags = accepted else {
            ring.deallocate()
            throw RingError.setupFailure(errno: lastError)
        }
        setupFlags = flags
        do {
            features = try Self.checkOpcodes(ring)
        } catch {
            io_uring_queue_exit(ring)
            ring.deallocate()
            throw error
        }
        // Registering the ring fd saves an fget/fput per io_uring_enter; failure only costs speed.
        _ = io_uring_register_ring_fd(ring)
        registeredFiles = Self.makeFileTable(ring)
    }

    /// Most descriptors a ring's file table covers: 8 bytes of kernel memory each.
    static let fileTableLimit = 16_384

    /// Registers an empty file table as large as the descriptor limit allows (the kernel refuses
    /// more than `RLIMIT_NOFILE`), up to ``fileTableLimit``; failure (before Linux 5.19) only
    /// costs speed.
    private static func makeFileTable(_ ring: UnsafeMutablePointer<io_uring>) -> [Bool] {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return [] }
        let size = Int(min(UInt64(limit.rlim_cur), UInt64(fileTableLimit)))
        guard size > 0, io_uring_register_files_sparse(ring, UInt32(size)) == 0 else { return [] }
        return Array(repeating: false, count: size)
    }

    /// Puts a connected socket in the ring's file table, so that its sends and receives skip the
    /// kernel's descriptor lookup and file reference count (what the C server's direct
    /// descriptors save); a descriptor past the table stays unregistered and works as before.
    public func registerFile(_ fd: Int32) {
        guard fd >= 0, Int(fd) < registeredFiles.count, !registeredFiles[Int(fd)] else { return }
        var file = fd
        if io_uring_register_files_update(ring, UInt32(fd), &file, 1) == 1 { registeredFiles[Int(fd)] = true }
    }

    /// Takes `fd` out of the file table; must come before the descriptor is closed, or the table's
    /// reference keeps the socket open (no FIN) and a later descriptor with the same number would
    /// reach the old socket. Operations still in flight keep their own reference.
    public func unregisterFile(_ fd: Int32) {
        guard isRegistered(fd) else { return }
        var none: Int32 = -1
        _ = io_uring_register_files_update(ring, UInt32(fd), &none, 1)
        registeredFiles[Int(fd)] = false
    }

    /// How many descriptors the file table covers (0 without one).
    package var fileTableSize: Int { registeredFiles.count }

    /// Whether `fd` is in the file table now.
    package func isRegistered(_ fd: Int32) -> Bool {
        fd >= 0 && Int(fd) < registeredFiles.count && registeredFiles[Int(fd)]
    }

    /// Points `sqe` at the file table's slot when `fd` is registered there.
    @inline(__always)
    private func useFileTable(_ sqe: UnsafeMutablePointer<io_uring_sqe>, _ fd: Int32) {
        if isRegistered(fd) {
            sqe.pointee.flags |= UInt8(CURING_IOSQE_FIXED_FILE)
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    private static func checkOpcodes(_ ring: UnsafeMutablePointer<io_uring>) throws(RingError) -> RingFeatures {
        guard let probe = io_uring_get_probe_ring(ring) else {
            throw .unavailable(reason: "io_uring_register(PROBE) failed: the kernel is older than 5.6. Use Linux 6.0+.")
        }
        defer { io_uring_free_probe(probe) }
        let missing = requiredOpcodes.filter { io_uring_opcode_supported(probe, Int32($0.0)) == 0 }.map(\.1)
        if !missing.isEmpty {
            throw .unavailable(
                reason: "io_uring lacks the opcodes \(missing.joined(separator: ", ")) on this kernel. "
                    + "UringStreams needs Linux 6.0 or newer.")
        }
        let kernelFeatures = curing_features(ring)
        // SENDMSG_ZC's usage reports need 6.2; a 6.1 kernel rejects the flag with EINVAL, which the
        // transport answers by sending plainly from then on.
        return RingFeatures(
            receiveBundles: kernelFeatures & IORING_FEAT_RECVSEND_BUNDLE != 0,
            zeroCopySend: io_uring_opcode_supported(probe, Int32(IORING_OP_SENDMSG_ZC.rawValue)) != 0)
    }

    @inline(__always)
    private func nextEntry() -> UnsafeMutablePointer<io_uring_sqe>? {
        if let sqe = io_uring_get_sqe(ring) { return sqe }
        // The submission queue is full: hand what is queued to the kernel and take a fresh slot.
        let queued = Int(io_uring_sq_ready(ring))
        _ = io_uring_submit(ring)
        counters.enterCalls += 1
        counters.submissions += queued - Int(io_uring_sq_ready(ring))
        return io_uring_get_sqe(ring)
    }

    public func prepare(_ submission: Submission, userData: UInt64) {
        pendingSubmissions += 1
        // A kernel that takes nothing (its completion queue overflowed) leaves the queue full:
        // then the entry waits here, in order, until a submit makes room.
        guard backlog.isEmpty, let sqe = nextEntry() else {
            backlog.append((submission, userData))
            return
        }
        fill(sqe, submission, userData: userData)
    }

    /// Moves waiting entries into the submission queue while it has room.
    private func moveBacklog() {
        var moved = 0
        while moved < backlog.count, let sqe = io_uring_get_sqe(ring) {
            fill(sqe, backlog[moved].0, userData: backlog[moved].1)
            moved += 1
        }
        backlog.removeFirst(moved)
    }

    private func fill(_ sqe: UnsafeMutablePointer<io_uring_sqe>, _ submission: Submission, userData: UInt64) {
        switch submission {
        case .receiveMultishot(let fd, let group, let bundle, let totalLimit):
            io_uring_prep_recv_multishot(sqe, fd, nil, 0, 0)
            sqe.pointee.flags |= UInt8(CURING_IOSQE_BUFFER_SELECT)
            sqe.pointee.buf_group = group
            if bundle { sqe.pointee.ioprio |= UInt16(IORING_RECVSEND_BUNDLE) }
            // The kernel ABI's `optlen`, which liburing 2.3 still calls `file_index`.
            sqe.pointee.file_index = totalLimit
            useFileTable(sqe, fd)
        case .send(let fd, let buffer, let length, let flags):
            io_uring_prep_send(sqe, fd, buffer, length, flags)
            useFileTable(sqe, fd)
        case .sendMessage(let fd, let message, let flags):
            io_uring_prep_sendmsg(sqe, fd, message.assumingMemoryBound(to: msghdr.self), UInt32(bitPattern: flags))
            useFileTable(sqe, fd)
        case .sendMessageZeroCopy(let fd, let message, let flags):
            io_uring_prep_sendmsg_zc(
                sqe, fd, message.assumingMemoryBound(to: msghdr.self), UInt32(bitPattern: flags))
            sqe.pointee.ioprio |= UInt16(IORING_SEND_ZC_REPORT_USAGE)
            useFileTable(sqe, fd)
        case .accept(let fd, let multishot):
            if multishot {
                io_uring_prep_multishot_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
            } else {
                io_uring_prep_accept(sqe, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
            }
        case .connect(let fd, let address, let length):
            io_uring_prep_connect(sqe, fd, address.assumingMemoryBound(to: sockaddr.self), length)
        case .read(let fd, let buffer, let length):
            io_uring_prep_read(sqe, fd, buffer, UInt32(length), 0)
        case .timeout(let timespec):
            io_uring_prep_timeout(sqe, timespec.assumingMemoryBound(to: __kernel_timespec.self), 0, 0)
        case .cancel(let target):
            io_uring_prep_cancel64(sqe, target, 0)
        case .cancelEverything:
            io_uring_prep_cancel64(sqe, 0, Int32(IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL))
        }
        io_uring_sqe_set_data64(sqe, userData)
    }

    public func submit(waitingFor minimumCompletions: Int) throws(RingError) {
        while true {
            moveBacklog()
            let queued = Int(io_uring_sq_ready(ring))
            // Entries still waiting outside the queue go in first; only then may the call sleep.
            let wait = backlog.isEmpty ? minimumCompletions : 0
            // With DEFER_TASKRUN completions are produced only inside io_uring_enter(GETEVENTS), so
            // a non-waiting turn still has to ask for events.
            let result =
                wait > 0 ? io_uring_submit_and_wait(ring, UInt32(wait)) : io_uring_submit_and_get_events(ring)
            counters.enterCalls += 1
            // The kernel may consume only part of the queue (a failed entry without SUBMIT_ALL; a
            // full CQ ring): what it left stays queued, and the memory those entries point to must
            // stay valid, so the count comes from the ring, never from the result.
            let left = Int(io_uring_sq_ready(ring))
            counters.submissions += queued - left
            pendingSubmissions = left + backlog.count
            switch result >= 0 ? 0 : -result {
            case 0, EINTR, ETIME:
                // More entries wait and the kernel took some: go on; otherwise the caller reaps.
                if backlog.isEmpty || left == queued { return }
            case EAGAIN, EBUSY:
                // The CQ ring is full: the caller reaps and calls again.
                return
            default:
                throw .system(errno: -result, operation: "io_uring_enter")
            }
        }
    }

    /// Queues an entry the kernel refuses when it reads it (a no-op with an undefined flag), which
    /// stops a submission part-way on a ring without `SUBMIT_ALL`; for tests of partial submits.
    package func prepareRefusedEntryForTesting() {
        guard let sqe = nextEntry() else { return }
        io_uring_prep_nop(sqe)
        sqe.pointee.flags = 0x80
        io_uring_sqe_set_data64(sqe, 0)
        pendingSubmissions += 1
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        let count = buffer.withMemoryRebound(to: curing_cqe.self) { cqes in
            Int(curing_reap(ring, cqes.baseAddress!, UInt32(cqes.count)))
        }
        counters.completions += count
        return count
    }

    public func registerBufferRing(entries: Int, group: UInt16, incremental: Bool) throws(RingError)
        -> ProvidedBufferRingMemory
    {
        var error: Int32 = 0
        if incremental,
            let memory = curing_setup_buf_ring(ring, UInt32(entries), Int32(group), UInt32(IOU_PBUF_RING_INC), &error)
        {
            return ProvidedBufferRingMemory(
                base: UnsafeMutableRawPointer(memory), entries: entries, group: group, incremental: true)
        }
        // Kernels before 6.12 reject the flag with EINVAL: register a plain ring instead.
        guard let memory = curing_setup_buf_ring(ring, UInt32(entries), Int32(group), 0, &error) else {
            if -error == EINVAL || -error == ENOENT {
                throw .unavailable(
                    reason: "the kernel does not support provided-buffer rings (added in Linux 5.19); "
                        + "UringStreams needs Linux 6.0 or newer.")
            }
            if -error == ENOMEM {
                throw .exhausted(
                    errno: ENOMEM, reason: RingError.memlockAdvice(operation: "registering the receive-buffer ring"))
            }
            throw .system(errno: -error, operation: "io_uring_register(PBUF_RING)")
        }
        return ProvidedBufferRingMemory(base: UnsafeMutableRawPointer(memory), entries: entries, group: group)
    }

    /// Registers and drops a one-entry provided-buffer ring, so a kernel (or filter) that allows
    /// io_uring but not buffer rings is found when the backend is chosen, not at the first receive.
    /// - Throws: What ``registerBufferRing(entries:group:incremental:)`` throws.
    public func checkBufferRings() throws(RingError) {
        unregisterBufferRing(try registerBufferRing(entries: 1, group: UInt16.max, incremental: false))
    }

    public func unregisterBufferRing(_ memory: ProvidedBufferRingMemory) {
        _ = curing_free_buf_ring(
            ring, memory.base.assumingMemoryBound(to: io_uring_buf_ring.self), UInt32(memory.entries),
            Int32(memory.group))
    }
}
