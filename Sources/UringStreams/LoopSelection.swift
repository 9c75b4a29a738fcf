/// The loop a call runs on: the caller's own when it runs on one, else the next loop of the shared
/// group (the spec's rule for callers that are not on an `EventLoop`).
///
/// Of the shared group's loops, one that can do I/O is taken (a loop whose ring could not be
/// made is skipped).
///
/// - Throws: ``StreamError/ioUringUnavailable(_:)`` when that loop cannot do I/O.
func callerLoop() async throws -> EventLoop {
    let loop = EventLoop.current ?? EventLoopGroup.shared.nextAvailable()
    try await loop.ensureRing()
    return loop
}

/// Runs `body` on `loop`: directly when already there (the fast path), else with the loop as the
/// task's executor preference so that every await inside resumes on the loop thread.
func onLoop<T: Sendable>(_ loop: EventLoop, _ body: () async throws -> T) async throws -> T {
    if loop.inEventLoop { return try await body() }
    return try await withTaskExecutorPreference(loop) { try await body() }
}

func validate(limit: Int) throws {
    guard limit > 0 else { throw StreamError.invalidArgument("Limit cannot be <= 0") }
}
