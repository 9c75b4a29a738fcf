import Glibc
import Logging
import Synchronization
import UringRing

/// A set of event loops, one thread and one ring each; usually one per core.
///
/// Corresponds to running one asyncio loop per core (asyncio has no group of its own).
public final class EventLoopGroup: Sendable {
    private let threads: [LoopThread]
    private let nextIndex = Atomic<Int>(0)

    /// The loops of the group.
    public var loops: [EventLoop] { threads.map { $0.loop! } }

    /// Starts `loopCount` loops (at least one), each on a new thread.
    ///
    /// When io_uring cannot be used here (no kernel support, the `io_uring_disabled` sysctl, a
    /// seccomp filter), the loops use epoll instead and say so once, at notice, on `logger`; see
    /// ``EventLoop/Backend``. Only with the backend forced to ``EventLoop/Backend/ioUring`` do the
    /// loops run tasks without I/O, every stream operation throwing
    /// ``StreamError/ioUringUnavailable(_:)`` naming the cause and the fix (``unavailableReason``
    /// tells it up front).
    ///
    /// - Parameters:
    ///   - loopCount: How many loops (threads) to start; values below 1 start one.
    ///   - logger: Where the loops, and servers on them given no logger of their own, log what
    ///     happens in the background (see ``EventLoop/logger``); disabled by default, as
    ///     AsyncHTTPClient's `backgroundActivityLogger`.
    public convenience init(loopCount: Int, logger: Logger = EventLoop.disabledLogger) {
        let configuration = EventLoop.Configuration()
        self.init(
            loopCount: loopCount, configuration: configuration, makeRing: EventLoop.defaultRing(configuration),
            logger: logger)
    }

    /// Starts `loopCount` loops with `configuration` (receive buffers, zero-copy sends; see
    /// ``EventLoop/Configuration``), each on a new thread.
    ///
    /// - Parameters:
    ///   - loopCount: How many loops (threads) to start; values below 1 start one.
    ///   - configuration: The loops' settings; `EventLoop.Configuration()` gives the defaults with
    ///     any environment overrides.
    ///   - logger: Where the loops, and servers on them given no logger of their own, log; disabled
    ///     by default.
    public convenience init(
        loopCount: Int, configuration: EventLoop.Configuration, logger: Logger = EventLoop.disabledLogger
    ) {
        self.init(
            loopCount: loopCount, configuration: configuration, makeRing: EventLoop.defaultRing(configuration),
            logger: logger)
    }

    /// Starts loops whose rings (and wake-up descriptors) come from the given factories, so tests
    /// can script the ring or make set-up fail.
    init(
        loopCount: Int, configuration: EventLoop.Configuration, makeRing: @escaping EventLoop.RingFactory,
        makeWakeDescriptor: @escaping @Sendable () -> Int32 = SystemSupport.makeEventFD,
        logger: Logger = EventLoop.disabledLogger
    ) {
        // Once per group, not per loop: every loop reads the same environment.
        configuration.logRejectedEnvironment(to: logger)
        self.logger = logger
        threads = (0..<max(1, loopCount)).map { _ in
            LoopThread(
                configuration: configuration, makeRing: makeRing, makeWakeDescriptor: makeWakeDescriptor,
                logger: logger)
        }
        EventLoop.logFallback(of: threads.map { $0.loop! }, to: logger)
    }

    /// Where the group's loops log (each adds its `loop` metadata); see ``EventLoop/logger``.
    public let logger: Logger

    /// Why the loops cannot do I/O, or nil when at least one of them can.
    public var unavailableReason: StreamError? {
        let reasons = loops.map(\.unavailable)
        return reasons.contains { $0 == nil } ? nil : reasons.first ?? nil
    }

    /// The group shared by every caller that is not on a loop: ``defaultLoopCount`` loops, started
    /// on first use and never shut down.
    public static let shared = EventLoopGroup(loopCount: defaultLoopCount)

    /// How many loops a group that should use every core gets: the CPUs this process may run on.
    ///
    /// The fewer of the CPUs in the process's affinity mask (`sched_getaffinity`, as `taskset` or
    /// a container's cpuset sets it) and its cgroup's CPU quota (cgroup v2 `cpu.max`, or v1
    /// `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of 1.5 CPUs counts as 2), and at least
    /// 1. Not the machine's online CPU count: a container allowed two CPUs of a 64-core host gets
    /// two loops, not 64 threads sharing two CPUs' worth of time. Read each time it is asked.
    ///
    /// Corresponds to Python's `os.process_cpu_count()` (3.13), narrowed by the cgroup quota.
    public static var defaultLoopCount: Int { CPUAllowance.current() }

    /// The next loop, round robin.
    public func next() -> EventLoop {
        let index = nextIndex.add(1, ordering: .relaxed).oldValue
        return threads[index % threads.count].loop!
    }

    /// The next loop, round robin, that can do I/O now; the next loop at all when none can (its
    /// ``EventLoop`` then says why, and may make its ring again).
    package func nextAvailable() -> EventLoop {
        let start = nextIndex.add(1, ordering: .relaxed).oldValue
        for offset in 0..<threads.count {
            let loop = threads[(start + offset) % threads.count].loop!
            if loop.unavailable == nil { return loop }
        }
        return threads[start % threads.count].loop!
    }

    /// Sums the statistics of every loop.
    public var statistics: EventLoop.Statistics {
        loops.reduce(EventLoop.Statistics()) { $0 + $1.statistics }
    }

    /// Stops every loop and waits until their threads have finished.
    ///
    /// Work already queued on a loop runs first; then, as when `asyncio.run` ends, every connection
    /// and listener of the loop is aborted and every operation still waiting ends (cancelled), so
    /// the tasks waiting on them resume. May be awaited from any task, also one running on this
    /// group: such a task, and any later work handed to a stopped loop, goes on running on Swift's
    /// global executor, and I/O on a stopped loop throws.
    ///
    /// Corresponds to closing asyncio's loops (`loop.close()` after `asyncio.run`'s clean-up).
    public func shutdown() async throws {
        for thread in threads { await thread.stop() }
    }
}
