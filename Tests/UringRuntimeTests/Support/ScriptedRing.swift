import Glibc

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// A ring whose kernel is the test: it records every submission and completes operations only
/// when the test says so, so the layers above can be driven through faults a real kernel rarely
/// produces on demand (short sends, resets, ENOBUFS, cancellations).
///
/// The loop thread calls the `RingBackend` methods; the test thread calls the scripting methods.
final class ScriptedRing: RingBackend, @unchecked Sendable {
    // Sendable: all shared state lives in `shared` (locked); `bufferRing` is written once at
    // registration, before the test can see the ring.

    struct Recorded: Sendable {
        let userData: UInt64
        let description: String
        /// For sends: the bytes the iovecs pointed at when submitted.
        let sendPayload: [UInt8]?
        let fd: Int32?
        /// The inode behind `fd` when submitted: descriptor numbers are reused, inodes are not.
        let inode: UInt?
    }

    private struct Shared {
        var submitted: [Recorded] = []
        var ready: [Completion] = []
        var wakeRead: UInt64?
        var bufferHead: UInt16 = 0
        var counters = RingCounters()
        var pending = 0
        /// Operations submitted and not finished: what a cancel-everything completes.
        var outstanding: [UInt64] = []
        /// The errno every submit throws from now on (a ring that failed beyond recovery).
        var fatalError: Int32?
    }

    private let shared = Locked(Shared())
    private(set) var bufferRing: ProvidedBufferRingMemory?
    private var ringStorage: UnsafeMutableRawPointer?
    private var wakeFD: Int32 = -1

    var counters: RingCounters { shared.withLock { $0.counters } }
    /// A kernel with none of the optional features: the runtime's fallback paths.
    let features = RingFeatures()
    var pendingSubmissions: Int { shared.withLock { $0.pending } }

    func prepare(_ submission: Submission, userData: UInt64) {
        var payload: [UInt8]?
        var fd: Int32?
        let text: String
        switch submission {
        case .read(let readFD, _, _) where userData == 1:
            wakeFD = readFD
            shared.withLock {
                $0.wakeRead = userData; $0.pending += 1
            }
            return
        case .sendMessage(let sendFD, let message, _):
            let header = message.assumingMemoryBound(to: msghdr.self).pointee
            var bytes: [UInt8] = []
            for i in 0..<Int(header.msg_iovlen) {
                let iov = header.msg_iov[i]
                bytes += UnsafeRawBufferPointer(start: iov.iov_base, count: iov.iov_len)
            }
            payload = bytes
            fd = sendFD
            text = "send"
        case .send(let sendFD, let buffer, let length, _):
            payload = Array(UnsafeRawBufferPointer(start: buffer, count: length))
            fd = sendFD
            text = "send"
        case .receiveMultishot(let receiveFD, _, _, _): text = "recv-multishot"; fd = receiveFD
        case .cancel(let target): text = "cancel \(target)"
        case .cancelEverything:
            // As the kernel does: every operation in flight ends with -ECANCELED.
            shared.withLock { state in
                for userData in state.outstanding {
                    state.ready.append(Completion(userData: userData, result: -ECANCELED))
                }
                state.outstanding.removeAll()
                if let wake = state.wakeRead {
                    state.ready.append(Completion(userData: wake, result: -ECANCELED))
                    state.wakeRead = nil
                }
            }
            text = "cancel everything"
        case .connect(let connectFD, _, _): text = "connect"; fd = connectFD
        case .timeout: text = "timeout"
        case .accept(let acceptFD, _): text = "accept"; fd = acceptFD
        default: text = "\(submission)"
        }
        var info = stat()
        let inode = fd.flatMap { fstat($0, &info) == 0 ? UInt(info.st_ino) : nil }
        let record = Recorded(userData: userData, description: text, sendPayload: payload, fd: fd, inode: inode)
        shared.withLock { state in
            state.submitted.append(record)
            state.pending += 1
            if userData != 0 { state.outstanding.append(userData) }
        }
    }

