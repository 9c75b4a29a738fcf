internal import Glibc

/// A reader's buffered bytes: the received chunks in order, plus how much of the first one has been
/// consumed. Nothing shifts when bytes are consumed (unlike asyncio's `bytearray`), and a read that
/// lies within one chunk returns a slice of it without copying.
///
/// Whatever the peer's chunking, memory and scans stay linear in the bytes: a chunk smaller than
/// ``smallChunk`` that arrives behind others is copied into shared heap storage instead of costing a
/// record of its own, and a position is found by binary search over the chunks' start offsets.
struct ChunkQueue {
    /// Below this size a chunk is gathered into heap storage when bytes are already waiting (a lone
    /// chunk stays as it came, so request/response traffic is never copied).
    static let smallChunk = 512
    /// What one chunk record costs besides its bytes (the `Bytes` value and its start offset),
    /// counted in ``memoryCost``.
    static let recordCost = MemoryLayout<Bytes>.stride + MemoryLayout<Int>.stride
    private static let gatherCapacity = 4096

    private var chunks: [Bytes] = []
    /// The stream offset of each chunk's first byte (parallel to `chunks`).
    private var starts: [Int] = []
    private var head = 0
    private var headOffset = 0
    /// The stream offset of the first unconsumed byte.
    private var consumed = 0
    /// Where small chunks are gathered while the last chunk is a view of it.
    private var gathering: (storage: GrowingStorage, viewStart: Int)?
    /// Bytes buffered.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// The bytes plus what their records cost: the memory flow control bounds.
    var memoryCost: Int { count + (chunks.count - head) * Self.recordCost }

    /// Appends `bytes`; returns how many bytes had to be copied to gather them.
    @discardableResult
    mutating func append(_ bytes: Bytes) -> Int {
        guard bytes.count > 0 else { return 0 }
        defer { count += bytes.count }
        guard head < chunks.count else {
            appendChunk(bytes)
            return 0
        }
        let last = chunks.count - 1
        // Consecutive receives into one incremental buffer are adjacent: keep them one chunk, so a
        // read spanning both needs no copy.
        if let joined = chunks[last].extended(by: bytes) {
            chunks[last] = joined
            return 0
        }
        guard bytes.count < Self.smallChunk else {
            appendChunk(bytes)
            return 0
        }
        if var gathering, gathering.storage.append(bytes) {
            chunks[last] = gathering.storage.bytes(from: gathering.viewStart)
            self.gathering = gathering
            return bytes.count
        }
        var storage = GrowingStorage(capacity: Self.gatherCapacity)
        _ = storage.append(bytes)
        appendChunk(storage.bytes(from: 0))
        gathering = (storage, 0)
        return bytes.count
    }

    private mutating func appendChunk(_ bytes: Bytes) {
        starts.append(consumed + count)
        chunks.append(bytes)
        gathering = nil
    }

    /// How many bytes a read of up to `n` can return without copying: all `n` when they lie in the
    /// first chunk or the chunks are heap copies (joined as asyncio would), otherwise what is left
    /// of the first chunk when it lies in a receive buffer.
    func uncopiedPrefix(upTo n: Int) -> Int {
        guard head < chunks.count else { return 0 }
        let first = chunks[head]
        let available = first.count - headOffset
        return n > available && first.isReceiveBufferSlice ? available : n
    }

    mutating func removeAll() {
        consumed += count
        chunks.removeAll(keepingCapacity: true)
        starts.removeAll(keepingCapacity: true)
        head = 0
        headOffset = 0
        count = 0
        gathering = nil
    }

