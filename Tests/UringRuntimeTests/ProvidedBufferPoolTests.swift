import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// The receive-buffer pool's reuse policy, driven without a kernel: the test plays the kernel by
/// taking the buffer at the ring's head.
@Suite struct ProvidedBufferPoolTests {
    private static let size = 256 * 1024

    /// The buffer id the "kernel" takes next.
    private func next(_ ring: ScriptedRing, _ pool: ProvidedBufferPool) -> UInt16 {
        ring.bufferRing!.entry(at: pool.ringHead).id
    }

    /// Consumes the head buffer as a receive of `count` bytes, returning what was delivered.
    private func receive(_ ring: ScriptedRing, _ pool: ProvidedBufferPool, count: Int = 100) -> (UInt16, Bytes) {
        let id = next(ring, pool)
        var delivered: [Bytes] = []
        _ = pool.takeReceived(firstID: id, count: count, bufferHasMore: false) { delivered.append($0) }
        return (id, delivered[0])
    }

    @Test func theRingHoldsAboutAMebibyteAndTheRestWaitsAside() throws {
        let ring = ScriptedRing()
        let pool = try ProvidedBufferPool(
            ring: ring, group: 1, bufferCount: 64, bufferSize: Self.size, incremental: false)
        #expect(pool.ringEntries == 4)
        #expect(pool.available == 64)
        pool.close(ring: ring)
        // Small buffers: as many as make a mebibyte.
        let smallRing = ScriptedRing()
        let small = try ProvidedBufferPool(
            ring: smallRing, group: 1, bufferCount: 512, bufferSize: 16_384, incremental: false)
        #expect(small.ringEntries == 64)
        small.close(ring: smallRing)
    }

    /// A buffer freed a moment ago is still in the CPU's caches: it goes back to the kernel ahead of
    /// buffers that have been free longer, so the kernel's copies land in warm memory.
    @Test func aBufferFreedLastIsTheNextTheKernelGets() throws {
        let ring = ScriptedRing()
        let pool = try ProvidedBufferPool(
            ring: ring, group: 1, bufferCount: 64, bufferSize: Self.size, incremental: false)
        var held: [Bytes] = []
        var freed: UInt16 = 0
        for index in 0..<3 {
            let (id, bytes) = receive(ring, pool)
            if index == 1 { freed = id } else { held.append(bytes) }
        }
        // The second buffer's bytes are gone; the first and third are still held.
        #expect(pool.recycle() == 1)
        #expect(pool.ringEntries == 4)
        var taken: [UInt16] = []
        for _ in 0..<4 { taken.append(receive(ring, pool).0) }
        #expect(taken.contains(freed))
        #expect(pool.available == 64 - 2 - 4)
        // No `Bytes` left, so closing unmaps the buffers.
        held.removeAll()
        pool.close(ring: ring)
    }

    /// Running dry while buffers wait aside doubles what the ring holds; it shrinks back after a
    /// while without running dry.
    @Test func runningDryGrowsTheRingAndQuietShrinksIt() throws {
        let ring = ScriptedRing()
        let pool = try ProvidedBufferPool(
            ring: ring, group: 1, bufferCount: 64, bufferSize: Self.size, incremental: false)
        pool.ranDry()
        pool.topUp()
        #expect(pool.ringEntries == 8)
        pool.ranDry()
        pool.topUp()
        #expect(pool.ringEntries == 16)
        for _ in 0..<(2 * ProvidedBufferPool.turnsBeforeShrinking) { pool.topUp() }
        // Entries already given to the kernel stay; the target is back to its floor.
        #expect(pool.ringTarget == 4)
        #expect(pool.ringEntries == 16)
        pool.close(ring: ring)
    }
}
