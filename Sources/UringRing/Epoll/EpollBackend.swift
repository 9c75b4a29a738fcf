internal import CURing
import Glibc

/// The backend for where io_uring is blocked (Docker's and Kubernetes' default seccomp profiles,
/// the `io_uring_disabled` sysctl, gVisor): readiness from epoll, emulating the completions the
/// loop expects from io_uring, so nothing above the ``RingBackend`` seam knows which one runs.
///
/// Each operation is tried at once when submitted (a send usually finishes there, without a wait);
/// one that would block waits for its descriptor, registered edge-triggered for reading and
/// writing when its first operation waits, and is tried again when epoll reports the descriptor
/// ready. A multishot receive picks buffers from the provided-buffer ring the loop fills, which
/// here is plain memory this backend reads as the kernel would, incremental consumption included.
/// Timeouts are epoll_wait's timeout.
///
/// Used from one thread only, like the ring it stands in for.
public final class EpollBackend: RingBackend {
    // `@exclusivity(unchecked)`: loop-thread state touched per message (docs/architecture.md,
    // "Exclusivity checks").
    @exclusivity(unchecked) public private(set) var counters = RingCounters()
    public var pendingSubmissions: Int { prepared.count }
    /// None of io_uring's optional features: no receive bundles, no zero-copy sends (incremental
    /// buffer consumption needs no feature bit: the pool asks for it and this backend does it).
    public let features = RingFeatures()
    public var kind: RingBackendKind { .epoll }
    /// Why io_uring was not used, when this backend stands in for it automatically.
    public let fallbackReason: String?

    private let epollFD: Int32
    @exclusivity(unchecked) private var prepared: [(Submission, UInt64)] = []
    @exclusivity(unchecked) private var processing: [(Submission, UInt64)] = []
    @exclusivity(unchecked) private var completed: [Completion] = []
    @exclusivity(unchecked) private var completedHead = 0
    /// The descriptor of each waiting operation, by user data (for cancels; the hot path never
    /// hashes).
    @exclusivity(unchecked) private var waiting: [UInt64: Int32] = [:]
    /// Per descriptor number, its waiting operations in submission order.
    @exclusivity(unchecked) private var descriptors: [Waiters] = []
    /// Descriptors to try again without waiting for epoll: a receive or accept that stopped after
    /// its share of a turn, or a descriptor epoll cannot watch (a regular file), which is always
    /// ready.
    @exclusivity(unchecked) private var retry: [Int32] = []
    @exclusivity(unchecked) private var retryScratch: [Int32] = []
    @exclusivity(unchecked) private var timers = EpollTimers()
    /// Submits in a row that returned without asking epoll.
    @exclusivity(unchecked) private var turnsWithoutPolling = 0
    private typealias BufferRing = (group: UInt16, memory: ProvidedBufferRingMemory, head: UInt16)
    @exclusivity(unchecked) private var bufferRings: [BufferRing] = []
    private let ready: UnsafeMutablePointer<curing_epoll_ready>
    private static let readyCapacity = 256
    /// Receives (or accepts) one operation makes per readiness event before others get a turn.
    private static let turnShare = 16

    private struct Waiters {
        var readers: [EpollOperation] = []
        var writers: [EpollOperation] = []
        /// epoll refused the descriptor (`EPERM`: a regular file, /dev/null): it never blocks.
        var alwaysReady = false
        var isEmpty: Bool { readers.isEmpty && writers.isEmpty }
    }

    /// Creates the epoll instance.
    /// - Parameter fallbackReason: Why io_uring is not used, for the log line and statistics.
    /// - Throws: ``RingError/system(errno:operation:)`` when `epoll_create1` fails.
    public init(fallbackReason: String? = nil) throws(RingError) {
        let fd = curing_epoll_create()
        guard fd >= 0 else { throw .system(errno: -fd, operation: "epoll_create1") }
        epollFD = fd
        self.fallbackReason = fallbackReason
        ready = .allocate(capacity: Self.readyCapacity)
        completed.reserveCapacity(256)
        prepared.reserveCapacity(64)
        processing.reserveCapacity(64)
    }

    deinit {
        for waiters in descriptors {
            for operation in waiters.readers + waiters.writers { operation.release() }
        }
        close(epollFD)
        ready.deallocate()
    }

    // MARK: RingBackend

    public func prepare(_ submission: Submission, userData: UInt64) {
        prepared.append((submission, userData))
    }

