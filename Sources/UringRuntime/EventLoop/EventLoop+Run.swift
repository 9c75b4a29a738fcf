import Glibc
import Synchronization
import UringRing

extension EventLoop {
    /// Runs `body` on a new event loop on the calling thread, blocking it until `body` finishes, then
    /// shuts the loop down and returns `body`'s result.
    ///
    /// - Parameter body: The main task; it and whatever it awaits run on the new loop.
    /// - Returns: What `body` returned.
    /// - Throws: What `body` threw; ``StreamError/ioUringUnavailable(_:)`` when io_uring cannot be
    ///   used here; ``StreamError/invalidArgument(_:)`` when called from a running loop.
    ///
    /// Corresponds to asyncio `asyncio.run(main())`.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        guard current == nil else {
            throw StreamError.invalidArgument("EventLoop.run cannot be called from a running event loop")
        }
        let loop = try EventLoop(id: nextLoopID(), configuration: Configuration(), makeRing: defaultRing)
        CurrentLoopSlot.value = Unmanaged.passUnretained(loop).toOpaque()
        defer { CurrentLoopSlot.value = nil }
        let outcome = Locked<Result<T, any Error>?>(nil)
        Task(executorPreference: loop) {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            // Stop from inside the loop: a finished main task must not leave it asleep in the ring.
            loop.requestStop()
        }
        try loop.runLoop { outcome.withLock { $0 != nil } }
        loop.shutDownRing()
        return try outcome.withLock { $0! }.get()
    }

    static let defaultRing: RingFactory = { () throws(RingError) -> any RingBackend in try IOURing() }

    private static let loopIDs = Atomic<Int>(0)
    static func nextLoopID() -> Int { loopIDs.add(1, ordering: .relaxed).newValue }
}

/// A loop running on a thread of its own, as `EventLoopGroup` starts them.
final class LoopThread: @unchecked Sendable {
    // Sendable: `loop` is written by the new thread before it posts `started` and read by the
    // creator only after waiting on it; `finished` is locked.
    private(set) var loop: EventLoop?
    private var started = sem_t()
    private var thread = pthread_t()
    private let finished = Locked<(done: Bool, waiters: [UnsafeContinuation<Void, Never>])>((false, []))
    private let configuration: EventLoop.Configuration
    private let makeRing: EventLoop.RingFactory

    init(configuration: EventLoop.Configuration, makeRing: @escaping EventLoop.RingFactory) {
        self.configuration = configuration
        self.makeRing = makeRing
        sem_init(&started, 0, 0)
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { raw in
                let this = Unmanaged<LoopThread>.fromOpaque(raw!).takeRetainedValue()
                this.main()
                return nil
            }, context)
        // Without a thread there is no loop at all; like failing to allocate, this is not recoverable.
        precondition(result == 0, "UringStreams: pthread_create failed: \(String(cString: strerror(result)))")
        pthread_detach(thread)
        while sem_wait(&started) != 0 {}
    }

    deinit {
        sem_destroy(&started)
    }

    private func main() {
        let loop: EventLoop
        do {
            loop = try EventLoop(
                id: EventLoop.nextLoopID(), configuration: configuration, makeRing: makeRing, ringRequired: false)
        } catch {
            // Only the eventfd can fail here (ringRequired is false): out of descriptors.
            preconditionFailure("UringStreams: cannot start an event loop: \(error)")
        }
        SystemSupport.setThreadName("uring-loop-\(loop.id)")
        CurrentLoopSlot.value = Unmanaged.passUnretained(loop).toOpaque()
        self.loop = loop
        sem_post(&started)
        do {
            try loop.runLoop { false }
        } catch {
            // The ring failed beyond recovery; nothing can run on this loop any more.
            let text = Array("UringStreams: event loop \(loop.id) stopped: \(error)\n".utf8)
            _ = Glibc.write(2, text, text.count)
        }
        loop.shutDownRing()
        CurrentLoopSlot.value = nil
        let waiters = finished.withLock { state in
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Stops the loop and waits until its thread has left it.
    func stop() async {
        loop?.requestStop()
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let done = finished.withLock { state -> Bool in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
