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
/// A buffer is free again once the kernel is done with it and the pool's reference to its lease is
/// the only one left, i.e. no `Bytes` refers to it any more, wherever that last `Bytes` was
/// released. Free buffers wait aside, and the ring holds only about 1 MiB of them, topped up once a
/// turn with the buffers freed last: the kernel copies every receive into the buffer it takes, and
/// cycling all of a loop's buffers (16 MiB by default) made those copies miss the CPU's caches. A
/// ring that runs dry holds twice as many from then on, and shrinks back after a quiet while.
/// Buffers that wait aside through a whole release interval (``endReleaseInterval()``) give their
/// pages back, so a burst does not keep its memory resident for the loop's lifetime. It runs on
/// the loop thread only.
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
    /// Free buffers not in the ring, the one freed last at the end: the ring is topped up from there.
    @exclusivity(unchecked) private var stash: [UInt16] = []
    /// How many buffers the ring should hold; between `minimumRingTarget` and `bufferCount`.
    @exclusivity(unchecked) private(set) var ringTarget: Int
    /// About 1 MiB of buffers, and at least 4: what a busy loop's receives take in one turn.
    let minimumRingTarget: Int
    @exclusivity(unchecked) private var turnsSinceDry = 0
    /// Stash entries below this index hold no pages: given back, or never written.
    @exclusivity(unchecked) private var releasedBelow = 0
    /// The fewest entries the stash held since the last ``endReleaseInterval()``: those below were
    /// not taken out in between.
    @exclusivity(unchecked) private var untouchedBelow = 0
    /// Whether the ring ran dry since the last ``endReleaseInterval()``.
    @exclusivity(unchecked) private var ranDrySinceRelease = false
    /// Turns without running dry after which a grown ring target halves.
    static let turnsBeforeShrinking = 4096

    /// Buffers in the ring that the kernel can still write into (including a partly filled one at
    /// the head).
    var ringEntries: Int { Int(tail &- head) }
    /// Buffers the kernel can have: those in the ring and those waiting aside.
    var available: Int { ringEntries + stash.count }
    /// The ring slot the kernel takes next (for tests that play the kernel).
    var ringHead: UInt16 { head }
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
        minimumRingTarget = min(bufferCount, max(4, (1 << 20) / bufferSize))
        ringTarget = minimumRingTarget
        // The lowest ids go to the ring first, then in order from the stash.
        stash = (0..<bufferCount).reversed().map { UInt16($0) }
        fillRing()
        releasedBelow = stash.count
        untouchedBelow = stash.count
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
        } while remaining > 0 && ringEntries > 0
        return copied
    }

    /// Accounts for buffer `id` that a failed or empty receive consumed.
    func takeUnused(id: UInt16, bufferHasMore: Bool) {
        guard !(incremental && bufferHasMore) else { return }
        head &+= 1
        outstanding.append(id)
    }

    var hasOutstanding: Bool { !outstanding.isEmpty }

    /// Takes back every buffer the kernel is done with and no `Bytes` refers to any more, then fills
    /// the ring to its target; returns how many buffers were taken back.
    @discardableResult
    func recycle() -> Int {
        let freed = collectFreed()
        fillRing()
        return freed
    }

    /// Once a turn, before the loop enters the kernel: fills the ring to its target, and halves a
    /// grown target after ``turnsBeforeShrinking`` turns without running dry. Returns how many
    /// buffers it took back, so the loop can re-arm receives that wait for buffers.
    @discardableResult
    func topUp() -> Int {
        if ringTarget > minimumRingTarget {
            turnsSinceDry += 1
            if turnsSinceDry >= Self.turnsBeforeShrinking { halveTarget() }
        }
        guard ringEntries < ringTarget else { return 0 }
        return recycle()
    }

    /// The kernel found the ring empty (`ENOBUFS`): from the next top-up on the ring holds twice as
    /// many.
    func ranDry() {
        turnsSinceDry = 0
        ranDrySinceRelease = true
        ringTarget = min(bufferCount, ringTarget * 2)
    }

    /// Whether a later ``endReleaseInterval()`` would have work: free buffers beyond a warm reserve
    /// may hold pages, or the ring's target has grown.
    var mayReleaseMemory: Bool {
        stash.count - minimumRingTarget > releasedBelow || ringTarget > minimumRingTarget
    }

    /// Once an interval: halves a grown ring target unless the ring ran dry meanwhile (buffers the
    /// kernel holds stay there until it uses them, and are not given back to the ring), and gives
    /// back the pages of the free buffers that stayed aside since the last call (`MADV_DONTNEED`),
    /// except a reserve of the warmest ones, as many as the ring's floor, for the next burst. The
    /// kernel's next write into a released buffer faults in zeroed pages. Returns how many buffers
    /// it released.
    @discardableResult
    func endReleaseInterval() -> Int {
        if !ranDrySinceRelease { halveTarget() }
        ranDrySinceRelease = false
        let end = min(untouchedBelow, stash.count - minimumRingTarget)
        var released = 0
        if end > releasedBelow {
            for index in releasedBelow..<end {
                _ = madvise(leases[Int(stash[index])].address, bufferSize, MADV_DONTNEED)
            }
            released = end - releasedBelow
            releasedBelow = end
        }
        untouchedBelow = stash.count
        return released
    }

    /// How many bytes of the buffers' memory are resident now (`mincore`), for tests and diagnostics.
    var residentBytes: Int {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let bytes = bufferCount * bufferSize
        var pages = [UInt8](repeating: 0, count: (bytes + pageSize - 1) / pageSize)
        guard mincore(storage, bytes, &pages) == 0 else { return 0 }
        return pages.reduce(0) { $0 + Int($1 & 1) } * pageSize
    }

    /// A quiet while (turns, or a release interval) halves a grown target, down to its floor.
    private func halveTarget() {
        ringTarget = max(minimumRingTarget, ringTarget / 2)
        turnsSinceDry = 0
    }

    /// Moves free buffers from `outstanding` to the stash; returns how many.
    private func collectFreed() -> Int {
        guard !outstanding.isEmpty else { return 0 }
        let before = stash.count
        var kept = 0
        for i in outstanding.indices {
            let id = outstanding[i]
            if isKnownUniquelyReferenced(&leases[Int(id)]) {
                stash.append(id)
            } else {
                outstanding[kept] = id
                kept += 1
            }
        }
        outstanding.removeLast(outstanding.count - kept)
        let freed = stash.count - before
        // The last release may have happened on another thread; order its reads of the buffer
        // before the kernel may write into it again.
        if freed > 0 { atomicFenceAcquire() }
        return freed
    }

    /// Gives the kernel buffers from the stash until the ring holds `ringTarget`, the ones freed last
    /// first: those were written lately, so they go before buffers long unused.
    private func fillRing() {
        let wanted = ringTarget - ringEntries
        guard wanted > 0 else { return }
        let count = min(wanted, stash.count)
        guard count > 0 else { return }
        for offset in 0..<count { add(stash.removeLast(), at: offset) }
        publish(count)
        untouchedBelow = min(untouchedBelow, stash.count)
        releasedBelow = min(releasedBelow, stash.count)
    }
}