    public func submit(waitingFor minimumCompletions: Int) throws(RingError) {
        swap(&prepared, &processing)
        for (submission, userData) in processing { start(submission, userData: userData) }
        counters.submissions += processing.count
        processing.removeAll(keepingCapacity: true)
        runRetries()
        fireTimers()
        while true {
            let mustWait = completedCount < minimumCompletions && retry.isEmpty
            // With completions in hand (a send that finished at once) the loop has work without
            // asking epoll, and asks on its next turn: a ping-pong server then makes one
            // epoll_wait per message, not two. But only a few turns in a row, or a loop whose
            // sends keep finishing at once would never hear that its receives can go on.
            if !mustWait && (waiting.isEmpty || (completedCount > 0 && turnsWithoutPolling < 4)) {
                turnsWithoutPolling += 1
                return
            }
            turnsWithoutPolling = 0
            let timeout = mustWait ? timers.millisecondsUntilNext(now: curing_monotonic_ns()) : 0
            let count = curing_epoll_wait(epollFD, ready, Int32(Self.readyCapacity), timeout)
            counters.enterCalls += 1
            if count < 0 {
                if count == -EINTR { return }
                throw .system(errno: -count, operation: "epoll_wait")
            }
            for index in 0..<Int(count) { handle(ready[index]) }
            runRetries()
            fireTimers()
            if !mustWait || completedCount >= minimumCompletions { return }
        }
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        let count = min(buffer.count, completedCount)
        for index in 0..<count { buffer[index] = completed[completedHead + index] }
        completedHead += count
        if completedHead == completed.count {
            completed.removeAll(keepingCapacity: true)
            completedHead = 0
        }
        counters.completions += count
        return count
    }