    func submit(waitingFor minimumCompletions: Int) throws(RingError) {
        if let code = shared.withLock({ $0.fatalError }) {
            throw .system(errno: code, operation: "io_uring_enter")
        }
        shared.withLock {
            $0.counters.enterCalls += 1
            $0.counters.submissions += $0.pending
            $0.pending = 0
        }
        // Sleep in small steps until the test posts a completion or another thread wakes the loop.
        for _ in 0..<(minimumCompletions > 0 ? 20 : 1) {
            if pollWake() || shared.withLock({ !$0.ready.isEmpty }) { return }
            if minimumCompletions > 0 { usleep(1000) }
        }
    }

    private func pollWake() -> Bool {
        guard wakeFD >= 0 else { return false }
        var descriptor = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, 0) == 1 else { return false }
        var value: UInt64 = 0
        _ = read(wakeFD, &value, 8)
        shared.withLock { state in
            if let wake = state.wakeRead {
                state.ready.append(Completion(userData: wake, result: 8))
                state.wakeRead = nil
            }
        }
        return true
    }

    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        shared.withLock { state in
            let count = min(buffer.count, state.ready.count)
            for i in 0..<count { buffer[i] = state.ready[i] }
            state.ready.removeFirst(count)
            state.counters.completions += count
            return count
        }
    }

    func registerBufferRing(entries: Int, group: UInt16, incremental: Bool) throws(RingError)
        -> ProvidedBufferRingMemory
    {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: entries * 16, alignment: 4096)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: entries * 16)
        ringStorage = storage
        let memory = ProvidedBufferRingMemory(base: storage, entries: entries, group: group)
        bufferRing = memory
        return memory
    }

    func unregisterBufferRing(_ memory: ProvidedBufferRingMemory) {
        ringStorage?.deallocate()
        ringStorage = nil
    }

    // MARK: Scripting, from the test thread

    var submissions: [Recorded] { shared.withLock { $0.submitted } }

    /// Posts a completion for `userData`.
    func complete(_ userData: UInt64, result: Int32, more: Bool = false) {
        shared.withLock { state in
            state.ready.append(Completion(userData: userData, result: result, flags: more ? CompletionFlags.more : 0))
            if !more, let index = state.outstanding.firstIndex(of: userData) { state.outstanding.remove(at: index) }
        }
    }

    /// Delivers `bytes` to the multishot receive `userData` the way the kernel does: into the next
    /// provided buffer, with its id in the flags.
    func deliver(_ bytes: [UInt8], to userData: UInt64, more: Bool = true) {
        guard let ring = bufferRing else { preconditionFailure("no buffer ring registered") }
        shared.withLock { state in
            precondition(state.bufferHead != ring.tail, "the test drained every provided buffer")
            let entry = ring.entry(at: state.bufferHead)
            state.bufferHead &+= 1
            precondition(bytes.count <= entry.length)
            bytes.withUnsafeBytes { entry.address.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            let flags = CompletionFlags.buffer | (more ? CompletionFlags.more : 0) | (UInt32(entry.id) << 16)
            state.ready.append(Completion(userData: userData, result: Int32(bytes.count), flags: flags))
            if !more, let index = state.outstanding.firstIndex(of: userData) { state.outstanding.remove(at: index) }
        }
    }

    /// Makes every later submit fail with `errno`, as a ring that broke beyond recovery.
    func failSubmissions(errno: Int32) {
        shared.withLock { $0.fatalError = errno }
    }

    /// Buffers the application has made available to the "kernel" and it has not used.
    var availableBuffers: Int {
        guard let ring = bufferRing else { return 0 }
        return shared.withLock { Int(ring.tail &- $0.bufferHead) }
    }

    /// Marks every available buffer used, as if other connections had taken them (for ENOBUFS).
    func exhaustBuffers() {
        guard let ring = bufferRing else { return }
        shared.withLock { $0.bufferHead = ring.tail }
    }

    /// Waits until a submission matching `predicate` appears after the first `skipping` ones.
    func waitForSubmission(
        skipping: Int = 0, timeout: Double = 5, _ predicate: (Recorded) -> Bool
    ) async throws -> Recorded {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if let found = submissions.dropFirst(skipping).first(where: predicate) { return found }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw ScriptError.noSuchSubmission(submissions.map(\.description))
    }

    enum ScriptError: Error { case noSuchSubmission([String]) }
}