    /// Takes the first `n` bytes (at most ``count``); `copied` grows by how many had to be joined.
    mutating func take(_ n: Int, copied: inout Int) -> Bytes {
        let n = min(n, count)
        guard n > 0 else { return Bytes() }
        let available = chunks[head].count - headOffset
        if headOffset == 0, n == available {
            // The whole first chunk (every read of a ping-pong): handed over rather than shared
            // and then dropped, which saves a retain and a release per read.
            var whole = Bytes()
            swap(&whole, &chunks[head])
            count -= n
            consumed += n
            head += 1
            compact()
            return whole
        }
        let result: Bytes
        if n <= available {
            result = chunks[head].bytes(headOffset..<(headOffset + n))
        } else {
            var parts: [Bytes] = []
            var index = head
            var offset = headOffset
            var needed = n
            while needed > 0 {
                let chunk = chunks[index]
                let part = chunk.bytes(offset..<min(chunk.count, offset + needed))
                parts.append(part)
                needed -= part.count
                index += 1
                offset = 0
            }
            result = Bytes.joining(parts, totalCount: n)
            copied += n
        }
        drop(n)
        return result
    }

    /// Drops the first `n` bytes (at most ``count``).
    mutating func drop(_ n: Int) {
        var remaining = min(n, count)
        count -= remaining
        consumed += remaining
        while remaining > 0 {
            let available = chunks[head].count - headOffset
            if remaining >= available {
                remaining -= available
                chunks[head] = Bytes()  // gives a receive buffer back as soon as it is consumed
                head += 1
                headOffset = 0
            } else {
                headOffset += remaining
                remaining = 0
            }
        }
        compact()
    }

    /// Forgets the consumed chunks: all of them once the queue is empty, or the front half when
    /// they make up most of the array.
    private mutating func compact() {
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            starts.removeAll(keepingCapacity: true)
            head = 0
            gathering = nil
        } else if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            starts.removeFirst(head)
            head = 0
        }
    }

    /// The chunk index holding position `position` (0 is the first unconsumed byte, which must be
    /// buffered) and the offset within that chunk.
    private func locate(_ position: Int) -> (index: Int, offset: Int) {
        let target = consumed + position
        var low = head
        var high = chunks.count - 1
        // The last chunk whose start is at or before the target.
        while low < high {
            let middle = (low + high + 1) / 2
            if starts[middle] <= target { low = middle } else { high = middle - 1 }
        }
        return (low, target - starts[low])
    }

    /// Whether the bytes at `position` start with `separator`.
    func hasPrefix(_ separator: [UInt8], at position: Int) -> Bool {
        guard position >= 0, separator.count <= count - position else { return false }
        guard !separator.isEmpty else { return true }
        let (index, offset) = locate(position)
        return matches(separator, index: index, offset: offset)
    }

    /// Whether the buffered bytes from byte `offset` of chunk `index` on start with `separator`
    /// (which the caller made sure fits in what is buffered).
    private func matches(_ separator: [UInt8], index: Int, offset: Int) -> Bool {
        var index = index
        var offset = offset
        for byte in separator {
            while offset >= chunks[index].count {
                offset -= chunks[index].count
                index += 1
            }
            if chunks[index][offset] != byte { return false }
            offset += 1
        }
        return true
    }

    /// The position of the first `separator` at or after `start`: memchr for its first byte chunk by
    /// chunk, then a check of the rest, which may straddle chunks. Linear in the bytes searched.
    func firstIndex(of separator: [UInt8], from start: Int) -> Int? {
        guard let firstByte = separator.first, start >= 0, separator.count <= count - start else { return nil }
        let lastStart = count - separator.count
        var (index, local) = locate(start)
        while index < chunks.count {
            // Where the chunk's first byte sits (negative for the partly consumed head chunk).
            let chunkStart = starts[index] - consumed
            if chunkStart > lastStart { return nil }
            let chunk = chunks[index]
            while local < chunk.count {
                let found: Int? = chunk.withUnsafeBytes { raw in
                    let base = raw.baseAddress!
                    return memchr(base + local, Int32(firstByte), chunk.count - local).map {
                        UnsafeRawPointer($0) - base
                    }
                }
                guard let hit = found else { break }
                let position = chunkStart + hit
                if position > lastStart { return nil }
                if separator.count == 1 || matches(separator, index: index, offset: hit) { return position }
                local = hit + 1
            }
            index += 1
            local = 0
        }
        return nil
    }
}
