/// Continuations waiting for one condition, each with an id so a cancelled waiter can be taken
/// out alone. Lives inside its owner's lock.
///
/// The first waiter is stored inline: the common case, one task reading or draining a
/// connection, waits and wakes without allocating.
package struct Waiters<Failure: Error> {
    package typealias Waiter = (id: Int, continuation: UnsafeContinuation<Void, Failure>)

    /// Nil only when `more` is empty too.
    private var first: Waiter?
    private var more: [Waiter] = []
    private var nextID = 0

    package init() {}

    package var isEmpty: Bool { first == nil }

    /// An id for a waiter about to be added, so a cancel handler can name it before it exists.
    package mutating func reserveID() -> Int {
        nextID += 1
        return nextID
    }

    /// Adds `continuation` under `id` (from ``reserveID()``).
    package mutating func add(_ continuation: UnsafeContinuation<Void, Failure>, id: Int) {
        if first == nil {
            first = (id, continuation)
        } else {
            more.append((id, continuation))
        }
    }

    /// Removes and returns the waiter `id`, if it is still waiting.
    package mutating func remove(_ id: Int) -> UnsafeContinuation<Void, Failure>? {
        if let waiting = first, waiting.id == id {
            first = more.isEmpty ? nil : more.removeFirst()
            return waiting.continuation
        }
        guard let index = more.firstIndex(where: { $0.id == id }) else { return nil }
        return more.remove(at: index).continuation
    }

    /// Removes every waiter, to be resumed outside the lock.
    package mutating func takeAll() -> Taken {
        defer {
            first = nil
            more = []
        }
        return Taken(first: first?.continuation, more: more)
    }

    /// Waiters taken out of the list; resume them once the lock is released.
    package struct Taken {
        fileprivate let first: UnsafeContinuation<Void, Failure>?
        fileprivate let more: [Waiter]

        /// Nothing taken.
        package static var none: Taken { Taken(first: nil, more: []) }

        package var isEmpty: Bool { first == nil }

        package func resume() {
            first?.resume()
            for waiter in more { waiter.continuation.resume() }
        }

        package func resume(throwing error: Failure) {
            first?.resume(throwing: error)
            for waiter in more { waiter.continuation.resume(throwing: error) }
        }
    }
}
