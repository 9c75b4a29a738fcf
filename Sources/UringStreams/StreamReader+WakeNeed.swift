internal import Glibc

extension StreamReader {
    /// What a waiting read needs from a feed before waking it can help: asyncio wakes the waiter on
    /// every feed, which resumes a task per received chunk. A line trickling in a byte at a time
    /// (a slow-loris crowd) would then cost a task switch per byte; with this, one per line.
    ///
    /// Conservative: whenever the read could complete or throw, the feed wakes it. EOF and stored
    /// errors always wake it.
    enum WakeNeed {
        /// Any data (read(n)).
        case anyData
        /// At least this many bytes buffered (readExactly).
        case count(Int)
        /// Only the end of the stream (read(-1)).
        case eof
        /// A chunk containing the last byte of the separator (the only byte that can complete a
        /// match), or more than `limit` bytes buffered (the read then overruns).
        case separator(ending: UInt8, orAbove: Int)

        /// Whether feeding `bytes`, which brought the buffer to `buffered` bytes, meets the need.
        func isMet(by bytes: Bytes, buffered: Int) -> Bool {
            switch self {
            case .anyData: return true
            case .count(let n): return buffered >= n
            case .eof: return false
            case .separator(let last, let limit):
                if buffered > limit { return true }
                return bytes.withUnsafeBytes { raw in
                    guard let base = raw.baseAddress else { return false }
                    return memchr(base, Int32(last), raw.count) != nil
                }
            }
        }
    }
}
