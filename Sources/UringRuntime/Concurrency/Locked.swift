import Glibc

/// A value behind a pthread mutex.
///
/// Used instead of `Synchronization.Mutex` because ThreadSanitizer intercepts pthread mutexes:
/// `Mutex` locks inside the uninstrumented standard library on Linux, so TSan cannot see its
/// ordering and reports races between properly locked accesses, hiding real ones among them.
/// (SwiftNIO's `NIOLock` is built the same way.) Uncontended, both cost one atomic exchange.
/// The value lives behind a pointer, not in a stored `var`: handing a class's stored property to
/// a closure `inout` costs a dynamic exclusivity check on every lock, which the lock makes moot.
///
/// Public behind an SPI, not `package`: Swift 6.3 does not inline an `@inlinable package` function
/// into another module, so every lock of UringStreams and UringTLS was an unspecialized generic
/// call that looked up type metadata (measured with `perf`, issue 10). The same holds for
/// ``Waiters``.
@_spi(UringInternals) public final class Locked<Value> {
    // Inlinable across modules: every layer locks on its hot path, and an unspecialized generic
    // call per lock would cost more than the lock.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline let value: UnsafeMutablePointer<Value>

    public init(_ value: Value) {
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: value)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let result = pthread_mutex_init(mutex, nil)
        precondition(result == 0, "pthread_mutex_init failed: \(result)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    @inlinable @inline(__always)
    public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }
}

// Sendable: every access to `value` happens inside `withLock`.
extension Locked: @unchecked Sendable where Value: Sendable {}
