import Glibc
import Synchronization

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
    /// seccomp filter), the loops still run tasks, and every stream operation on them throws
    /// ``StreamError/ioUringUnavailable(_:)`` naming the cause and the fix; ``unavailableReason``
    /// tells it up front.
    ///
    /// - Parameter loopCount: How many loops (threads) to start; values below 1 start one.
    public convenience init(loopCount: Int) {
        self.init(loopCount: loopCount, configuration: EventLoop.Configuration(), makeRing: EventLoop.defaultRing)
    }

    /// Starts `loopCount` loops with `configuration` (receive buffers, zero-copy sends; see
    /// ``EventLoop/Configuration``), each on a new thread.
    ///
    /// - Parameters:
    ///   - loopCount: How many loops (threads) to start; values below 1 start one.
    ///   - configuration: The loops' settings; `EventLoop.Configuration()` gives the defaults with
    ///     any environment overrides.
    public convenience init(loopCount: Int, configuration: EventLoop.Configuration) {
        self.init(loopCount: loopCount, configuration: configuration, makeRing: EventLoop.defaultRing)
    }

    init(loopCount: Int, configuration: EventLoop.Configuration, makeRing: @escaping EventLoop.RingFactory) {
        threads = (0..<max(1, loopCount)).map { _ in LoopThread(configuration: configuration, makeRing: makeRing) }
    }

    /// Why the loops cannot do I/O, or nil when io_uring works.
    public var unavailableReason: StreamError? { threads.first?.loop?.unavailable }

    /// The group shared by every caller that is not on a loop: one loop per core, started on first
    /// use and never shut down.
    public static let shared = EventLoopGroup(loopCount: max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// The next loop, round robin.
    public func next() -> EventLoop {
        let index = nextIndex.add(1, ordering: .relaxed).oldValue
        return threads[index % threads.count].loop!
    }

    /// Sums the statistics of every loop.
    public var statistics: EventLoop.Statistics {
        loops.reduce(EventLoop.Statistics()) { $0 + $1.statistics }
    }

    /// Stops every loop and waits until their threads have finished.
    ///
    /// Work already queued on a loop runs first; operations still waiting then are abandoned with
    /// the loop (asyncio cancels leftover tasks when `asyncio.run` ends).
    public func shutdown() async throws {
        for thread in threads { await thread.stop() }
    }
}
