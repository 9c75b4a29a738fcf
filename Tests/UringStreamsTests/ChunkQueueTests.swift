import Testing

@testable import UringStreams

/// The reader's buffer: takes hand over whole chunks, share parts of one, or join several.
@Suite struct ChunkQueueTests {
    private func chunk(_ byte: Character, _ count: Int) -> Bytes {
        Bytes(String(repeating: String(byte), count: count))
    }

    /// Taking each whole chunk in turn returns it and leaves the ones behind it untouched.
    @Test func wholeChunksAreTakenInOrder() {
        var queue = ChunkQueue()
        let first = chunk("a", 1000)
        let second = chunk("b", 700)
        queue.append(first)
        queue.append(second)
        var copied = 0
        #expect(queue.take(1000, copied: &copied) == first)
        #expect(queue.count == 700)
        #expect(queue.take(700, copied: &copied) == second)
        #expect(queue.isEmpty)
        #expect(copied == 0)
        // Empty again, it gathers small chunks as before.
        queue.append(chunk("c", 10))
        queue.append(chunk("d", 10))
        #expect(queue.take(20, copied: &copied) == Bytes("cccccccccc" + "dddddddddd"))
    }

    /// A part of the first chunk, then its rest, then a take across two chunks (joined, counted
    /// as copied).
    @Test func partsAndJoinsKeepTheOrder() {
        var queue = ChunkQueue()
        queue.append(chunk("a", 1000))
        queue.append(chunk("b", 1000))
        var copied = 0
        #expect(queue.take(300, copied: &copied) == chunk("a", 300))
        #expect(queue.take(700, copied: &copied) == chunk("a", 700))
        #expect(copied == 0)
        queue.append(chunk("c", 1000))
        let joined = Bytes(String(repeating: "b", count: 1000) + String(repeating: "c", count: 500))
        #expect(queue.take(1500, copied: &copied) == joined)
        #expect(copied == 1500)
        #expect(queue.count == 500)
        #expect(queue.take(10_000, copied: &copied) == chunk("c", 500))
        #expect(queue.isEmpty)
    }
}
