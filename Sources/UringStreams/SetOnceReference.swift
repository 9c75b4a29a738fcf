import Synchronization

/// A reference set at most once and read often, as `AtomicLazyReference` but inlined: that type's
/// `load()` is a generic call into the Synchronization library that looks up type metadata each
/// time, which a writer paid on every `write` (measured with `perf`, issue 10).
struct SetOnceReference<Object: AnyObject & Sendable>: ~Copyable, Sendable {
    /// The object's address, retained by this slot; 0 while unset.
    private let bits = Atomic<UInt>(0)

    init() {}

    deinit {
        let stored = bits.load(ordering: .relaxed)
        if stored != 0 { Unmanaged<Object>.fromOpaque(UnsafeRawPointer(bitPattern: stored)!).release() }
    }

    /// The object, once set.
    @inline(__always) func load() -> Object? {
        let stored = bits.load(ordering: .acquiring)
        guard stored != 0 else { return nil }
        return Unmanaged<Object>.fromOpaque(UnsafeRawPointer(bitPattern: stored)!).takeUnretainedValue()
    }

    /// Sets `object` unless an object is set already; returns the one that is set.
    func storeIfNil(_ object: Object) -> Object {
        let retained = Unmanaged.passRetained(object)
        let new = UInt(bitPattern: retained.toOpaque())
        let (exchanged, current) = bits.compareExchange(
            expected: 0, desired: new, successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
        if exchanged { return object }
        retained.release()
        return Unmanaged<Object>.fromOpaque(UnsafeRawPointer(bitPattern: current)!).takeUnretainedValue()
    }
}
