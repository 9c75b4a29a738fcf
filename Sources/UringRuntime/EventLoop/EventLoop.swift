import Glibc
import Synchronization
import UringRing

/// One thread, one io_uring: runs tasks and resumes them from completions without thread hops.
///
/// `EventLoop` is a `SerialExecutor` and a `TaskExecutor`. A task that prefers it
/// (`Task(executorPreference: loop)`, `withTaskExecutorPreference(loop)`) runs on the loop's thread,
/// and an operation that task awaits is resumed from its completion on that same thread.
///
/// Jobs enqueued on the loop thread go to a plain queue. Jobs from other threads go to a locked
/// inbox, which wakes the loop (a completed eventfd read) only when the loop sleeps.
///
/// Corresponds to asyncio's event loop; `EventLoop.run` is `asyncio.run`.
public final class EventLoop: @unchecked Sendable {
    // Sendable: all mutable state below the inbox is touched only on the loop's own thread (the
    // thread that created the ring, which SINGLE_ISSUER also enforces); other threads reach the loop
    // only through `inbox` and `publishedStatistics`, both locked.

    struct Inbox {
        var work: [LoopWork] = []
        var sleeping = false
    }

    private let inbox = Locked(Inbox())
    private let publishedStatistics = Locked(Statistics())
    private let stopRequested = Atomic<Bool>(false)
    // Copies can happen on any thread (a foreign task writing an array, a reader joining chunks).
    private let copiedOnSend = Atomic<Int>(0)
    private let copiedOnReceive = Atomic<Int>(0)

    // Loop-thread state.
    private(set) var ring: (any RingBackend)!
    private(set) var bufferPool: ProvidedBufferPool!
    /// Why this loop has no ring; it then still runs jobs, but every I/O entry point throws this.
    let unavailable: StreamError?
    private var local = WorkQueue()
    private var drained: [LoopWork] = []
    private var completions: UnsafeMutableBufferPointer<Completion>
    private let wakeFD: Int32
    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private var endOfTurn: [any EndOfTurnWork] = []
    private var endOfTurnRunning: [any EndOfTurnWork] = []
    /// Targets the ring still holds (submitted, last completion not yet in).
    private var operationsInFlight = 0
    /// Connections and listeners, aborted when the loop shuts down. Strong (no weak side tables
    /// on every transport): each one unregisters when its descriptor is closed.
    private var resources: [ObjectIdentifier: any LoopResource] = [:]
    /// Set on the loop thread once shutdown began: nothing new is submitted.
    private(set) var isStopping = false
    private var buffersWanted: [any EndOfTurnWork] = []
    private let messageScratch = MessageScratch()
    private var scratchWanted: [any EndOfTurnWork] = []
    var counters = Statistics()
    let configuration: Configuration
    /// Whether receives ask for bundles (configured and supported by the kernel).
    private(set) var useReceiveBundles = false
    /// Sends of at least this many bytes go zero-copy; nil when off or unsupported. A kernel that
    /// refuses zero-copy sends turns it off for the loop.
    var zeroCopySendThreshold: Int?
    /// The total limit each multishot receive is armed with (0: none); 0 as well once the kernel
    /// refused one (before Linux 6.17).
    var multishotReceiveLimit: UInt32 = 0
    /// A stable, unique number for log and error text.
    public let id: Int

    typealias RingFactory = @Sendable () throws(RingError) -> any RingBackend

    /// Creates the loop's state on the calling thread, which becomes the loop's thread. With
    /// `ringRequired` false, a ring that cannot be made leaves the loop running jobs without one.
    init(id: Int, configuration: Configuration, makeRing: RingFactory, ringRequired: Bool = true) throws(StreamError) {
        self.id = id
        let configuration = configuration.validated
        self.configuration = configuration
        completions = .allocate(capacity: 128)
        wakeFD = SystemSupport.makeEventFD()
        guard wakeFD >= 0 else {
            completions.deallocate()
            throw StreamError.system(errno: errno, operation: "eventfd")
        }
        do {
            ring = try makeRing()
            bufferPool = try ProvidedBufferPool(
                ring: ring, group: 0, bufferCount: configuration.receiveBufferCount,
                bufferSize: configuration.receiveBufferSize, incremental: configuration.incrementalReceiveBuffers)
            useReceiveBundles = configuration.receiveBundles && ring.features.receiveBundles
            zeroCopySendThreshold = ring.features.zeroCopySend ? configuration.zeroCopySendThreshold : nil
            multishotReceiveLimit = UInt32(configuration.multishotReceiveLimit)
            unavailable = nil
        } catch {
            ring = nil
            guard !ringRequired else {
                close(wakeFD)
                completions.deallocate()
                throw StreamError(error)
            }
            unavailable = StreamError(error)
        }
        endOfTurn.reserveCapacity(64)
        endOfTurnRunning.reserveCapacity(64)
        drained.reserveCapacity(64)
    }

