/// Continuations waiting for one condition, each with an id so a cancelled waiter can be taken
/// out alone. Lives inside its owner's lock.
package struct Waiters<Failure: Error> {
    private var waiting: [(id: Int, continuation: UnsafeContinuation<Void, Failure>)] = []
    private var nextID = 0

    package init() {}

    package var isEmpty: Bool { waiting.isEmpty }

    /// An id for a waiter about to be added, so a cancel handler can name it before it exists.
    package mutating func reserveID() -> Int {
        nextID += 1
        return nextID
    }

    /// Adds `continuation` under `id` (from ``reserveID()``).
    package mutating func add(_ continuation: UnsafeContinuation<Void, Failure>, id: Int) {
        waiting.append((id, continuation))
    }

    /// Removes and returns the waiter `id`, if it is still waiting.
    package mutating func remove(_ id: Int) -> UnsafeContinuation<Void, Failure>? {
        guard let index = waiting.firstIndex(where: { $0.id == id }) else { return nil }
        return waiting.remove(at: index).continuation
    }

    /// Removes and returns every waiter.
    package mutating func takeAll() -> [UnsafeContinuation<Void, Failure>] {
        defer { waiting.removeAll() }
        return waiting.map(\.continuation)
    }
}
