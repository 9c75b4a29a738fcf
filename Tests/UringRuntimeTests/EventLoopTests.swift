import Glibc
import Synchronization
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// The executor and timers on a real ring.
@Suite(.timeLimit(.minutes(1)))
struct EventLoopTests {
    @Test func resumedTasksStayOnTheirLoopThread() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 2)
            let loop = group.next()
            let sameThread = try await withTaskExecutorPreference(loop) { () async throws -> Bool in
                let before = pthread_self()
                #expect(EventLoop.current === loop)
                try await loop.sleep(for: .milliseconds(2))
                let afterSleep = pthread_self()
                await Task.yield()
                return pthread_equal(before, afterSleep) != 0 && pthread_equal(before, pthread_self()) != 0
                    && EventLoop.current === loop
            }
            #expect(sameThread)
            #expect(EventLoop.current == nil, "off-loop callers see no loop")
            try await group.shutdown()
        }
    }

    @Test func childTasksKeepTheLoopPreference() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let onLoop = await withTaskExecutorPreference(loop) {
                await withTaskGroup(of: Bool.self) { tasks in
                    for _ in 0..<4 { tasks.addTask { loop.inEventLoop } }
                    return await tasks.reduce(true) { $0 && $1 }
                }
            }
            #expect(onLoop)
            try await group.shutdown()
        }
    }

    /// An actor may use a loop as its serial executor: its methods run on the loop thread, one at a
    /// time, and the runtime accepts the loop as the actor's isolation.
    @Test func actorsUsingTheLoopAsTheirExecutorStayIsolated() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let counter = LoopCounter(loop: group.next())
            let allOnLoop = await withTaskGroup(of: Bool.self) { tasks in
                for _ in 0..<200 { tasks.addTask { await counter.bump() } }
                return await tasks.reduce(true) { $0 && $1 }
            }
            #expect(allOnLoop)
            #expect(await counter.count == 200)
            try await group.shutdown()
        }
    }

    @Test func workFromOtherThreadsRunsOnTheLoopInOrder() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let seen = Locked<[Int]>([])
            let allOnLoop = Atomic<Bool>(true)
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                for i in 0..<1000 {
                    loop.execute {
                        if !loop.inEventLoop { allOnLoop.store(false, ordering: .relaxed) }
                        seen.withLock { $0.append(i) }
                        if i == 999 { done.resume() }
                    }
                }
            }
            #expect(seen.withLock { $0 } == Array(0..<1000))
            let everyRunWasOnTheLoop = allOnLoop.load(ordering: .relaxed)
            #expect(everyRunWasOnTheLoop)
            try await group.shutdown()
        }
    }

    @Test func sleepWaitsAtLeastItsDuration() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let start = ContinuousClock.now
            try await loop.sleep(for: .milliseconds(50))
            #expect(ContinuousClock.now - start >= .milliseconds(50))
            try await group.shutdown()
        }
    }

    @Test func cancelledSleepThrowsPromptly() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let start = ContinuousClock.now
            let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(20))
            sleeper.cancel()
            await #expect(throws: CancellationError.self) { try await sleeper.value }
            #expect(ContinuousClock.now - start < .seconds(5))
            try await group.shutdown()
        }
    }

    /// A task that keeps yielding must not hold completions back: each turn runs the work that
    /// was ready when it began, then reaps. (A budget of 4096 jobs let a yielding task run 4096
    /// times between reaps, and a flood of ready work delay I/O by as many jobs.)
    @Test func aYieldingTaskDoesNotHoldBackCompletions() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let yields = Atomic<Int>(0)
            let sleeping = Atomic<Bool>(true)
            let yielder = Task(executorPreference: loop) {
                while sleeping.load(ordering: .relaxed) {
                    yields.add(1, ordering: .relaxed)
                    await Task.yield()
                }
            }
            let yieldsWhileAsleep = try await withTaskExecutorPreference(loop) { () async throws -> Int in
                let before = yields.load(ordering: .relaxed)
                try await loop.sleep(for: .milliseconds(1))
                sleeping.store(false, ordering: .relaxed)
                return yields.load(ordering: .relaxed) - before
            }
            await yielder.value
            // One yield a turn (about 230 in the 1 ms here; 4095 with the old budget): a turn would
            // have to take under half a microsecond for 2048 of them to fit in the sleep.
            #expect(yieldsWhileAsleep < 2048, "\(yieldsWhileAsleep) yields")
            try await group.shutdown()
        }
    }

    // EventLoop.run holds its thread until main returns: these run it through onThread.

    @Test func runReturnsTheResultAndRethrows() async throws {
        try await withDeadline {
            let value = try await onThread {
                try EventLoop.run { () async throws -> Int in
                    try await EventLoop.current!.sleep(for: .milliseconds(1))
                    return 42
                }
            }
            #expect(value == 42)
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await onThread { try EventLoop.run { () async throws -> Int in throw Boom() } }
            }
        }
    }

    @Test func runRefusesToNestInsideALoop() async throws {
        try await withDeadline {
            let nested = try await onThread {
                try EventLoop.run { () async -> Bool in
                    do {
                        _ = try EventLoop.run { 1 }
                        return false
                    } catch let error as StreamError {
                        return error == .invalidArgument("EventLoop.run cannot be called from a running event loop")
                    } catch {
                        return false
                    }
                }
            }
            #expect(nested)
        }
    }

    @Test func unavailableIoUringIsReportedWithCauseAndFix() async throws {
        let reason = "io_uring is disabled by the kernel.io_uring_disabled sysctl (value 2; EPERM)."
        let group = groupWithoutRing(reason)
        #expect(group.unavailableReason == .ioUringUnavailable(reason))
        await #expect(throws: StreamError.ioUringUnavailable(reason)) { try await group.next().ensureRing() }
        try await group.shutdown()
        let seccomp = RingError.setupFailure(errno: EPERM)
        #expect("\(seccomp)".contains("seccomp") || "\(seccomp)".contains("io_uring_disabled"))
        #expect("\(RingError.setupFailure(errno: ENOSYS))".contains("ENOSYS"))
    }

    @Test func loopWithoutIoUringStillRunsTasksButRefusesIO() async throws {
        try await withDeadline {
            let group = groupWithoutRing("off")
            let loop = group.next()
            let ran = await withTaskExecutorPreference(loop) { loop.inEventLoop }
            #expect(ran)
            await #expect(throws: StreamError.ioUringUnavailable("off")) {
                try await loop.sleep(for: .milliseconds(1))
            }
            try await group.shutdown()
        }
    }

    @Test func statisticsCountRingTraffic() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            // Read on the loop, which publishes first: from elsewhere a value may trail by a turn.
            let stats = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                try await loop.sleep(for: .milliseconds(1))
                return loop.statistics
            }
            #expect(stats.submissions >= 1 && stats.completions >= 1 && stats.enterCalls >= 1)
            // Off the loop the published value trails, but only by a turn: it arrives.
            #expect(try await eventually { group.statistics.submissions >= stats.submissions })
            try await group.shutdown()
        }
    }
}

/// An actor whose serial executor is an event loop.
actor LoopCounter {
    let loop: EventLoop
    private(set) var count = 0

    init(loop: EventLoop) { self.loop = loop }

    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// Counts one call; returns whether it ran on the loop thread (with an await in between, so
    /// calls interleave and a lost update would show in `count`).
    func bump() async -> Bool {
        preconditionIsolated()
        let before = count
        await Task.yield()
        count = max(count, before) + 1
        return loop.inEventLoop
    }
}
