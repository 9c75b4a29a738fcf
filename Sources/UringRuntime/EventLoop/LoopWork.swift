/// One unit of work for a loop: a task's job, or a closure handed over by `execute`.
enum LoopWork: Sendable {
    case job(UnownedJob)
    case closure(@Sendable () -> Void)
}

/// A growable ring buffer of work, FIFO; reuses its storage so steady-state enqueueing allocates
/// nothing.
struct WorkQueue {
    private var storage: [LoopWork?]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int = 256) {
        storage = Array(repeating: nil, count: capacity)
    }

    var isEmpty: Bool { count == 0 }

    mutating func append(_ work: LoopWork) {
        if count == storage.count { grow() }
        storage[(head + count) & (storage.count - 1)] = work
        count += 1
    }

    mutating func popFirst() -> LoopWork? {
        guard count > 0 else { return nil }
        let work = storage[head]
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
        return work
    }

    private mutating func grow() {
        var bigger = [LoopWork?](repeating: nil, count: storage.count * 2)
        for i in 0..<count { bigger[i] = storage[(head + i) & (storage.count - 1)] }
        storage = bigger
        head = 0
    }
}
