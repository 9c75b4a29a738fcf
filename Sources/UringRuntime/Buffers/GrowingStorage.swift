/// Heap storage filled from the front, handing out `Bytes` views of what it holds so far; a reader
/// gathers many tiny chunks into one of these instead of keeping a record per chunk.
///
/// Appending writes only past every view handed out, and views never read past their own end, so
/// the memory a `Bytes` refers to is still never written while it does.
///
/// Copies share the storage, so only one copy may append: its owner keeps it under a lock.
package struct GrowingStorage: @unchecked Sendable {
    // Sendable: the storage is written only by `append`, which its single owner calls under that
    // owner's lock; `Bytes` views read bytes below `used` only, which no append writes again.
    private let storage: ByteStorage
    /// How many bytes fit.
    package let capacity: Int
    /// How many bytes it holds.
    package private(set) var used = 0

    package init(capacity: Int) {
        self.capacity = capacity
        storage = ByteStorage.make(count: capacity) { _ in }
    }

    /// Copies `bytes` after what it holds; false (copying nothing) when they do not fit.
    package mutating func append(_ bytes: Bytes) -> Bool {
        guard bytes.count <= capacity - used else { return false }
        guard bytes.count > 0 else { return true }
        bytes.withUnsafeBytes { source in
            UnsafeMutableRawPointer(mutating: storage.baseAddress + used).copyMemory(
                from: source.baseAddress!, byteCount: source.count)
        }
        used += bytes.count
        return true
    }

    /// The bytes it holds from `start` on.
    package func bytes(from start: Int) -> Bytes {
        Bytes(owner: storage, base: storage.baseAddress + start, count: used - start)
    }
}