    deinit {
        completions.deallocate()
        wakeBuffer.deallocate()
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

    /// What this loop has done since it started (see ``Statistics``).
    public var statistics: Statistics {
        if inEventLoop { publishStatistics() }
        return publishedStatistics.withLock { $0 }
    }

    /// Throws why this loop cannot do I/O, if it cannot.
    package func requireRing() throws(StreamError) {
        if let unavailable { throw unavailable }
    }

    private func publishStatistics() {
        var snapshot = counters
        let ringCounters = ring?.counters ?? RingCounters()
        snapshot.submissions = ringCounters.submissions
        snapshot.enterCalls = ringCounters.enterCalls
        snapshot.completions = ringCounters.completions
        snapshot.bytesCopiedOnSend = copiedOnSend.load(ordering: .relaxed)
        snapshot.bytesCopiedOnReceive = copiedOnReceive.load(ordering: .relaxed)
        publishedStatistics.withLock { $0 = snapshot }
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

    /// Runs `work` on the loop thread, after the work already handed over; from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        enqueue(.closure(work))
    }

    func enqueue(_ work: LoopWork) {
        if inEventLoop {
            local.append(work)
            return
        }
        let wake = inbox.withLock { inbox -> Bool in
            inbox.work.append(work)
            guard inbox.sleeping else { return false }
            inbox.sleeping = false
            return true
        }
        if wake { wakeUp() }
    }

    private func wakeUp() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Asks the loop to leave its run loop after the work it has; from any thread.
    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        let wake = inbox.withLock { inbox -> Bool in
            let wasSleeping = inbox.sleeping
            inbox.sleeping = false
            return wasSleeping
        }
        if wake { wakeUp() }
    }

    /// Runs `work` at the end of the current loop turn, once per registration (flushes coalesce).
    func runAtEndOfTurn(_ work: any EndOfTurnWork) {
        endOfTurn.append(work)
    }

    /// Calls `work` back once receive buffers are free again.
    func waitForReceiveBuffers(_ work: any EndOfTurnWork) {
        buffersWanted.append(work)
    }

    // MARK: Submitting

