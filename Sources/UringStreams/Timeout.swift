/// Runs `operation` and cancels it when `duration` passes first, then throws
/// ``StreamError/timedOut``.
///
/// ```swift
/// let line = try await withTimeout(.seconds(5)) { try await reader.readLine() }
/// ```
///
/// The operation runs as a child task. When the caller runs on an ``EventLoop`` (a task with the
/// loop as its executor preference, as in `EventLoop.run` or a server's `clientConnected`), the
/// child runs on that loop too, and the deadline is the loop's own timer (``EventLoop/sleep(for:)``:
/// one timeout operation on the loop, no other thread involved). Off the loops, the deadline is
/// `Task.sleep` on the continuous clock: the caller is on the cooperative pool already, and taking
/// a loop of the shared group for the timer would only add a hop to that loop and back (and start
/// the shared group's threads for a task that may never do I/O).
///
/// A stream operation that is cancelled consumes nothing: a `readLine()` that times out leaves the
/// bytes it had buffered for the next read, and a cancelled `drain()` leaves the write buffer as
/// it was. When the operation finishes anyway after the deadline (it ignored the cancellation, or
/// its result was already on its way), its result is returned rather than dropped, as asyncio's
/// `timeout` does when the body completes without raising.
///
/// - Parameters:
///   - duration: How long the operation may run; zero or less cancels it at the first suspension.
///   - operation: The work to bound.
/// - Returns: What `operation` returned.
/// - Throws: ``StreamError/timedOut`` when the deadline cancelled the operation;
///   `CancellationError` when the calling task itself was cancelled; otherwise what `operation`
///   threw.
///
/// Corresponds to asyncio `async with asyncio.timeout(delay): ...` and
/// `await asyncio.wait_for(aw, timeout)`.
public func withTimeout<T: Sendable>(
    _ duration: Duration, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let loop = EventLoop.current
    return try await withThrowingTaskGroup(of: TimeoutRace<T>.self) { group in
        if let loop {
            // Explicit, so the race stays on the loop even when the caller is on it through an
            // actor's executor rather than a task executor preference (which children inherit).
            group.addTask(executorPreference: loop) { .finished(try await operation()) }
            group.addTask(executorPreference: loop) {
                try await loop.sleep(for: duration)
                return .expired
            }
        } else {
            group.addTask { .finished(try await operation()) }
            group.addTask {
                try await Task.sleep(for: max(duration, .zero))
                return .expired
            }
        }
        // The first child to finish decides. A throw from either (the operation's error, or the
        // caller's cancellation reaching the timer) leaves the group, which cancels and awaits the
        // other child.
        switch try await group.next()! {
        case .finished(let value):
            // The group awaits the cancelled timer on the way out.
            group.cancelAll()
            return value
        case .expired:
            group.cancelAll()
            do {
                guard case .finished(let value) = try await group.next()! else {
                    preconditionFailure("withTimeout: the timer finished twice")
                }
                return value
            } catch is CancellationError {
                // The caller's own cancellation is not a timeout.
                if Task.isCancelled { throw CancellationError() }
                throw StreamError.timedOut
            }
        }
    }
}

/// What a child of ``withTimeout(_:operation:)``'s group ended with.
enum TimeoutRace<T: Sendable>: Sendable {
    case finished(T)
    case expired
}
