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
/// A buffer goes back to the kernel once the pool's reference to its lease is the only one left,
/// i.e. no `Bytes` refers to it any more, wherever that last `Bytes` was released. The loop asks
/// for that check (``recycle()``) before it sleeps; it runs on the loop thread only.
final class ProvidedBufferPool {
    let bufferSize: Int
    let bufferCount: Int
    let group: UInt16
    private let ringMemory: ProvidedBufferRingMemory
    private let storage: UnsafeMutableRawPointer
    private var leases: [ReceiveBufferLease]
    /// Buffers the kernel has handed out and not yet had back.
    private var outstanding: [UInt16] = []
    private var recycledScratch: [UInt16] = []

    /// Buffers the kernel can pick from right now.
    private(set) var available: Int

    init(ring: any RingBackend, group: UInt16, bufferCount: Int, bufferSize: Int) throws(RingError) {
        precondition(bufferCount > 0 && bufferCount & (bufferCount - 1) == 0 && bufferCount <= 32768)
        self.bufferSize = bufferSize
        self.bufferCount = bufferCount
        self.group = group
        ringMemory = try ring.registerBufferRing(entries: bufferCount, group: group)
        // Anonymous mmap: pages become resident only when the kernel first writes into them.
        let bytes = bufferCount * bufferSize
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            ring.unregisterBufferRing(ringMemory)
            throw .system(errno: errno, operation: "mmap(receive buffers)")
        }
        storage = memory
        leases = (0..<bufferCount).map { ReceiveBufferLease(id: UInt16($0), address: memory + $0 * bufferSize) }
        outstanding.reserveCapacity(bufferCount)
        recycledScratch.reserveCapacity(bufferCount)
        for lease in leases {
            ringMemory.addBuffer(lease.address, length: bufferSize, id: lease.id, offset: Int(lease.id))
        }
        ringMemory.advance(by: bufferCount)
        available = bufferCount
    }

    /// Releases the ring; the loop calls it at shutdown, after the ring stopped using the buffers.
    func close(ring: any RingBackend) {
        ring.unregisterBufferRing(ringMemory)
        munmap(storage, bufferCount * bufferSize)
    }

    /// The received bytes in buffer `id`, which the kernel just handed out.
    @inline(__always)
    func take(id: UInt16, count: Int) -> Bytes {
        let lease = leases[Int(id)]
        outstanding.append(id)
        available -= 1
        return Bytes(owner: lease, base: UnsafeRawPointer(lease.address), count: count)
    }

    /// The memory of buffer `id`.
    func address(of id: UInt16) -> UnsafeRawPointer {
        UnsafeRawPointer(leases[Int(id)].address)
    }

    /// Gives buffer `id`, which the kernel just handed out, straight back: nothing refers to it.
    /// (`available` never counted it as gone.)
    func giveBack(id: UInt16) {
        ringMemory.addBuffer(leases[Int(id)].address, length: bufferSize, id: id, offset: 0)
        ringMemory.advance(by: 1)
    }

    var hasOutstanding: Bool { !outstanding.isEmpty }

    /// Returns every buffer no `Bytes` refers to any more; returns how many went back.
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
        for (offset, id) in recycledScratch.enumerated() {
            ringMemory.addBuffer(leases[Int(id)].address, length: bufferSize, id: id, offset: offset)
        }
        ringMemory.advance(by: recycledScratch.count)
        available += recycledScratch.count
        return recycledScratch.count
    }
}
