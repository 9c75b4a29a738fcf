import Glibc

/// Bytes written and not yet confirmed sent, in order. The front chunk may be partly sent.
/// Emptying it keeps its capacity, so a steady echo allocates nothing here.
struct WriteQueue {
    private var chunks: [Bytes] = []
    private var head = 0
    /// Bytes of the front chunk already sent.
    private var headOffset = 0
    /// Sent chunks a zero-copy send may still read from, until its notification.
    private var held: [Bytes] = []

    var isEmpty: Bool { head == chunks.count }

    mutating func append(_ bytes: Bytes) {
        chunks.append(bytes)
    }

    /// Fills up to `capacity` iovecs from the front; returns how many it filled and their bytes.
    func fill(_ iovecs: UnsafeMutablePointer<iovec>, capacity: Int) -> (count: Int, bytes: Int) {
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
        return (count, bytes)
    }

    /// Drops `sent` bytes from the front; with `holdingSent`, keeps the chunks alive until
    /// ``releaseHeld()`` (a zero-copy send may still read them).
    mutating func consume(_ sent: Int, holdingSent: Bool = false) {
        var remaining = sent
        while remaining > 0, head < chunks.count {
            let left = chunks[head].count - headOffset
            if remaining >= left {
                remaining -= left
                if holdingSent { held.append(chunks[head]) }
                chunks[head] = Bytes()  // releases a receive buffer as soon as it is sent
                head += 1
                headOffset = 0
            } else {
                headOffset += remaining
                remaining = 0
            }
        }
        if head == chunks.count { removeAll() }
    }

    /// Lets go of chunks kept for zero-copy sends, once their notifications arrived.
    mutating func releaseHeld() {
        held.removeAll(keepingCapacity: true)
    }

    mutating func removeAll() {
        chunks.removeAll(keepingCapacity: true)
        head = 0
        headOffset = 0
    }
}
