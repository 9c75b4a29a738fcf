import Glibc
import Logging
import Synchronization
import UringRing

/// One thread, one io_uring: runs tasks and resumes them from completions without thread hops.
///
/// `EventLoop` is a `SerialExecutor` and a `TaskExecutor`. A task that prefers it
/// (`Task(executorPreference: loop)`, `withTaskExecutorPreference(loop)`) runs on the loop's thread,
/// and an operation that task awaits is resumed from its completion on that same thread.
///
/// Jobs enqueued on the loop thread go to a plain queue. Jobs from other threads go to a locked
/// inbox, which wakes the loop only when the loop sleeps.
///
/// Once the loop has stopped, work handed to it still runs: a task's jobs on Swift's global
/// executor, a closure on the calling thread, one at a time, as if on the loop; its I/O fails.
///
/// Corresponds to asyncio's event loop; `EventLoop.run` is `asyncio.run`.
public final class EventLoop: @unchecked Sendable {
    // Sendable: all mutable state below `publishedStatistics` is touched only on the loop's own
    // thread (the thread that created the ring, which SINGLE_ISSUER also enforces), or after the
    // loop stopped by one caller at a time under `afterStop`; other threads reach the loop only
    // through `inbox`, `availability`, `afterStop` and `publishedStatistics`, all locked.

    struct Inbox {
        var work: [LoopWork] = []
        var sleeping = false
        /// Set once the loop will never take work from the inbox again.
        var stopped = false
    }

    /// Closures handed to the loop after it stopped, run by whichever caller finds none running.
    struct AfterStop {
        var queue: [@Sendable () -> Void] = []
        var running = false
    }

    private let inbox = Locked(Inbox())
    private let afterStop = Locked(AfterStop())
    let availability: Locked<Availability>
    private let publishedStatistics = Locked(Statistics())
    /// Why the loop fell back to epoll (see ``backendFallbackReason``).
    let fallbackReason = Locked<String?>(nil)
    private let stopRequested = Atomic<Bool>(false)
    // Copies can happen on any thread (a foreign task writing an array, a reader joining chunks).
    private let copiedOnSend = Atomic<Int>(0)
    private let copiedOnReceive = Atomic<Int>(0)

    // Loop-thread state.
    // `@exclusivity(unchecked)`: loop-thread state touched per message (docs/architecture.md,
    // "Exclusivity checks").
    @exclusivity(unchecked) var ring: (any RingBackend)! {
        didSet { ioURing = (ring as? IOURing).map { Unmanaged.passUnretained($0) } }
    }
    /// `ring` when it is io_uring, for `submit` to call without a retain, a release and a witness
    /// table per operation (loading the existential costs all three); `ring` keeps it alive and
    /// the two change together.
    @exclusivity(unchecked) private var ioURing: Unmanaged<IOURing>?
    @exclusivity(unchecked) var bufferPool: ProvidedBufferPool!
    @exclusivity(unchecked) var local = WorkQueue()
    @exclusivity(unchecked) private var drained: [LoopWork] = []
    let completions: UnsafeMutableBufferPointer<Completion>
    /// The eventfd another thread writes to wake a loop sleeping in the ring; -1 without a ring.
    var wakeFD: Int32 = -1
    let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// The receive-buffer release timer's interval as a kernel timespec; nil when buffers stay
    /// resident.
    let bufferReleaseTimespec: UnsafeMutablePointer<Int64>?
    /// Whether the receive-buffer release timer is in the ring.
    @exclusivity(unchecked) var bufferReleaseArmed = false
    /// What a loop without a ring sleeps on.
    let wakeSemaphore = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    @exclusivity(unchecked) var endOfTurn: [(any EndOfTurnWork)?] = []
    @exclusivity(unchecked) private var endOfTurnRunning: [(any EndOfTurnWork)?] = []
    /// Targets the ring still holds (submitted, last completion not yet in).
    @exclusivity(unchecked) var operationsInFlight = 0
    /// Connections and listeners, aborted when the loop shuts down. Strong (no weak side tables
    /// on every transport): each one unregisters when its descriptor is closed.
    @exclusivity(unchecked) var resources: [ObjectIdentifier: any LoopResource] = [:]
    /// One-shot operations a task awaits, resumed by hand if the ring fails under them.
    @exclusivity(unchecked) var pendingOperations: [ObjectIdentifier: PendingOperation] = [:]
    /// Set on the loop thread once shutdown began: nothing new is submitted.
    private(set) var isStopping = false
    /// Set once the loop left its run loop for good (written before `inbox.stopped`).
    private var hasStopped = false
    @exclusivity(unchecked) var buffersWanted = BufferWaiters()
    @exclusivity(unchecked) private var buffersWantedScratch: [any EndOfTurnWork] = []
    private let messageScratch = MessageScratch()
    @exclusivity(unchecked) private var scratchWanted: [any EndOfTurnWork] = []
    @exclusivity(unchecked) var counters = Statistics()
    let configuration: Configuration
    let makeRing: RingFactory
    let makeWakeDescriptor: @Sendable () -> Int32
    /// Whether receives ask for bundles (configured and supported by the kernel).
    var useReceiveBundles = false
    /// Sends of at least this many bytes go zero-copy; nil when off or unsupported. A kernel that
    /// refuses zero-copy sends turns it off for the loop.
    var zeroCopySendThreshold: Int?
    /// The total limit each multishot receive is armed with (0: none); 0 as well once the kernel
    /// refused one (before Linux 6.17).
    var multishotReceiveLimit: UInt32 = 0
    /// A stable, unique number for log and error text.
    public let id: Int
    /// Where the loop reports what happens in the background (set-up, fallbacks, a dying ring),
    /// with a `loop` metadata value naming it; servers on the loop log there unless given their
    /// own logger. Disabled unless the group (or ``run(logger:_:)``) was given one. Never used per
    /// message.
    ///
    /// Corresponds to the `asyncio` logger the loop writes to.
    public let logger: Logger

