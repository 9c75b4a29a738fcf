import Synchronization

struct TestDeadlineExceeded: Error {}

/// Runs `body`, failing with `TestDeadlineExceeded` and cancelling it once `seconds` pass. The
/// body must honour cancellation (everything these tests await does); a hang then ends the test
/// instead of the suite's time limit.
func withTestDeadline<T: Sendable>(
    _ seconds: Int = 15, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TestDeadlineExceeded() }
        return value
    }
}
