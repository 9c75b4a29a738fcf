import Glibc
import UringRing

/// The owner of one receive buffer while `Bytes` refer to it. The pool keeps one per buffer for the
/// loop's lifetime, so handing a buffer to a reader allocates nothing.
final class ReceiveBufferLease {
    let id: UInt16
    let address: UnsafeMutableRawPointer

    init(id: UInt16, address: UnsafeMutableRawPointer) {
        self.id = id
        self.address = address
    }
}

/// A provided-buffer ring shared by every connection of one loop: the kernel picks a buffer when
/// data arrives, so an idle connection holds none.
///
/// With an incremental ring (`IOU_PBUF_RING_INC`) the kernel fills a buffer piece by piece, each
/// receive placed after the previous one, and keeps it at the ring's head until it is full; with
/// bundles one completion may span several consecutive buffers. The pool mirrors the ring's order
/// (which buffer id sits at which slot) to find those buffers and the offset within each.
///
/// A buffer goes back to the kernel once the kernel is done with it and the pool's reference to its
/// lease is the only one left, i.e. no `Bytes` refers to it any more, wherever that last `Bytes` was
/// released. The loop asks for that check (``recycle()``) before it sleeps; it runs on the loop
/// thread only.
final class ProvidedBufferPool {
    let bufferSize: Int
    let bufferCount: Int
    let group: UInt16
    /// Whether the kernel consumes buffers incrementally (it accepted `IOU_PBUF_RING_INC`).
    var incremental: Bool { ringMemory.incremental }
    private let ringMemory: ProvidedBufferRingMemory
    private let storage: UnsafeMutableRawPointer
    // `@exclusivity(unchecked)`: loop-thread state touched per message (docs/architecture.md,
    // "Exclusivity checks").
    @exclusivity(unchecked) private var leases: [ReceiveBufferLease]
    /// Bytes the kernel has written into each buffer since it was last added to the ring.
    @exclusivity(unchecked) private var filled: [Int]
    /// The buffer id at each ring slot, as the pool added them; the kernel takes them in this order.
    @exclusivity(unchecked) private var slots: [UInt16]
    /// The slot the kernel takes next, as far as completions have told.
    @exclusivity(unchecked) private var head: UInt16 = 0
    /// The slot the pool adds to next.
    @exclusivity(unchecked) private var tail: UInt16 = 0
    /// Buffers the kernel is done with that `Bytes` may still refer to.
    @exclusivity(unchecked) private var outstanding: [UInt16] = []
    @exclusivity(unchecked) private var recycledScratch: [UInt16] = []

    /// Buffers the kernel can still write into (including a partly filled one at the head).
    var available: Int { Int(tail &- head) }
    /// When no more than this many buffers are left, receives are copied out so their buffers go
    /// straight back: readers holding buffers (a slow consumer, a long `readExactly`) can then
    /// never take the last ones every other connection needs.
    var copyReserve: Int { max(2, bufferCount / 8) }