    typealias RingFactory = @Sendable () throws(RingError) -> any RingBackend

    /// Creates the loop's state on the calling thread, which becomes the loop's thread. With
    /// `ringRequired` false, a ring (or eventfd) that cannot be made leaves the loop running jobs
    /// without one; a transient cause (descriptors, memory) is tried again when I/O next asks.
    init(
        id: Int, configuration: Configuration, makeRing: @escaping RingFactory,
        makeWakeDescriptor: @escaping @Sendable () -> Int32 = SystemSupport.makeEventFD, ringRequired: Bool = true,
        logger: Logger = EventLoop.disabledLogger
    ) throws(StreamError) {
        self.id = id
        var logger = logger
        logger[metadataKey: "loop"] = "\(id)"
        self.logger = logger
        self.configuration = configuration.validated
        self.makeRing = makeRing
        self.makeWakeDescriptor = makeWakeDescriptor
        completions = .allocate(capacity: 128)
        bufferReleaseTimespec = self.configuration.receiveBufferRelease.map(Self.makeTimespec)
        sem_init(wakeSemaphore, 0, 0)
        availability = Locked(.ready)
        endOfTurn.reserveCapacity(64)
        endOfTurnRunning.reserveCapacity(64)
        drained.reserveCapacity(64)
        // Every property is set by now, so the deinit runs after this throw and frees the memory.
        if let failure = setUpRing(), ringRequired { throw failure }
    }

    /// A logger that drops everything: the default wherever a logger can be given, as
    /// AsyncHTTPClient's `backgroundActivityLogger` is.
    public static let disabledLogger = Logger(label: "UringStreams", factory: { _ in SwiftLogNoOpLogHandler() })

    deinit {
        completions.deallocate()
        wakeBuffer.deallocate()
        bufferReleaseTimespec?.deallocate()
        sem_destroy(wakeSemaphore)
        wakeSemaphore.deallocate()
    }

    /// The loop running on the calling thread, or nil off-loop.
    public static var current: EventLoop? {
        guard let raw = CurrentLoopSlot.value else { return nil }
        return Unmanaged<EventLoop>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Whether the calling thread is this loop's thread.
    @inline(__always)
    public var inEventLoop: Bool {
        CurrentLoopSlot.value == Unmanaged.passUnretained(self).toOpaque()
    }

    /// Traps in debug builds unless called on the loop's thread (SwiftNIO's `assertInEventLoop`);
    /// a protocol's helpers can check that they run where its callbacks do.
    ///
    /// - Parameters:
    ///   - file: Where the check is, for the message.
    ///   - line: Where the check is, for the message.
    @inline(__always)
    public func assertInEventLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(inEventLoop, "must run on event loop \(id)", file: file, line: line)
    }

    /// What this loop has done since it started (see ``Statistics``).
    public var statistics: Statistics {
        if inEventLoop && !hasStopped { publishStatistics() }
        return publishedStatistics.withLock { $0 }
    }

