/// Continuations waiting for one condition, each with an id so a cancelled waiter can be taken
/// out alone. Lives inside its owner's lock.
struct Waiters<Failure: Error> {
    private var waiting: [(id: Int, continuation: UnsafeContinuation<Void, Failure>)] = []
    private var nextID = 0

    var isEmpty: Bool { waiting.isEmpty }

    /// Adds `continuation`; returns the id to cancel it with.
    mutating func add(_ continuation: UnsafeContinuation<Void, Failure>) -> Int {
        nextID += 1
        waiting.append((nextID, continuation))
        return nextID
    }

    /// Removes and returns the waiter `id`, if it is still waiting.
    mutating func remove(_ id: Int) -> UnsafeContinuation<Void, Failure>? {
        guard let index = waiting.firstIndex(where: { $0.id == id }) else { return nil }
        return waiting.remove(at: index).continuation
    }

    /// Removes and returns every waiter.
    mutating func takeAll() -> [UnsafeContinuation<Void, Failure>] {
        defer { waiting.removeAll() }
        return waiting.map(\.continuation)
    }
}
