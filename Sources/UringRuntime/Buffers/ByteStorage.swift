/// Heap storage for bytes the runtime had to copy (fed by hand, or joined across receive buffers).
/// One allocation: the bytes live in the object's tail.
final class ByteStorage: ManagedBuffer<Int, UInt8> {
    /// Storage holding a copy of `count` bytes produced by `initialize`.
    static func make(count: Int, _ initialize: (UnsafeMutableRawBufferPointer) -> Void) -> ByteStorage {
        let storage = ByteStorage.create(minimumCapacity: Swift.max(count, 1)) { _ in count } as! ByteStorage
        storage.withUnsafeMutablePointerToElements {
            initialize(UnsafeMutableRawBufferPointer(start: $0, count: count))
        }
        return storage
    }

    /// The first byte. Stable for the object's lifetime: tail storage never moves.
    var baseAddress: UnsafeRawPointer {
        withUnsafeMutablePointerToElements { UnsafeRawPointer($0) }
    }
}
