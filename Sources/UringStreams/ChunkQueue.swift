internal import Glibc

/// A reader's buffered bytes: the received chunks in order, plus how much of the first one has been
/// consumed. Nothing shifts when bytes are consumed (unlike asyncio's `bytearray`), and a read that
/// lies within one chunk returns a slice of it without copying.
struct ChunkQueue {
    private var chunks: [Bytes] = []
    private var head = 0
    private var headOffset = 0
    /// Bytes buffered.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func append(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        count += bytes.count
        // Consecutive receives into one incremental buffer are adjacent: keep them one chunk, so a
        // read spanning both needs no copy.
        if head < chunks.count, let joined = chunks[chunks.count - 1].extended(by: bytes) {
            chunks[chunks.count - 1] = joined
        } else {
            chunks.append(bytes)
        }
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
        chunks.removeAll(keepingCapacity: true)
        head = 0
        headOffset = 0
        count = 0
    }

    /// Takes the first `n` bytes; `copied` is set to how many bytes had to be joined.
    mutating func take(_ n: Int, copied: inout Int) -> Bytes {
        precondition(n <= count)
        guard n > 0 else { return Bytes() }
        let first = chunks[head]
        let available = first.count - headOffset
        let result: Bytes
        if n <= available {
            result = first.bytes(headOffset..<(headOffset + n))
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

    /// Drops the first `n` bytes.
    mutating func drop(_ n: Int) {
        var remaining = min(n, count)
        count -= remaining
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
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
    }

    /// The byte at position `position` (0 is the first unconsumed byte).
    private func byte(at position: Int) -> UInt8 {
        var index = head
        var offset = headOffset + position
        while offset >= chunks[index].count {
            offset -= chunks[index].count
            index += 1
        }
        return chunks[index][offset]
    }

    /// Whether the bytes at `position` start with `separator`.
    func hasPrefix(_ separator: [UInt8], at position: Int) -> Bool {
        guard position >= 0, position + separator.count <= count else { return false }
        for (i, byte) in separator.enumerated() where self.byte(at: position + i) != byte { return false }
        return true
    }

    /// The position of the first `separator` at or after `start`, searching chunk by chunk with
    /// memchr and checking matches that straddle chunk boundaries byte by byte.
    func firstIndex(of separator: [UInt8], from start: Int) -> Int? {
        guard let firstByte = separator.first, start + separator.count <= count else { return nil }
        var chunkStart = 0
        var index = head
        while index < chunks.count {
            let chunk = chunks[index]
            let skip = index == head ? headOffset : 0
            let length = chunk.count - skip
            if start < chunkStart + length {
                var local = max(0, start - chunkStart)
                while local < length {
                    let found: Int? = chunk.withUnsafeBytes { raw in
                        let base = raw.baseAddress! + skip
                        return memchr(base + local, Int32(firstByte), length - local).map {
                            UnsafeRawPointer($0) - base
                        }
                    }
                    guard let hit = found else { break }
                    let position = chunkStart + hit
                    if position + separator.count > count { return nil }
                    if separator.count == 1 || hasPrefix(separator, at: position) { return position }
                    local = hit + 1
                }
            }
            chunkStart += length
            index += 1
        }
        return nil
    }
}