    func publishStatistics() {
        var snapshot = counters
        let ringCounters = ring?.counters ?? RingCounters()
        snapshot.submissions = ringCounters.submissions
        snapshot.enterCalls = ringCounters.enterCalls
        snapshot.completions = ringCounters.completions
        snapshot.backend = ring?.kind.backend
        snapshot.bytesCopiedOnSend = copiedOnSend.load(ordering: .relaxed)
        snapshot.bytesCopiedOnReceive = copiedOnReceive.load(ordering: .relaxed)
        publishedStatistics.withLock { $0 = snapshot }
    }

    /// Counts a connection a server accepted onto this loop; on the loop thread.
    package func recordConnectionAccepted() {
        assertInEventLoop()
        counters.connectionsAccepted += 1
    }

    /// Counts the close of an accepted connection's socket; on the loop thread.
    package func recordConnectionClosed() {
        assertInEventLoop()
        counters.connectionsClosed += 1
    }

    /// Counts a failed server-side TLS handshake; on the loop thread.
    package func recordHandshakeFailure() {
        assertInEventLoop()
        counters.tlsHandshakeFailures += 1
    }

    /// Counts bytes the runtime copied for a send (from any thread).
    package func recordCopiedOnSend(_ count: Int) {
        copiedOnSend.add(count, ordering: .relaxed)
    }

    /// Counts bytes the runtime copied between receive buffers and a read's result (from any thread).
    package func recordCopiedOnReceive(_ count: Int) {
        copiedOnReceive.add(count, ordering: .relaxed)
    }

    // MARK: Handing work to the loop