    public func registerBufferRing(entries: Int, group: UInt16, incremental: Bool) throws(RingError)
        -> ProvidedBufferRingMemory
    {
        // The same layout as the kernel's ring (16-byte entries, the tail in the first one's last
        // two bytes), so the loop's pool fills it as it fills a registered one.
        let bytes = entries * 16
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            throw .system(errno: errno, operation: "mmap(receive buffer ring)")
        }
        let ring = ProvidedBufferRingMemory(base: memory, entries: entries, group: group, incremental: incremental)
        bufferRings.append((group, ring, 0))
        return ring
    }

    public func unregisterBufferRing(_ memory: ProvidedBufferRingMemory) {
        bufferRings.removeAll { $0.group == memory.group }
        munmap(memory.base, memory.entries * 16)
    }

    // MARK: Starting operations

    private var completedCount: Int { completed.count - completedHead }

    @inline(__always)
    private func post(_ userData: UInt64, _ result: Int32, _ flags: UInt32 = 0) {
        completed.append(Completion(userData: userData, result: result, flags: flags))
    }

    private func start(_ submission: Submission, userData: UInt64) {
        let operation: EpollOperation
        switch submission {
        case .receiveMultishot(let fd, let group, _, let totalLimit):
            operation = EpollOperation(fd: fd, userData: userData, kind: .receive(group: group, limitLeft: totalLimit))
        case .send(let fd, let buffer, let length, let flags):
            operation = EpollOperation(
                fd: fd, userData: userData, kind: .send(buffer: buffer, length: length, flags: flags))
        case .sendMessage(let fd, let message, let flags):
            operation = EpollOperation(
                fd: fd, userData: userData,
                kind: .sendMessage(message: message, flags: flags, zeroCopy: false, owned: false))
        case .sendMessageZeroCopy(let fd, let message, let flags):
            operation = EpollOperation(
                fd: fd, userData: userData,
                kind: .sendMessage(message: message, flags: flags, zeroCopy: true, owned: false))
        case .accept(let fd, let multishot):
            // A listener belongs to one loop; draining it until EAGAIN needs it non-blocking.
            let failure = curing_set_nonblocking(fd)
            guard failure == 0 else {
                post(userData, failure)
                return
            }
            operation = EpollOperation(fd: fd, userData: userData, kind: .accept(multishot: multishot))
        case .connect(let fd, let address, let length):
            startConnect(fd: fd, address: address, length: length, userData: userData, attempt: 0)
            return
        case .read(let fd, let buffer, let length):
            // Possibly a blocking descriptor: read only once epoll says it is readable.
            wait(EpollOperation(fd: fd, userData: userData, kind: .read(buffer: buffer, length: length)))
            return
        case .timeout(let timespec):
            let seconds = timespec.load(as: Int64.self)
            let nanoseconds = timespec.load(fromByteOffset: 8, as: Int64.self)
            let delay = UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, nanoseconds))
            timers.insert(.init(deadline: curing_monotonic_ns() &+ delay, userData: userData, action: .expire))
            return
        case .cancel(let target):
            post(userData, cancel(target) ? 0 : -ENOENT)
            return
        case .cancelEverything:
            post(userData, Int32(cancelEverything()))
            return
        }
        // Behind operations already waiting on the descriptor: they go first, in order.
        if hasWaiters(operation.fd, operation.direction) {
            wait(operation)
            return
        }
        var attempted = operation
        switch attempt(&attempted) {
        case .finished: break
        case .wouldBlock: wait(attempted)
        case .yielded:
            wait(attempted)
            retry.append(attempted.fd)
        }
    }

    private func startConnect(fd: Int32, address: UnsafeRawPointer, length: UInt32, userData: UInt64, attempt: Int) {
        let result = curing_connect_start(fd, address, length)
        switch -result {
        case 0:
            post(userData, 0)
        case EINPROGRESS:
            wait(EpollOperation(fd: fd, userData: userData, kind: .connect))
        case EAGAIN:
            // A Unix listener's backlog is full; io_uring would wait in the kernel. There is no
            // readiness to wait for, so try again soon, backing off to 100 ms.
            let delay = UInt64(min(100, 1 << min(attempt, 7))) * 1_000_000
            timers.insert(
                .init(
                    deadline: curing_monotonic_ns() &+ delay, userData: userData,
                    action: .retryConnect(fd: fd, address: address, length: length, attempt: attempt + 1)))
        default:
            post(userData, result)
        }
    }

    // MARK: Attempts

    private enum Outcome {
        /// The operation posted its last completion.
        case finished
        /// It waits for readiness.
        case wouldBlock
        /// It can go on but has had its share of this turn.
        case yielded
    }

    /// Does what `operation` can do now without blocking, posting its completions. With
    /// `untilWouldBlock` false, a receive stops at a short read: it emptied the socket, and data
    /// arriving later brings a new edge. That is only sound when epoll reported the descriptor
    /// without a hang-up: an end of stream that came with the data brings no edge of its own.
    private func attempt(_ operation: inout EpollOperation, untilWouldBlock: Bool = true) -> Outcome {
        let fd = operation.fd
        let userData = operation.userData
        switch operation.kind {
        case .receive(let group, var limitLeft):
            for _ in 0..<Self.turnShare {
                guard let ringIndex = bufferRings.firstIndex(where: { $0.group == group }) else {
                    post(userData, -ENOBUFS)
                    return .finished
                }
                let ring = bufferRings[ringIndex].memory
                let head = bufferRings[ringIndex].head
                guard head != ring.tail else {
                    post(userData, -ENOBUFS)
                    return .finished
                }
                let entry = ring.entry(at: head)
                let wanted = limitLeft > 0 ? min(entry.length, Int(limitLeft)) : entry.length
                let received = curing_recv_nowait(fd, entry.address, wanted)
                if received == -Int(EINTR) { continue }
                if received == -Int(EAGAIN) {
                    operation.kind = .receive(group: group, limitLeft: limitLeft)
                    return .wouldBlock
                }
                guard received > 0 else {
                    // EOF (0) or an error ends a multishot receive, as in the kernel.
                    post(userData, Int32(received))
                    return .finished
                }
                var flags = CompletionFlags.buffer | UInt32(entry.id) << 16
                if ring.incremental && received < entry.length {
                    // The kernel's IOU_PBUF_RING_INC: the buffer stays at the head, shrunk.
                    let slot = ring.base + Int(head & UInt16(ring.entries - 1)) * 16
                    slot.storeBytes(of: UInt64(UInt(bitPattern: entry.address + received)), as: UInt64.self)
                    slot.storeBytes(of: UInt32(entry.length - received), toByteOffset: 8, as: UInt32.self)
                    flags |= CompletionFlags.bufferMore
                } else {
                    bufferRings[ringIndex].head = head &+ 1
                }
                if limitLeft > 0 {
                    limitLeft -= UInt32(received)
                    if limitLeft == 0 {
                        post(userData, Int32(received), flags)
                        return .finished
                    }
                }
                post(userData, Int32(received), flags | CompletionFlags.more)
                if received < wanted && !untilWouldBlock {
                    operation.kind = .receive(group: group, limitLeft: limitLeft)
                    return .wouldBlock
                }
            }
            operation.kind = .receive(group: group, limitLeft: limitLeft)
            return .yielded
        case .send(let buffer, let length, let flags):
            var sent: Int
            repeat { sent = curing_send_nowait(fd, buffer, length, flags) } while sent == -Int(EINTR)
            if sent == -Int(EAGAIN) { return .wouldBlock }
            post(userData, Int32(sent))
            return .finished
        case .sendMessage(let message, let flags, let zeroCopy, _):
            var sent: Int
            repeat {
                sent = curing_sendmsg_nowait(fd, message.assumingMemoryBound(to: msghdr.self), flags)
            } while sent == -Int(EINTR)
            if sent == -Int(EAGAIN) {
                operation.ownMessage()
                return .wouldBlock
            }
            if zeroCopy {
                // A zero-copy send's two completions: the result, then the notification that the
                // memory is free again, reporting (truthfully) that the data was copied.
                post(userData, Int32(sent), CompletionFlags.more)
                post(userData, Int32(bitPattern: 1 << 31), CompletionFlags.notification)
            } else {
                post(userData, Int32(sent))
            }
            return .finished
        case .accept(let multishot):
            for _ in 0..<Self.turnShare {
                let accepted = curing_accept_nowait(fd)
                if accepted == -EINTR { continue }
                if accepted == -EAGAIN { return .wouldBlock }
                if accepted < 0 || !multishot {
                    post(userData, accepted)
                    return .finished
                }
                post(userData, accepted, CompletionFlags.more)
            }
            return .yielded
        case .connect:
            post(userData, curing_connect_finish(fd))
            return .finished
        case .read(let buffer, let length):
            var result: Int
            repeat { result = curing_read(fd, buffer, length) } while result == -Int(EINTR)
            if result == -Int(EAGAIN) { return .wouldBlock }
            post(userData, Int32(result))
            return .finished
        }
    }

    // MARK: Waiting

    private enum Events {
        static func bits(_ value: Int) -> UInt32 { UInt32(truncatingIfNeeded: value) }
        /// Sockets are watched both ways, edge-triggered: registered once, never modified while
        /// operations come and go. A descriptor only ever read (the eventfd) only for reading.
        static let watched = bits(CURING_EPOLLIN | CURING_EPOLLOUT | CURING_EPOLLRDHUP | CURING_EPOLLET)
        static let readable = bits(CURING_EPOLLIN | CURING_EPOLLET)
        static let failed = bits(CURING_EPOLLERR | CURING_EPOLLHUP)
        static let wakeReaders = bits(CURING_EPOLLIN | CURING_EPOLLRDHUP) | failed
        static let wakeWriters = bits(CURING_EPOLLOUT) | failed
        /// The peer's end of stream or an error: a receive must read on until it sees it.
        static let ending = bits(CURING_EPOLLRDHUP) | failed
    }

    private func hasWaiters(_ fd: Int32, _ direction: EpollOperation.Direction) -> Bool {
        guard Int(fd) < descriptors.count else { return false }
        return direction == .reading ? !descriptors[Int(fd)].readers.isEmpty : !descriptors[Int(fd)].writers.isEmpty
    }

    /// Queues `operation` until its descriptor is ready, registering the descriptor with epoll
    /// when it is the first to wait there.
    private func wait(_ waiter: EpollOperation) {
        var operation = waiter
        operation.ownMessage()
        let fd = Int(operation.fd)
        guard fd >= 0 else {
            operation.release()
            post(operation.userData, -EBADF)
            return
        }
        if fd >= descriptors.count {
            descriptors.append(
                contentsOf: repeatElement(Waiters(), count: max(fd + 1, descriptors.count * 2) - descriptors.count))
        }
        if descriptors[fd].isEmpty {
            // Registered afresh whenever nothing waited here: the number may name another file
            // since (a closed descriptor leaves epoll by itself). Modifying re-arms the edge, so
            // readiness that came before is reported too.
            // The eventfd is always writable: watching it for writing would wake epoll for nothing.
            let events: UInt32
            if case .read = operation.kind { events = Events.readable } else { events = Events.watched }
            var result = curing_epoll_modify(epollFD, operation.fd, events)
            if result == -ENOENT { result = curing_epoll_add(epollFD, operation.fd, events) }
            descriptors[fd].alwaysReady = result == -EPERM
            if result == -EPERM {
                retry.append(operation.fd)
            } else if result < 0 {
                operation.release()
                post(operation.userData, result)
                return
            }
        } else if descriptors[fd].alwaysReady {
            retry.append(operation.fd)
        }
        waiting[operation.userData] = operation.fd
        switch operation.direction {
        case .reading: descriptors[fd].readers.append(operation)
        case .writing: descriptors[fd].writers.append(operation)
        }
    }

    private func handle(_ event: curing_epoll_ready) {
        let fd = Int(event.fd)
        guard fd < descriptors.count, !descriptors[fd].isEmpty else {
            // Nothing waits here any more: stop hearing about it until something does.
            _ = curing_epoll_delete(epollFD, event.fd)
            return
        }
        if event.events & Events.wakeReaders != 0 {
            runWaiters(fd, .reading, untilWouldBlock: event.events & Events.ending != 0)
        }
        if event.events & Events.wakeWriters != 0 {
            runWaiters(fd, .writing)
        }
    }

    /// Tries the operations waiting on `fd` in one direction, in order, until one must wait on.
    private func runWaiters(_ fd: Int, _ direction: EpollOperation.Direction, untilWouldBlock: Bool = true) {
        while true {
            let first = direction == .reading ? descriptors[fd].readers.first : descriptors[fd].writers.first
            guard var operation = first else { return }
            switch attempt(&operation, untilWouldBlock: untilWouldBlock) {
            case .finished:
                waiting[operation.userData] = nil
                operation.release()
                switch direction {
                case .reading: descriptors[fd].readers.removeFirst()
                case .writing: descriptors[fd].writers.removeFirst()
                }
                // A blocking descriptor's next read must wait for its own readiness.
                if case .read = operation.kind { return }
            case .wouldBlock:
                replaceFirst(fd, direction, with: operation)
                return
            case .yielded:
                replaceFirst(fd, direction, with: operation)
                retry.append(Int32(fd))
                return
            }
        }
    }

    /// Keeps what an attempt changed (buffers taken, the limit left, an owned header).
    private func replaceFirst(_ fd: Int, _ direction: EpollOperation.Direction, with operation: EpollOperation) {
        switch direction {
        case .reading: descriptors[fd].readers[0] = operation
        case .writing: descriptors[fd].writers[0] = operation
        }
    }

    private func runRetries() {
        guard !retry.isEmpty else { return }
        swap(&retry, &retryScratch)
        for fd in retryScratch where Int(fd) < descriptors.count {
            runWaiters(Int(fd), .reading)
            if Int(fd) < descriptors.count { runWaiters(Int(fd), .writing) }
        }
        retryScratch.removeAll(keepingCapacity: true)
    }

    private func fireTimers() {
        guard !timers.isEmpty else { return }
        let now = curing_monotonic_ns()
        while let entry = timers.popExpired(now: now) {
            switch entry.action {
            case .expire:
                post(entry.userData, -ETIME)
            case .retryConnect(let fd, let address, let length, let attempt):
                startConnect(fd: fd, address: address, length: length, userData: entry.userData, attempt: attempt)
            }
        }
    }

    // MARK: Cancelling

    /// Ends the operation submitted as `target` with `-ECANCELED`; whether one was in progress.
    private func cancel(_ target: UInt64) -> Bool {
        if let fd = waiting.removeValue(forKey: target).map(Int.init) {
            if let index = descriptors[fd].readers.firstIndex(where: { $0.userData == target }) {
                descriptors[fd].readers.remove(at: index).release()
            } else if let index = descriptors[fd].writers.firstIndex(where: { $0.userData == target }) {
                descriptors[fd].writers.remove(at: index).release()
            }
            post(target, -ECANCELED)
            return true
        }
        if timers.remove(target) != nil {
            post(target, -ECANCELED)
            return true
        }
        return false
    }

    /// Cancels everything in progress (the loop is shutting down); returns how many.
    private func cancelEverything() -> Int {
        var count = 0
        for fd in Set(waiting.values).map(Int.init) {
            for operation in descriptors[fd].readers + descriptors[fd].writers {
                operation.release()
                post(operation.userData, -ECANCELED)
                count += 1
            }
            descriptors[fd].readers.removeAll()
            descriptors[fd].writers.removeAll()
        }
        waiting.removeAll()
        for entry in timers.removeAll() {
            post(entry.userData, -ECANCELED)
            count += 1
        }
        return count
    }
}
