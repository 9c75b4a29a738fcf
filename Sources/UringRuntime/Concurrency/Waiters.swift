/// Continuations waiting for one condition, each with an id so a cancelled waiter can be taken
/// out alone. Lives inside its owner's lock.
///
/// The first waiter is stored inline: the common case, one task reading or draining a
/// connection, waits and wakes without allocating.
@_spi(UringInternals) public struct Waiters<Failure: Error> {
    public typealias Waiter = (id: Int, continuation: UnsafeContinuation<Void, Failure>)

    /// Nil only when `more` is empty too.
    @usableFromInline var first: Waiter?
    @usableFromInline var more: [Waiter] = []
    @usableFromInline var nextID = 0

    @inlinable public init() {}

    @inlinable public var isEmpty: Bool { first == nil }

    /// An id for a waiter about to be added, so a cancel handler can name it before it exists.
    @inlinable public mutating func reserveID() -> Int {
        nextID += 1
        return nextID
    }

    /// Adds `continuation` under `id` (from ``reserveID()``).
    @inlinable public mutating func add(_ continuation: UnsafeContinuation<Void, Failure>, id: Int) {
        if first == nil {
            first = (id, continuation)
        } else {
            more.append((id, continuation))
        }
    }

    /// Removes and returns the waiter `id`, if it is still waiting.
    @inlinable public mutating func remove(_ id: Int) -> UnsafeContinuation<Void, Failure>? {
        if let waiting = first, waiting.id == id {
            first = more.isEmpty ? nil : more.removeFirst()
            return waiting.continuation
        }
        guard let index = more.firstIndex(where: { $0.id == id }) else { return nil }
        return more.remove(at: index).continuation
    }

    /// Removes every waiter, to be resumed outside the lock.
    @inlinable public mutating func takeAll() -> Taken {
        defer {
            first = nil
            more = []
        }
        return Taken(first: first?.continuation, more: more)
    }

    /// Waiters taken out of the list; resume them once the lock is released.
    @frozen public struct Taken {
        @usableFromInline let first: UnsafeContinuation<Void, Failure>?
        @usableFromInline let more: [Waiter]

        @inlinable init(first: UnsafeContinuation<Void, Failure>?, more: [Waiter]) {
            self.first = first
            self.more = more
        }

        /// Nothing taken.
        @inlinable public static var none: Taken { Taken(first: nil, more: []) }

        @inlinable public var isEmpty: Bool { first == nil }

        @inlinable public func resume() {
            first?.resume()
            for waiter in more { waiter.continuation.resume() }
        }

        @inlinable public func resume(throwing error: Failure) {
            first?.resume(throwing: error)
            for waiter in more { waiter.continuation.resume(throwing: error) }
        }
    }
}

// Public types get no implicit Sendable; continuations are Sendable, so these are too.
extension Waiters: Sendable {}
extension Waiters.Taken: Sendable {}
