internal import CURing

/// The shared memory of one provided-buffer ring: the application adds buffers at the tail, the
/// kernel takes them from the head when a receive selects a buffer.
public struct ProvidedBufferRingMemory: @unchecked Sendable {
    // Sendable because the pointer is only ever dereferenced on the owning loop's thread; the
    // value itself is just an address passed between setup and teardown.
    public let base: UnsafeMutableRawPointer
    public let entries: Int
    public let group: UInt16
    /// Registered with `IOU_PBUF_RING_INC`: the kernel consumes a buffer piece by piece, so one large
    /// buffer serves many small receives, and flags a completion `IORING_CQE_F_BUF_MORE` while the
    /// buffer it used stays in the ring.
    public let incremental: Bool

    public init(base: UnsafeMutableRawPointer, entries: Int, group: UInt16, incremental: Bool = false) {
        self.base = base
        self.entries = entries
        self.group = group
        self.incremental = incremental
    }

    private var ring: UnsafeMutablePointer<io_uring_buf_ring> {
        base.assumingMemoryBound(to: io_uring_buf_ring.self)
    }

    /// Stages `buffer` under `id` at the `offset`-th free slot after the tail; call ``advance(by:)``
    /// to publish a batch to the kernel.
    public func addBuffer(_ buffer: UnsafeMutableRawPointer, length: Int, id: UInt16, offset: Int) {
        io_uring_buf_ring_add(
            ring, buffer, UInt32(length), id, Int32(io_uring_buf_ring_mask(UInt32(entries))), Int32(offset))
    }

    /// Publishes `count` staged buffers to the kernel (release store of the tail).
    public func advance(by count: Int) {
        io_uring_buf_ring_advance(ring, Int32(count))
    }

    /// The tail index as the application last published it (tests emulating the kernel read it).
    public var tail: UInt16 {
        // The tail shares its slot with the first entry's `resv` field in the kernel ABI.
        base.load(fromByteOffset: 14, as: UInt16.self)
    }

    /// The buffer at ring position `index` (for a scripted kernel in tests).
    public func entry(at index: UInt16) -> (address: UnsafeMutableRawPointer, length: Int, id: UInt16) {
        let slot = base.advanced(by: Int(index & UInt16(entries - 1)) * 16)
        let address = UInt(slot.load(as: UInt64.self))
        return (
            UnsafeMutableRawPointer(bitPattern: address)!, Int(slot.load(fromByteOffset: 8, as: UInt32.self)),
            slot.load(fromByteOffset: 12, as: UInt16.self)
        )
    }
}
