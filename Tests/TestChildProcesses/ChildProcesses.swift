import Foundation
import Synchronization

/// Starts the processes the tests spawn, and counts the starts. Between its fork and its exec a
/// child holds a copy of every descriptor of the test process, close-on-exec ones included, so a
/// socket a parallel test closes meanwhile stays open, and its port bound, until the child has
/// exec'd (with a process spawning `/bin/true` in a loop beside it, 45 of 5,000 servers' ports
/// were still in use right after `waitClosed()`; none without it). A test that checks a port was
/// freed asks whether a start overlapped the check.
///
/// A module of its own, shared by the test targets: they run in one process, so a spawn in any of
/// them can hold a port another checks.
public enum ChildProcesses {
    private static let begun = Atomic<Int>(0)
    private static let finished = Atomic<Int>(0)

    /// `process.run()`, counted. It returns once the child has exec'd: Foundation spawns with
    /// `posix_spawn`, which waits for that.
    public static func run(_ process: Process) throws {
        begun.add(1, ordering: .sequentiallyConsistent)
        defer { finished.add(1, ordering: .sequentiallyConsistent) }
        try process.run()
    }

    /// The starts counted at one moment.
    public struct Mark: Sendable {
        fileprivate let begun: Int
        fileprivate let finished: Int
    }

    public static func mark() -> Mark {
        // `finished` first: a start that ends between the two loads still counts as in progress.
        let finished = finished.load(ordering: .sequentiallyConsistent)
        return Mark(begun: begun.load(ordering: .sequentiallyConsistent), finished: finished)
    }

    /// Whether a child was being started at `mark`, or one began since.
    public static func startedAround(_ mark: Mark) -> Bool {
        mark.begun > mark.finished || begun.load(ordering: .sequentiallyConsistent) > mark.begun
    }

    /// Waits until every start begun so far has exec'd its child.
    public static func waitForStarts() async throws {
        let target = begun.load(ordering: .sequentiallyConsistent)
        while finished.load(ordering: .sequentiallyConsistent) < target {
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}
