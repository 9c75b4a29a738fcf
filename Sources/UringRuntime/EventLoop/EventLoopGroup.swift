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

    /// Starts `loopCount` loops, each on a new thread.
    ///
    /// - Parameter loopCount: How many loops (threads) to start; at least 1.
    /// - Throws: ``StreamError/ioUringUnavailable(_:)`` naming the cause and the fix when io_uring
    ///   cannot be used; ``StreamError/invalidArgument(_:)`` for `loopCount < 1`.
    public convenience init(loopCount: Int) throws {
        try self.init(loopCount: loopCount, configuration: EventLoop.Configuration(), makeRing: EventLoop.defaultRing)
    }

    init(loopCount: Int, configuration: EventLoop.Configuration, makeRing: @escaping EventLoop.RingFactory) throws(StreamError) {
        guard loopCount >= 1 else { throw StreamError.invalidArgument("loopCount must be at least 1, not \(loopCount)") }
        var threads: [LoopThread] = []
        for _ in 0..<loopCount {
            threads.append(try LoopThread(configuration: configuration, makeRing: makeRing))
        }
        self.threads = threads
    }

    /// The group shared by every caller that is not on a loop: one loop per core, started on first
    /// use and never shut down.
    ///
    /// Reading it when io_uring is unavailable stops the program with the reason; call
    /// ``sharedOrError()`` to get the error instead.
    public static var shared: EventLoopGroup {
        switch sharedGroup {
        case .success(let group): return group
        case .failure(let error): fatalError("UringStreams: \(error)")
        }
    }

    /// The shared group, or why it could not start.
    public static func sharedOrError() throws(StreamError) -> EventLoopGroup {
        try sharedGroup.get()
    }

    private static let sharedGroup: Result<EventLoopGroup, StreamError> = {
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        do throws(StreamError) {
            return .success(try EventLoopGroup(loopCount: cores, configuration: .init(), makeRing: EventLoop.defaultRing))
        } catch {
            return .failure(error)
        }
    }()

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