    init(ring: any RingBackend, group: UInt16, bufferCount: Int, bufferSize: Int, incremental: Bool) throws(RingError) {
        precondition(bufferCount > 0 && bufferCount & (bufferCount - 1) == 0 && bufferCount <= 32768)
        self.bufferSize = bufferSize
        self.bufferCount = bufferCount
        self.group = group
        ringMemory = try ring.registerBufferRing(entries: bufferCount, group: group, incremental: incremental)
        // Anonymous mmap: pages become resident only when the kernel first writes into them.
        let bytes = bufferCount * bufferSize
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            ring.unregisterBufferRing(ringMemory)
            throw .system(errno: errno, operation: "mmap(receive buffers)")
        }
        storage = memory
        leases = (0..<bufferCount).map { ReceiveBufferLease(id: UInt16($0), address: memory + $0 * bufferSize) }
        filled = Array(repeating: 0, count: bufferCount)
        slots = Array(repeating: 0, count: bufferCount)
        outstanding.reserveCapacity(bufferCount)
        recycledScratch.reserveCapacity(bufferCount)
        for id in 0..<bufferCount { add(UInt16(id), at: id) }
        publish(bufferCount)
    }

    /// Releases the ring; the loop calls it at shutdown, after the ring stopped using the buffers.
    /// The buffers stay mapped if any `Bytes` still refers to one: those stay valid, and the
    /// mapping (address space, and only the pages they touched) is the price of that.
    func close(ring: any RingBackend) {
        ring.unregisterBufferRing(ringMemory)
        for index in leases.indices where !isKnownUniquelyReferenced(&leases[index]) { return }
        munmap(storage, bufferCount * bufferSize)
    }

    private func add(_ id: UInt16, at offset: Int) {
        slots[Int((tail &+ UInt16(offset)) & UInt16(bufferCount - 1))] = id
        filled[Int(id)] = 0
        ringMemory.addBuffer(leases[Int(id)].address, length: bufferSize, id: id, offset: offset)
    }

    private func publish(_ count: Int) {
        ringMemory.advance(by: count)
        tail &+= UInt16(count)
    }

    /// Hands over the `count` bytes a receive completion placed, starting in buffer `firstID`, as one
    /// `Bytes` per buffer they lie in (more than one only for bundles). They point into the buffers
    /// unless no more than ``copyReserve`` buffers are left: then they are copied out so the buffers
    /// can go back at once (readers holding many would otherwise starve every connection of the
    /// loop). `bufferHasMore` is the completion's `IORING_CQE_F_BUF_MORE`: the last buffer stays in
    /// the ring.
    ///
    /// Returns how many bytes were copied.
    @inline(__always)
    func takeReceived(firstID: UInt16, count: Int, bufferHasMore: Bool, _ deliver: (Bytes) -> Void) -> Int {
        var copied = 0
        var remaining = count
        var id = firstID
        var first = true
        repeat {
            if !first {
                // Bundles fill the ring's next buffers in order.
                id = slots[Int(head & UInt16(bufferCount - 1))]
            }
            first = false
            // Decided per buffer: one bundle may take most of the ring.
            let copy = available <= copyReserve
            let offset = filled[Int(id)]
            let piece = min(remaining, bufferSize - offset)
            remaining -= piece
            let lease = leases[Int(id)]
            let isLast = remaining == 0
            // A non-incremental buffer is used up by any receive; an incremental one once full.
            let done = !incremental || !(isLast && bufferHasMore)
            if incremental { filled[Int(id)] = offset + piece }
            if done {
                head &+= 1
                outstanding.append(id)
            }
            if piece > 0 {
                let base = UnsafeRawPointer(lease.address + offset)
                if copy {
                    deliver(Bytes(copying: UnsafeRawBufferPointer(start: base, count: piece)))
                    copied += piece
                } else {
                    deliver(Bytes(owner: lease, base: base, count: piece))
                }
            }
        } while remaining > 0 && available > 0
        return copied
    }

    /// Accounts for buffer `id` that a failed or empty receive consumed.
    func takeUnused(id: UInt16, bufferHasMore: Bool) {
        guard !(incremental && bufferHasMore) else { return }
        head &+= 1
        outstanding.append(id)
    }

    var hasOutstanding: Bool { !outstanding.isEmpty }

    /// Returns every buffer the kernel is done with and no `Bytes` refers to any more; returns how
    /// many went back.
    @discardableResult
    func recycle() -> Int {
        guard !outstanding.isEmpty else { return 0 }
        recycledScratch.removeAll(keepingCapacity: true)
        var kept = 0
        for i in outstanding.indices {
            let id = outstanding[i]
            if isKnownUniquelyReferenced(&leases[Int(id)]) {
                recycledScratch.append(id)
            } else {
                outstanding[kept] = id
                kept += 1
            }
        }
        outstanding.removeLast(outstanding.count - kept)
        guard !recycledScratch.isEmpty else { return 0 }
        // The last release may have happened on another thread; order its reads of the buffer
        // before the kernel may write into it again.
        atomicFenceAcquire()
        for (offset, id) in recycledScratch.enumerated() { add(id, at: offset) }
        publish(recycledScratch.count)
        return recycledScratch.count
    }
}
