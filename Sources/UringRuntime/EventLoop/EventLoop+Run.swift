import Glibc
import Logging
import Synchronization
import UringRing

extension EventLoop {
    /// Runs `body` on a new event loop on the calling thread, blocking it until `body` finishes, then
    /// shuts the loop down and returns `body`'s result.
    ///
    /// - Parameters:
    ///   - logger: Where the loop logs (see ``logger``); disabled by default.
    ///   - body: The main task; it and whatever it awaits run on the new loop.
    /// - Returns: What `body` returned.
    /// - Throws: What `body` threw; ``StreamError/ioUringUnavailable(_:)`` when io_uring cannot be
    ///   used here and `URINGSTREAMS_BACKEND=io_uring` forbids the epoll fallback; ``StreamError/invalidArgument(_:)`` when called from a running loop.
    ///
    /// Corresponds to asyncio `asyncio.run(main())`.
    public static func run<T: Sendable>(
        logger: Logger = EventLoop.disabledLogger, _ body: @escaping @Sendable () async throws -> T
    ) throws -> T {
        guard current == nil else {
            throw StreamError.invalidArgument("EventLoop.run cannot be called from a running event loop")
        }
        let configuration = Configuration()
        configuration.logRejectedEnvironment(to: logger)
        let loop = try EventLoop(
            id: nextLoopID(), configuration: configuration, makeRing: defaultRing(configuration), logger: logger)
        CurrentLoopSlot.value = Unmanaged.passUnretained(loop).toOpaque()
        defer { CurrentLoopSlot.value = nil }
        logFallback(of: [loop], to: logger)
        loop.logger.debug("event loop started", metadata: ["backend": "\(loop.backend?.rawValue ?? "none")"])
        defer { loop.logger.debug("event loop stopped") }
        let outcome = Locked<Result<T, any Error>?>(nil)
        Task(executorPreference: loop) {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            // Stop from inside the loop: a finished main task must not leave it asleep in the ring.
            loop.requestStop()
        }
        loop.runLoop { outcome.withLock { $0 != nil } }
        guard let result = outcome.withLock({ $0 }) else {
            // The ring failed before the main task finished; it goes on on the global executor.
            throw loop.unavailable ?? stoppedError(loop.id)
        }
        return try result.get()
    }

    /// Starts a group of `loopCount` loops, runs `body` on the first of them with the group, and
    /// blocks the calling thread until `body` finishes; then shuts the group down and returns
    /// `body`'s result. The one-line `main` of a server that uses every core:
    ///
    /// ```swift
    /// try EventLoop.run { group in
    ///     let server = try await startServer(host: nil, port: 8080, reusePort: true, on: group) { r, w in ... }
    ///     try await server.serveForever()
    /// }
    /// ```
    ///
    /// Call it from a plain thread (a synchronous `main`), never from a task: it blocks its thread.
    ///
    /// - Parameters:
    ///   - loopCount: How many loops (threads); default ``EventLoopGroup/defaultLoopCount``, the
    ///     CPUs this process may use (affinity and cgroup quota). Values below 1 start one.
    ///   - configuration: The loops' settings; default `Configuration()` (the defaults with any
    ///     environment overrides).
    ///   - body: The main task; it starts on the group's first loop and gets the group, to hand
    ///     to `startServer(..., on:)` and the like so work spreads over every loop.
    /// - Returns: What `body` returned.
    /// - Throws: What `body` threw; ``StreamError/ioUringUnavailable(_:)`` when no loop of the
    ///   group can do I/O here (io_uring blocked and the backend forced to it); ``StreamError/invalidArgument(_:)`` when called from a running loop.
    ///
    /// Corresponds to asyncio `asyncio.run(main())` with one loop per core (asyncio has no group).
    public static func run<T: Sendable>(
        loopCount: Int = EventLoopGroup.defaultLoopCount, configuration: Configuration = Configuration(),
        _ body: @escaping @Sendable (EventLoopGroup) async throws -> T
    ) throws -> T {
        guard current == nil else {
            throw StreamError.invalidArgument("EventLoop.run cannot be called from a running event loop")
        }
        let group = EventLoopGroup(loopCount: loopCount, configuration: configuration)
        if let reason = group.unavailableReason {
            // Nothing could do I/O: say so now rather than from the first stream call.
            let done = DoneSignal()
            Task {
                try? await group.shutdown()
                done.post()
            }
            done.wait()
            throw reason
        }
        let outcome = Locked<Result<T, any Error>?>(nil)
        let done = DoneSignal()
        Task(executorPreference: group.loops[0]) {
            let result: Result<T, any Error>
            do { result = .success(try await body(group)) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            // The group's threads must be gone before `run` returns, as asyncio.run closes its loop.
            try? await group.shutdown()
            done.post()
        }
        done.wait()
        return try outcome.withLock { $0 }!.get()
    }

    /// A factory of the backend `configuration` asks for, io_uring sized as it says.
    static func defaultRing(_ configuration: Configuration) -> RingFactory {
        let entries = configuration.validated.ringEntries
        return backendFactory(configuration.backend) { () throws(RingError) -> any RingBackend in
            let ring = try IOURing(entries: entries)
            try ring.checkBufferRings()
            return ring
        }
    }

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
    private let makeWakeDescriptor: @Sendable () -> Int32
    private let logger: Logger

    init(
        configuration: EventLoop.Configuration, makeRing: @escaping EventLoop.RingFactory,
        makeWakeDescriptor: @escaping @Sendable () -> Int32, logger: Logger
    ) {
        self.configuration = configuration
        self.logger = logger
        self.makeRing = makeRing
        self.makeWakeDescriptor = makeWakeDescriptor
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
        // Never throws without a required ring: a ring or eventfd that cannot be made leaves a loop
        // that runs tasks and tries again when I/O asks.
        let loop = try! EventLoop(
            id: EventLoop.nextLoopID(), configuration: configuration, makeRing: makeRing,
            makeWakeDescriptor: makeWakeDescriptor, ringRequired: false, logger: logger)
        SystemSupport.setThreadName("uring-loop-\(loop.id)")
        CurrentLoopSlot.value = Unmanaged.passUnretained(loop).toOpaque()
        self.loop = loop
        sem_post(&started)
        loop.logger.debug(
            "event loop started",
            metadata: ["backend": "\(loop.unavailable.map { "none: \($0)" } ?? loop.backend?.rawValue ?? "none")"])
        loop.runLoop { false }
        loop.logger.debug("event loop stopped")
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

/// A one-shot signal a plain thread waits on while a task finishes.
private final class DoneSignal: @unchecked Sendable {
    // Sendable: a sem_t is made for use across threads; it is only initialized and destroyed
    // here, with no waiter or poster alive.
    private var semaphore = sem_t()
    init() { sem_init(&semaphore, 0, 0) }
    deinit { sem_destroy(&semaphore) }
    func post() { sem_post(&semaphore) }
    func wait() { while sem_wait(&semaphore) != 0 {} }
}
