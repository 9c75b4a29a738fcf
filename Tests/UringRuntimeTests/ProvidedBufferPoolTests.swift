import Glibc
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// The receive-buffer pool's reuse policy, driven without a kernel: the test plays the kernel by
/// taking the buffer at the ring's head.
@Suite struct ProvidedBufferPoolTests {
    private static let size = 256 * 1024

    /// A pool of 64 buffers of 256 KiB on a ring the test plays the kernel for.
    private func makePool() throws -> (ScriptedRing, ProvidedBufferPool) {
        let ring = ScriptedRing()
        return (
            ring,
            try ProvidedBufferPool(ring: ring, group: 1, bufferCount: 64, bufferSize: Self.size, incremental: false)
        )
    }

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
        let (ring, pool) = try makePool()
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
        let (ring, pool) = try makePool()
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
        let (ring, pool) = try makePool()
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

    /// On an idle loop turns are rare, so the release interval shrinks a grown ring too: halved
    /// after an interval without running dry, kept after one that ran dry.
    @Test func aReleaseIntervalWithoutRunningDryHalvesAGrownRing() throws {
        let (ring, pool) = try makePool()
        #expect(!pool.mayReleaseMemory)
        pool.ranDry()
        pool.ranDry()
        #expect(pool.ringTarget == 16)
        #expect(pool.mayReleaseMemory)
        pool.endReleaseInterval()
        #expect(pool.ringTarget == 16)
        pool.endReleaseInterval()
        #expect(pool.ringTarget == 8)
        pool.endReleaseInterval()
        #expect(pool.ringTarget == 4)
        #expect(!pool.mayReleaseMemory)
        pool.close(ring: ring)
    }

    /// Buffers that stay free through a whole release interval give their pages back, all but a
    /// reserve of the warmest; buffers freed during the interval keep theirs until the next one.
    @Test func buffersFreeForAWholeIntervalGiveTheirPagesBack() throws {
        let (ring, pool) = try makePool()
        // Nothing was written yet, so nothing is resident to give back.
        #expect(!pool.mayReleaseMemory)
        #expect(pool.endReleaseInterval() == 0)
        // A burst: 24 buffers written by the "kernel" and held by readers.
        var held: [Bytes] = []
        for _ in 0..<24 {
            memset(ring.bufferRing!.entry(at: pool.ringHead).address, 1, Self.size)
            held.append(receive(ring, pool).1)
            pool.recycle()
        }
        #expect(pool.residentBytes == 24 * Self.size)
        held.removeAll()
        #expect(pool.recycle() == 24)
        #expect(pool.mayReleaseMemory)
        // Freed during this interval: kept.
        #expect(pool.endReleaseInterval() == 0)
        #expect(pool.residentBytes == 24 * Self.size)
        // Free through the whole next one: released, but for the 4 freed last.
        #expect(pool.endReleaseInterval() == 20)
        #expect(pool.residentBytes == 4 * Self.size)
        #expect(!pool.mayReleaseMemory)
        // Released buffers work as before once the ring gets them again.
        for _ in 0..<40 {
            let (_, bytes) = receive(ring, pool, count: 4_096)
            #expect(bytes.count == 4_096)
            pool.recycle()
        }
        pool.close(ring: ring)
    }

    /// The release interval comes from the environment in milliseconds; 0 keeps buffers resident.
    @Test func theReleaseIntervalIsConfiguredInMilliseconds() {
        let configured = { (value: String) in
            EventLoop.Configuration(environment: { $0 == "URINGSTREAMS_RECEIVE_BUFFER_RELEASE_MS" ? value : nil })
        }
        #expect(EventLoop.Configuration(environment: { _ in nil }).receiveBufferRelease == .seconds(2))
        #expect(configured("500").receiveBufferRelease == .milliseconds(500))
        #expect(configured("0").receiveBufferRelease == nil)
        let negative = configured("-1")
        #expect(negative.receiveBufferRelease == .seconds(2))
        #expect(negative.rejectedEnvironment.count == 1)
        var configuration = EventLoop.Configuration()
        configuration.receiveBufferRelease = .zero
        #expect(configuration.validated.receiveBufferRelease == nil)
    }
}
