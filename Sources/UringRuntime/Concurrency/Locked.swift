import Glibc

/// A value behind a pthread mutex.
///
/// Used instead of `Synchronization.Mutex` because ThreadSanitizer intercepts pthread mutexes:
/// `Mutex` locks inside the uninstrumented standard library on Linux, so TSan cannot see its
/// ordering and reports races between properly locked accesses, hiding real ones among them.
/// (SwiftNIO's `NIOLock` is built the same way.) Uncontended, both cost one atomic exchange.
/// The value is reached through `ManagedBuffer`'s pointers, not a stored `var`: handing a class's
/// stored property to a closure `inout` costs a dynamic exclusivity check on every lock, which the
/// lock makes moot.
///
/// Public behind an SPI, not `package`: Swift 6.3 does not inline an `@inlinable package` function
/// into another module, so every lock of UringStreams and UringTLS was an unspecialized generic
/// call that looked up type metadata (measured with `perf`, issue 10). The same holds for
/// ``Waiters``.
@_spi(UringInternals) public struct Locked<Value> {
    // Inlinable across modules: every layer locks on its hot path, and an unspecialized generic
    // call per lock would cost more than the lock.
    @usableFromInline let storage: LockedStorage<Value>

    public init(_ value: Value) {
        storage = LockedStorage.make(value)
    }

    /// Runs `body` with exclusive access to the value.
    @inlinable @inline(__always)
    public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try storage.withUnsafeMutablePointers { (value, mutex) throws(Failure) -> Result in
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return try body(&value.pointee)
        }
    }
}

/// The value and its mutex in one allocation (the value as the header, the mutex as the one
/// element): a lock per connection state costs one heap object instead of three, and the value
/// sits next to the lock that guards it. SwiftNIO's `LockStorage` is built the same way.
@_spi(UringInternals) public final class LockedStorage<Value>: ManagedBuffer<Value, pthread_mutex_t> {
    static func make(_ value: Value) -> LockedStorage {
        let buffer = create(minimumCapacity: 1) { _ in value }
        // `create` returns the subclass it was called on.
        let storage = unsafeDowncast(buffer, to: LockedStorage.self)
        storage.withUnsafeMutablePointerToElements { mutex in
            mutex.initialize(to: pthread_mutex_t())
            let result = pthread_mutex_init(mutex, nil)
            precondition(result == 0, "pthread_mutex_init failed: \(result)")
        }
        return storage
    }

    deinit {
        // ManagedBuffer destroys the header (the value); the element is ours.
        withUnsafeMutablePointerToElements { mutex in
            pthread_mutex_destroy(mutex)
            mutex.deinitialize(count: 1)
        }
    }
}

// Sendable: every access to `value` happens inside `withLock`.
extension Locked: @unchecked Sendable where Value: Sendable {}