    /// Runs `work` on the loop thread, after the work already handed over; from any thread. After
    /// the loop stopped, `work` runs on the calling thread instead, never at the same time as
    /// other work handed to this loop.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        enqueue(.closure(work))
    }

    func enqueue(_ work: LoopWork) {
        if inEventLoop && !hasStopped {
            local.append(work)
            return
        }
        // The eventfd is written under the lock: the loop closes it under the same lock once
        // stopped, so a wake-up never reaches a closed (or reused) descriptor.
        let stopped = inbox.withLock { inbox -> Bool in
            if inbox.stopped { return true }
            inbox.work.append(work)
            if inbox.sleeping {
                inbox.sleeping = false
                wakeUp()
            }
            return false
        }
        if stopped { runAfterStop(work) }
    }

    /// Sets the eventfd other threads wake the loop with; under the inbox lock, where they read it.
    func setWakeDescriptor(_ fd: Int32) {
        inbox.withLock { _ in wakeFD = fd }
    }

    /// Wakes the sleeping loop; under the inbox lock.
    private func wakeUp() {
        if wakeFD >= 0 {
            var one: UInt64 = 1
            _ = Glibc.write(wakeFD, &one, 8)
        } else {
            sem_post(wakeSemaphore)
        }
    }

    /// Work for a loop that stopped: a task's job goes to Swift's global executor (the task keeps
    /// running; its loop operations fail), a closure runs here, one at a time, as if on the loop.
    private func runAfterStop(_ work: LoopWork) {
        let closure: @Sendable () -> Void
        switch work {
        case .job(let job):
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
            return
        case .closure(let work):
            closure = work
        }
        let runHere = afterStop.withLock { state -> Bool in
            state.queue.append(closure)
            if state.running { return false }
            state.running = true
            return true
        }
        guard runHere else { return }
        let previous = CurrentLoopSlot.value
        CurrentLoopSlot.value = Unmanaged.passUnretained(self).toOpaque()
        while let next = afterStop.withLock({ state -> (@Sendable () -> Void)? in
            if state.queue.isEmpty {
                state.running = false
                return nil
            }
            return state.queue.removeFirst()
        }) {
            next()
        }
        CurrentLoopSlot.value = previous
    }

    /// Asks the loop to leave its run loop after the work it has; from any thread.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        inbox.withLock { inbox in
            guard inbox.sleeping else { return }
            inbox.sleeping = false
            wakeUp()
        }
    }

    var isStopRequested: Bool { stopRequested.load(ordering: .acquiring) }

    /// Runs `work` at the end of the current loop turn, once per registration (flushes coalesce).
    func runAtEndOfTurn(_ work: any EndOfTurnWork) {
        endOfTurn.append(work)
    }

    /// Calls `work` back once receive buffers are free again, after the receives that waited
    /// before it.
    func waitForReceiveBuffers(_ work: any EndOfTurnWork) {
        buffersWanted.append(work)
    }

    // MARK: Submitting

    /// Queues `submission`; its completions go to `target` with `tag`. Returns the user data, which
    /// names the operation for a later cancel. The loop keeps `target` alive until the last one.
    /// Without a ring (stopped, or the ring failed) the operation ends at once as cancelled.
    @discardableResult
    func submit(_ submission: Submission, target: CompletionTarget, tag: UInt64) -> UInt64 {
        operationsInFlight += 1
        let address = UInt64(UInt(bitPattern: Unmanaged.passRetained(target).toOpaque()))
        let userData = address | tag
        if let ioURing {
            ioURing._withUnsafeGuaranteedRef { $0.prepare(submission, userData: userData) }
        } else if let ring {
            ring.prepare(submission, userData: userData)
        } else {
            enqueue(.closure { self.dispatch(Completion(userData: userData, result: -ECANCELED)) })
        }
        return userData
    }

    /// Lets shutdown finish without `target`'s last completion, which may never come (a zero-copy
    /// send's notification to a peer that stopped reading). The loop still holds the target, and
    /// so its memory, for as long as the ring exists.
    func stopAwaitingAtShutdown(_ target: CompletionTarget) {
        guard target.awaitedAtShutdown else { return }
        target.awaitedAtShutdown = false
        operationsInFlight -= 1
    }

    /// Queues `submission` whose completion nobody needs (a cancel request, a final close); without
    /// a ring there is nothing to cancel.
    func submitIgnoringResult(_ submission: Submission) {
        ring?.prepare(submission, userData: ReservedUserData.ignored)
    }

    /// Registers a connection or listener to abort when the loop shuts down; on the loop thread.
    func register(_ resource: some LoopResource) {
        resources[ObjectIdentifier(resource)] = resource
    }

    /// Lets the ring reach connected socket `fd` through its file table; on the loop thread.
    func registerFile(_ fd: Int32) {
        ring?.registerFile(fd)
    }

    /// Takes `fd` out of the ring's file table; on the loop thread, before `fd` is closed.
    func unregisterFile(_ fd: Int32) {
        ring?.unregisterFile(fd)
    }

    /// Forgets a closed resource; on the loop thread.
    func unregister(_ resource: some LoopResource) {
        resources[ObjectIdentifier(resource)] = nil
    }

    // MARK: Running work

    func runQueuedWork() {
        // Only the work that was ready when this began (at most 4096 jobs): what it enqueues runs
        // after the turn has reaped completions. A fixed budget let a task that keeps yielding run
        // 4096 times between two reaps, holding every completion back as long.
        var budget = min(local.count, 4096)
        while budget > 0, let work = local.popFirst() {
            run(work)
            budget -= 1
        }
    }

    @inline(__always)
    private func run(_ work: LoopWork) {
        switch work {
        case .job(let job):
            // As a task-executor job, not isolated to the loop as a serial executor: the stream
            // code a job resumes is nonisolated, and on a serial executor its first step would be
            // swift_task_switch back to the task executor, enqueueing the job a second time (two
            // status-record locks and a second trip through the queue per resumed task). Actor
            // jobs on the loop stay exclusive: one thread runs one job at a time.
            job.runSynchronously(on: asUnownedTaskExecutor())
        case .closure(let closure):
            closure()
        }
    }

    /// Moves what other threads handed over into the local queue and runs it.
    func takeInbox() {
        inbox.withLock { inbox in
            guard !inbox.work.isEmpty else { return }
            swap(&inbox.work, &drained)
        }
        guard !drained.isEmpty else { return }
        for work in drained { local.append(work) }
        drained.removeAll(keepingCapacity: true)
        runQueuedWork()
    }

    /// Marks the loop asleep unless work arrived; returns whether it may sleep.
    func enterSleep() -> Bool {
        inbox.withLock { inbox -> Bool in
            guard inbox.work.isEmpty else { return false }
            inbox.sleeping = true
            return true
        }
    }

    func leaveSleep() {
        inbox.withLock { $0.sleeping = false }
    }

    func runEndOfTurnWork() {
        // Two arrays taking turns: copying one and emptying it while the copy is alive would
        // allocate a fresh buffer on every turn (it was the one malloc per echoed message).
        while !endOfTurn.isEmpty {
            swap(&endOfTurn, &endOfTurnRunning)
            // Taking each piece out, in order, hands the array's reference to the call: iterating
            // would retain and release every piece once more.
            for index in endOfTurnRunning.indices { endOfTurnRunning[index].take()?.endOfTurn() }
            endOfTurnRunning.removeAll(keepingCapacity: true)
        }
    }

    /// Starts shutting down: from now on nothing new is submitted.
    func beginStopping() {
        isStopping = true
    }

    /// Closes the inbox for good, once the loop will never turn again: what is still in it, and
    /// everything handed over later, runs as work for a stopped loop. Closes the eventfd under the
    /// inbox lock, so no wake-up can reach it afterwards.
    func closeInbox() {
        runQueuedWork()
        hasStopped = true
        availability.withLock { $0 = .stopped }
        let leftover = inbox.withLock { inbox -> [LoopWork] in
            inbox.stopped = true
            inbox.sleeping = false
            if wakeFD >= 0 {
                close(wakeFD)
                wakeFD = -1
            }
            defer { inbox.work = [] }
            return inbox.work
        }
        var remaining = leftover
        while let work = local.popFirst() { remaining.append(work) }
        for work in remaining { runAfterStop(work) }
    }

    // MARK: Message scratch

    /// Room for one send's header and iovecs until the next submit, or nil when the scratch is full
    /// (then `work` runs once it has room again).
    func takeMessageScratch(orWait work: any EndOfTurnWork) -> (
        message: UnsafeMutablePointer<msghdr>, iovecs: UnsafeMutablePointer<iovec>
    )? {
        if messageScratch.hasRoom { return messageScratch.take() }
        // Hand what is queued to the kernel, which copies the headers, and start over.
        try? ring?.submit(waitingFor: 0)
        releaseMessageScratch()
        if messageScratch.hasRoom { return messageScratch.take() }
        scratchWanted.append(work)
        return nil
    }

    func returnUnusedMessageScratch(iovecs: Int) {
        messageScratch.returnUnused(iovecs)
    }

    /// Starts the scratch over once the kernel consumed every queued entry (their headers were
    /// copied then); entries it left queued still point into it.
    func releaseMessageScratch() {
        guard (ring?.pendingSubmissions ?? 0) == 0 else { return }
        messageScratch.reset()
        guard !scratchWanted.isEmpty else { return }
        for work in scratchWanted { runAtEndOfTurn(work) }
        scratchWanted.removeAll(keepingCapacity: true)
    }

    /// Re-arms the receives that waited longest, one per free buffer: more would end in ENOBUFS
    /// again and lose their place.
    func resumeBufferWaiters() {
        guard !buffersWanted.isEmpty else { return }
        buffersWantedScratch.removeAll(keepingCapacity: true)
        buffersWanted.takeFront(max(1, bufferPool.available), into: &buffersWantedScratch)
        for work in buffersWantedScratch { work.endOfTurn() }
        buffersWantedScratch.removeAll(keepingCapacity: true)
    }

    // MARK: Completions

    func reapCompletions() {
        guard let ring else { return }
        while true {
            let count = ring.reap(into: completions)
            if count == 0 { return }
            for i in 0..<count { dispatch(completions[i]) }
            if count < completions.count { return }
        }
    }

    @inline(__always)
    func dispatch(_ completion: Completion) {
        switch completion.userData {
        case ReservedUserData.ignored:
            return
        case ReservedUserData.wake:
            if !isStopping { armWake() }
        case ReservedUserData.bufferRelease:
            bufferReleaseTimerEnded()
        default:
            let tag = completion.userData & ReservedUserData.tagMask
            let address = UInt(completion.userData & ~ReservedUserData.tagMask)
            let target = Unmanaged<CompletionTarget>.fromOpaque(UnsafeRawPointer(bitPattern: address)!)
            if completion.hasMore {
                // The reference submit() retained lives until the final completion, so the target
                // outlives this call without a retain and release of its own.
                target._withUnsafeGuaranteedRef { $0.complete(completion, tag: tag) }
            } else {
                let object = target.takeRetainedValue()
                if object.awaitedAtShutdown { operationsInFlight -= 1 }
                object.complete(completion, tag: tag)
            }
        }
    }

    func armWake() {
        ring?.prepare(
            .read(fd: wakeFD, buffer: UnsafeMutableRawPointer(wakeBuffer), length: 8), userData: ReservedUserData.wake)
    }
}

/// Work a loop runs at the end of a turn, e.g. a connection's gathered send of what was written.
protocol EndOfTurnWork: AnyObject {
    func endOfTurn()
}

/// Something that holds a socket on a loop and must let go of it when the loop shuts down.
protocol LoopResource: AnyObject {
    /// Closes at once, failing whatever waits on it; on the loop thread.
    func abortForShutdown()
    /// Closes at once after the ring failed: no completion of its operations will come, so it
    /// treats them as ended and fails whatever waits with `error`; on the loop thread.
    func abortAfterRingFailure(_ error: StreamError)
}