    /// Queues `submission`; its completions go to `target` with `tag`. Returns the user data, which
    /// names the operation for a later cancel. The loop keeps `target` alive until the last one.
    @discardableResult
    func submit(_ submission: Submission, target: CompletionTarget, tag: UInt64) -> UInt64 {
        operationsInFlight += 1
        let address = UInt64(UInt(bitPattern: Unmanaged.passRetained(target).toOpaque()))
        let userData = address | tag
        ring.prepare(submission, userData: userData)
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

    /// Queues `submission` whose completion nobody needs (a cancel request, a final close).
    func submitIgnoringResult(_ submission: Submission) {
        ring.prepare(submission, userData: ReservedUserData.ignored)
    }

    // MARK: Running

    /// Runs turns until `isDone` is true after a turn, or the loop is asked to stop.
    func runLoop(until isDone: () -> Bool) throws(StreamError) {
        if ring != nil { armWake() }
        while !isDone() && !stopRequested.load(ordering: .acquiring) {
            if ring != nil { try turn() } else { turnWithoutRing() }
        }
        try finishOutstandingWork()
    }

    /// What asyncio.run does with leftover tasks: every connection and listener of the loop is
    /// aborted and every operation in flight cancelled, so the tasks waiting on them resume (with
    /// EOF, an error or CancellationError) and can finish; the loop turns until nothing is left in
    /// the ring. Nothing submitted after this point reaches the kernel.
    private func finishOutstandingWork() throws(StreamError) {
        runQueuedWork()
        guard ring != nil else { return }
        isStopping = true
        for resource in Array(resources.values) { resource.abortForShutdown() }
        resources.removeAll()
        submitIgnoringResult(.cancelEverything)
        // Bounded: an operation the kernel does not cancel must not keep the thread forever.
        var turns = 0
        while operationsInFlight > 0 || !local.isEmpty || !endOfTurn.isEmpty, turns < 10_000 {
            try turn()
            turns += 1
        }
        runQueuedWork()
    }

    /// Registers a connection or listener to abort when the loop shuts down; on the loop thread.
    func register(_ resource: some LoopResource) {
        resources[ObjectIdentifier(resource)] = resource
    }

    /// Forgets a closed resource; on the loop thread.
    func unregister(_ resource: some LoopResource) {
        resources[ObjectIdentifier(resource)] = nil
    }

    private func armWake() {
        ring.prepare(
            .read(fd: wakeFD, buffer: UnsafeMutableRawPointer(wakeBuffer), length: 8), userData: ReservedUserData.wake)
    }

    private func turn() throws(StreamError) {
        runQueuedWork()
        takeInbox()
        runEndOfTurnWork()

        var sleep = local.isEmpty && endOfTurn.isEmpty
        if sleep {
            if bufferPool.hasOutstanding, bufferPool.recycle() > 0 { resumeBufferWaiters() }
            sleep = local.isEmpty && endOfTurn.isEmpty
        }
        if sleep {
            publishStatistics()
            sleep = inbox.withLock { inbox -> Bool in
                guard inbox.work.isEmpty else { return false }
                inbox.sleeping = true
                return true
            }
        } else if bufferPool.available < bufferPool.bufferCount / 4 || !buffersWanted.isEmpty {
            if bufferPool.recycle() > 0 { resumeBufferWaiters() }
        }
        do {
            // Once stopping, everything in flight was cancelled, so waiting for it cannot hang; with
            // nothing in flight there is nothing to wait for (the wake-up read is not re-armed).
            let block = sleep && (isStopping ? operationsInFlight > 0 : !stopRequested.load(ordering: .relaxed))
            try ring.submit(waitingFor: block ? 1 : 0)
        } catch {
            throw StreamError(error)
        }
        releaseMessageScratch()
        if sleep { inbox.withLock { $0.sleeping = false } }
        reapCompletions()
    }

    /// A turn of a loop that has no ring: run work, then block on the eventfd until woken.
    private func turnWithoutRing() {
        runQueuedWork()
        takeInbox()
        guard local.isEmpty else { return }
        let sleep = inbox.withLock { inbox -> Bool in
            guard inbox.work.isEmpty else { return false }
            inbox.sleeping = true
            return true
        }
        if sleep && !stopRequested.load(ordering: .acquiring) {
            var value: UInt64 = 0
            _ = Glibc.read(wakeFD, &value, 8)
        }
        inbox.withLock { $0.sleeping = false }
    }

    private func runQueuedWork() {
        // Bounded so a task that keeps re-enqueueing itself cannot starve I/O.
        var budget = 4096
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

    private func takeInbox() {
        inbox.withLock { inbox in
            guard !inbox.work.isEmpty else { return }
            swap(&inbox.work, &drained)
        }
        guard !drained.isEmpty else { return }
        for work in drained { local.append(work) }
        drained.removeAll(keepingCapacity: true)
        runQueuedWork()
    }

    private func runEndOfTurnWork() {
        // Two arrays taking turns: copying one and emptying it while the copy is alive would
        // allocate a fresh buffer on every turn (it was the one malloc per echoed message).
        while !endOfTurn.isEmpty {
            swap(&endOfTurn, &endOfTurnRunning)
            for work in endOfTurnRunning { work.endOfTurn() }
            endOfTurnRunning.removeAll(keepingCapacity: true)
        }
    }

    /// Room for one send's header and iovecs until the next submit, or nil when the scratch is full
    /// (then `work` runs once it has room again).
    func takeMessageScratch(orWait work: any EndOfTurnWork) -> (
        message: UnsafeMutablePointer<msghdr>, iovecs: UnsafeMutablePointer<iovec>
    )? {
        if messageScratch.hasRoom { return messageScratch.take() }
        // Hand what is queued to the kernel, which copies the headers, and start over.
        try? ring.submit(waitingFor: 0)
        releaseMessageScratch()
        if messageScratch.hasRoom { return messageScratch.take() }
        scratchWanted.append(work)
        return nil
    }

    func returnUnusedMessageScratch(iovecs: Int) {
        messageScratch.returnUnused(iovecs)
    }

    private func releaseMessageScratch() {
        guard ring.pendingSubmissions == 0 else { return }
        messageScratch.reset()
        guard !scratchWanted.isEmpty else { return }
        for work in scratchWanted { runAtEndOfTurn(work) }
        scratchWanted.removeAll(keepingCapacity: true)
    }

    private func resumeBufferWaiters() {
        guard !buffersWanted.isEmpty else { return }
        let waiting = buffersWanted
        buffersWanted.removeAll(keepingCapacity: true)
        for work in waiting { work.endOfTurn() }
    }

    private func reapCompletions() {
        while true {
            let count = ring.reap(into: completions)
            if count == 0 { return }
            for i in 0..<count { dispatch(completions[i]) }
            if count < completions.count { return }
        }
    }

    @inline(__always)
    private func dispatch(_ completion: Completion) {
        switch completion.userData {
        case ReservedUserData.ignored:
            return
        case ReservedUserData.wake:
            if !isStopping { armWake() }
        default:
            let tag = completion.userData & ReservedUserData.tagMask
            let address = UInt(completion.userData & ~ReservedUserData.tagMask)
            let target = Unmanaged<CompletionTarget>.fromOpaque(UnsafeRawPointer(bitPattern: address)!)
            if completion.hasMore {
                target.takeUnretainedValue().complete(completion, tag: tag)
            } else {
                let object = target.takeRetainedValue()
                if object.awaitedAtShutdown { operationsInFlight -= 1 }
                object.complete(completion, tag: tag)
            }
        }
    }

    /// Tears down the ring; on the loop thread, after the last turn.
    func shutDownRing() {
        if let ring { bufferPool.close(ring: ring) }
        bufferPool = nil
        ring = nil
        close(wakeFD)
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
}
