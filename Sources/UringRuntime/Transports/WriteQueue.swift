import Glibc

/// Bytes written and not yet confirmed sent, in order. The front chunk may be partly sent.
/// Emptying it keeps its capacity, so a steady echo allocates nothing here.
struct WriteQueue {
    private var chunks: [Bytes] = []
    private var head = 0
    /// Bytes of the front chunk already sent.
    private var headOffset = 0
    /// Chunks the last ``fill(_:capacity:)`` pointed iovecs at: the send in flight reads them.
    private var inFlight = 0

    var isEmpty: Bool { head == chunks.count }

    mutating func append(_ bytes: Bytes) {
        chunks.append(bytes)
    }

    /// Fills up to `capacity` iovecs from the front; returns how many it filled and their bytes.
    mutating func fill(_ iovecs: UnsafeMutablePointer<iovec>, capacity: Int) -> (count: Int, bytes: Int) {
        var count = 0
        var bytes = 0
        var index = head
        while index < chunks.count, count < capacity {
            let chunk = chunks[index]
            let skip = index == head ? headOffset : 0
            iovecs[count] = iovec(
                iov_base: UnsafeMutableRawPointer(mutating: chunk.base! + skip), iov_len: chunk.count - skip)
            bytes += chunk.count - skip
            count += 1
            index += 1
        }
        inFlight = count
        return (count, bytes)
    }

    /// The chunks the send in flight reads from (for a zero-copy send to hold).
    var inFlightChunks: [Bytes] { Array(chunks[head..<(head + inFlight)]) }

    /// Drops what is not being sent; with `keepingInFlight`, the chunks the send in flight reads
    /// from stay until its completion (the kernel may still be copying from them).
    mutating func removeUnsent(keepingInFlight: Bool) {
        guard keepingInFlight, inFlight > 0 else { return removeAll() }
        chunks.removeSubrange((head + inFlight)...)
    }

    /// Drops `sent` bytes from the front.
    mutating func consume(_ sent: Int) {
        var remaining = sent
        while remaining > 0, head < chunks.count {
            let left = chunks[head].count - headOffset
            if remaining >= left {
                remaining -= left
                chunks[head] = Bytes()  // releases a receive buffer once sent (zero-copy sends hold their own)
                head += 1
                headOffset = 0
            } else {
                headOffset += remaining
                remaining = 0
            }
        }
        if head == chunks.count { removeAll() }
    }

    mutating func removeAll() {
        chunks.removeAll(keepingCapacity: true)
        head = 0
        headOffset = 0
        inFlight = 0
    }
}
