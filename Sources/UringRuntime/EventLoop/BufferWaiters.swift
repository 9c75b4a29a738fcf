/// Receives that found the loop's buffer ring empty, first come first served.
///
/// Order is what keeps a loop fair when connections outnumber its receive buffers: waking every
/// waiter at once lets the same few re-arm first each time while the rest end in ENOBUFS again,
/// for as long as the others keep sending (the soak's ENOBUFS scenario starved most connections
/// that way). Waiters are woken from the front, no more than there are buffers to take.
struct BufferWaiters {
    private var waiting: [any EndOfTurnWork] = []
    /// Waiters before this index have been woken already.
    private var front = 0

    var isEmpty: Bool { front == waiting.count }
    var count: Int { waiting.count - front }

    mutating func append(_ work: any EndOfTurnWork) {
        waiting.append(work)
    }

    /// Removes and returns up to `limit` waiters from the front, appending them to `taken`.
    mutating func takeFront(_ limit: Int, into taken: inout [any EndOfTurnWork]) {
        let end = front + min(limit, count)
        taken.append(contentsOf: waiting[front..<end])
        front = end
        // Compacted once half the array is woken: amortized constant time per waiter.
        if front == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            front = 0
        } else if front > waiting.count / 2 {
            waiting.removeFirst(front)
            front = 0
        }
    }
}
