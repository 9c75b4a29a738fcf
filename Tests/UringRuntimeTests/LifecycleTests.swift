import Glibc
import Synchronization
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// The edges of a loop's life: shutdown from its own tasks, work handed to a stopped loop, rings
/// and eventfds that cannot be made (for a while or for good), a ring that fails under its
/// connections, partial submissions, and descriptors used only while owned.
@Suite(.timeLimit(.minutes(1)))
struct LifecycleTests {
    @Test func shutdownAwaitedFromATaskOnTheGroupReturns() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 2)
            let loop = group.next()
            let finished = try await Task(executorPreference: loop) { () async throws -> Bool in
                try await group.shutdown()
                return true
            }.value
            #expect(finished)
        }
    }

    @Test func workHandedToAStoppedLoopRunsAndItsIOFails() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            try await group.shutdown()
            // A task that prefers the stopped loop still runs (on the global executor)...
            let value = await Task(executorPreference: loop) { 42 }.value
            #expect(value == 42)
            // ...a closure runs, as if on the loop...
            let ran = Locked<Bool?>(nil)
            loop.execute { ran.withLock { $0 = loop.inEventLoop } }
            #expect(try await eventually { ran.withLock { $0 } != nil })
            #expect(ran.withLock { $0 } == true)
            // ...and I/O says why it cannot happen.
            await #expect(throws: EventLoop.stoppedError(loop.id)) { try await loop.sleep(for: .milliseconds(1)) }
        }
    }

    /// A transient failure to make the eventfd (EMFILE) neither crashes nor disables the loop for
    /// good: the next I/O a second later makes the eventfd and ring again.
    @Test func anEventfdThatCannotBeMadeIsTriedAgain() async throws {
        try await withDeadline {
            let attempts = Atomic<Int>(0)
            let group = EventLoopGroup(
                loopCount: 1, configuration: .init(), makeRing: EventLoop.defaultRing(.init()),
                makeWakeDescriptor: {
                    if attempts.add(1, ordering: .relaxed).oldValue == 0 {
                        errno = EMFILE
                        return -1
                    }
                    return SystemSupport.makeEventFD()
                })
            let loop = group.next()
            #expect(group.unavailableReason == .system(errno: EMFILE, operation: "eventfd"))
            await #expect(throws: StreamError.system(errno: EMFILE, operation: "eventfd")) {
                try await loop.sleep(for: .milliseconds(1))
            }
            try await Task.sleep(for: EventLoop.retryInterval + .milliseconds(100))
            try await loop.sleep(for: .milliseconds(1))
            #expect(group.unavailableReason == nil)
            // A task on the loop is woken through the new eventfd.
            let woke = await Task(executorPreference: loop) { loop.inEventLoop }.value
            #expect(woke)
            try await group.shutdown()
        }
    }

    @Test func aRingThatCannotBeMadeForWantOfMemoryIsTriedAgain() async throws {
        try await withDeadline {
            let attempts = Atomic<Int>(0)
            let real = EventLoop.defaultRing(.init())
            let group = EventLoopGroup(
                loopCount: 1, configuration: .init(),
                makeRing: { () throws(RingError) -> any RingBackend in
                    if attempts.add(1, ordering: .relaxed).oldValue == 0 {
                        throw RingError.setupFailure(errno: ENOMEM)
                    }
                    return try real()
                })
            let loop = group.next()
            #expect(group.unavailableReason != nil)
            try await Task.sleep(for: EventLoop.retryInterval + .milliseconds(100))
            try await loop.sleep(for: .milliseconds(1))
            #expect(group.unavailableReason == nil)
            try await group.shutdown()
        }
    }

    @Test func aPermanentlyMissingRingIsNotTriedAgain() async throws {
        try await withDeadline {
            let attempts = Atomic<Int>(0)
            let group = EventLoopGroup(
                loopCount: 1, configuration: .init(),
                makeRing: { () throws(RingError) -> any RingBackend in
                    attempts.add(1, ordering: .relaxed)
                    throw RingError.setupFailure(errno: ENOSYS)
                })
            try await Task.sleep(for: EventLoop.retryInterval + .milliseconds(100))
            await #expect(throws: StreamError.self) { try await group.next().sleep(for: .milliseconds(1)) }
            #expect(attempts.load(ordering: .relaxed) == 1)
            try await group.shutdown()
        }
    }

    /// A loop that needs its ring (`EventLoop.run`'s) and cannot make it throws the reason; the
    /// memory it had allocated is freed once, by its deinit (which runs after a throwing init).
    @Test func aLoopThatRequiresItsRingThrowsWhenItCannotBeMade() async throws {
        _ = try await onThread {
            #expect(throws: StreamError.self) {
                _ = try EventLoop(
                    id: 0, configuration: .init(),
                    makeRing: { () throws(RingError) -> any RingBackend in
                        throw RingError.setupFailure(errno: ENOSYS)
                    })
            }
        }
    }

    /// io_uring_enter failing for good: tasks waiting on operations resume with the error, every
    /// connection's descriptor is closed and its waiters fail, and the loop goes on running work
    /// without writing to its (closed) eventfd.
    @Test func aFatalRingErrorFailsWaitersAndClosesDescriptors() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let (mine, peer) = socketPair()
            defer { close(peer) }
            let delegate = RecordingDelegate()
            let transport = await startedTransport(on: loop, fileDescriptor: mine, owner: delegate)
            _ = try await ring.waitForSubmission { $0.description == "recv-multishot" }
            let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(60)) }
            _ = try await ring.waitForSubmission { $0.description == "timeout" }

            ring.failSubmissions(errno: EFAULT)
            loop.execute {}  // wakes the loop into its failing submit
            let expected = StreamError.system(errno: EFAULT, operation: "io_uring_enter")
            await #expect(throws: expected) { try await sleeper.value }
            try await delegate.waitFor { $0 == .lost("\(expected)") }
            // The peer sees the connection close.
            var byte: UInt8 = 0
            #expect(recv(peer, &byte, 1, 0) == 0)
            #expect(transport.isClosing)
            // Work still runs; a new descriptor that may reuse the eventfd's number gets nothing.
            let probe = SystemSupport.makeEventFD()
            defer { close(probe) }
            let ran = Locked(false)
            loop.execute { ran.withLock { $0 = true } }
            #expect(try await eventually { ran.withLock { $0 } })
            var pending: UInt64 = 0
            _ = fcntl(probe, F_SETFL, O_NONBLOCK)
            #expect(read(probe, &pending, 8) == -1)
            try await group.shutdown()
        }
    }

    /// A kernel that stops a submission part-way (an entry it refuses, without SUBMIT_ALL) leaves
    /// the rest queued; the ring must say so, or the loop reuses memory those entries point to.
    @Test func aPartialSubmissionLeavesTheRestPending() throws {
        let ring = try IOURing(entries: 8, preferredFlags: [0])
        ring.prepareRefusedEntryForTesting()
        let timespec = UnsafeMutablePointer<Int64>.allocate(capacity: 2)
        defer { timespec.deallocate() }
        timespec.initialize(repeating: 0, count: 2)
        ring.prepare(.timeout(timespec: UnsafeMutableRawPointer(timespec)), userData: 0)
        #expect(ring.pendingSubmissions == 2)
        try ring.submit(waitingFor: 0)
        #expect(ring.pendingSubmissions == 1)
        #expect(ring.counters.submissions == 1)
    }

    /// With a send in flight, abort empties the write buffer; the send's completion must not
    /// subtract its bytes a second time.
    @Test func abortWithASendInFlightLeavesTheWriteBufferAtZero() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let (mine, peer) = socketPair()
            defer { close(peer) }
            let transport = await startedTransport(on: loop, fileDescriptor: mine, owner: RecordingDelegate())
            transport.write(Bytes("0123456789"))
            let send = try await ring.waitForSubmission { $0.description == "send" }
            transport.abort()
            #expect(transport.writeBufferSize == 0)
            ring.complete(send.userData, result: 10)
            let settled = Locked<Int?>(nil)
            try await Task.sleep(for: .milliseconds(50))
            loop.execute { settled.withLock { $0 = transport.writeBufferSize } }
            #expect(try await eventually { settled.withLock { $0 } != nil })
            #expect(settled.withLock { $0 } == 0)
            try await group.shutdown()
        }
    }

    /// A kernel before 6.17 refuses a multishot receive with a total limit (EINVAL): the loop
    /// receives without one from then on, and the connection goes on.
    @Test func aKernelWithoutReceiveLimitsGetsUnlimitedReceives() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let (mine, peer) = socketPair()
            defer { close(peer) }
            let delegate = RecordingDelegate()
            await startedTransport(on: loop, fileDescriptor: mine, owner: delegate)
            let first = try await ring.waitForSubmission { $0.description == "recv-multishot" }
            // Counted before completing: the loop may re-arm before this thread looks.
            let count = ring.submissions.count
            ring.complete(first.userData, result: -EINVAL)
            let second = try await ring.waitForSubmission(skipping: count) { $0.description == "recv-multishot" }
            ring.deliver(Array("hello".utf8), to: second.userData)
            try await delegate.waitFor { $0 == .data(Array("hello".utf8)) }
            #expect(!delegate.events.withLock { $0.contains { if case .lost = $0 { true } else { false } } })
            let limit = await withTaskExecutorPreference(loop) { loop.multishotReceiveLimit }
            #expect(limit == 0)
            try await group.shutdown()
        }
    }

    /// An accept that keeps failing with an error about no connection in particular must not make
    /// the loop spin: after a few immediate retries it backs off.
    @Test func aPersistentAcceptErrorBacksOff() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let (listening, other) = socketPair()
            defer { close(other) }
            let listener = Listener(
                loop: loop, descriptor: ListeningDescriptor(listening), logger: loop.logger, onAccept: { close($0) },
                onClosed: {})
            loop.execute { listener.start() }
            var answered = 0
            let end = ContinuousClock.now + .milliseconds(300)
            while ContinuousClock.now < end {
                let accepts = ring.submissions.filter { $0.description == "accept" }
                if accepts.count > answered {
                    for accept in accepts[answered...] { ring.complete(accept.userData, result: -EPERM) }
                    answered = accepts.count
                }
                try await Task.sleep(for: .milliseconds(1))
            }
            #expect(answered <= 4, "the accept was armed \(answered) times in 300 ms")
            loop.execute { listener.close() }
            try await group.shutdown()
        }
    }
}
