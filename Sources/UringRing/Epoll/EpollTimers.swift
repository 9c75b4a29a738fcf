/// Deadlines of the epoll backend's timeouts and delayed connect retries, soonest first. A loop
/// has few at a time (sleeps, retries), so a sorted array beats a heap.
struct EpollTimers {
    enum Action {
        /// A timeout: completes with `-ETIME`.
        case expire
        /// A connect that the kernel refused for now (`EAGAIN`: a Unix listener's full backlog);
        /// tried again when the deadline passes.
        case retryConnect(fd: Int32, address: UnsafeRawPointer, length: UInt32, attempt: Int)
    }

    struct Entry {
        var deadline: UInt64
        var userData: UInt64
        var action: Action
    }

    private(set) var entries: [Entry] = []

    var isEmpty: Bool { entries.isEmpty }

    mutating func insert(_ entry: Entry) {
        let index = entries.firstIndex { $0.deadline > entry.deadline } ?? entries.endIndex
        entries.insert(entry, at: index)
    }

    /// Removes the entry of `userData`, if any.
    mutating func remove(_ userData: UInt64) -> Entry? {
        guard let index = entries.firstIndex(where: { $0.userData == userData }) else { return nil }
        return entries.remove(at: index)
    }

    /// Removes every entry.
    mutating func removeAll() -> [Entry] {
        defer { entries.removeAll() }
        return entries
    }

    /// Takes the next entry whose deadline is at or before `now`.
    mutating func popExpired(now: UInt64) -> Entry? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        return entries.removeFirst()
    }

    /// Milliseconds until the soonest deadline, rounded up (epoll_wait's unit), or -1 for none.
    func millisecondsUntilNext(now: UInt64) -> Int32 {
        guard let first = entries.first else { return -1 }
        guard first.deadline > now else { return 0 }
        return Int32(min((first.deadline - now + 999_999) / 1_000_000, UInt64(Int32.max)))
    }
}
