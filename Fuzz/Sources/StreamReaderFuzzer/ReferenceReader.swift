import Glibc
import UringStreams

/// What a read ends with, as the fuzzer compares it: the library's result mapped here, and the
/// reference model's prediction.
enum Outcome: CustomStringConvertible {
    case bytes([UInt8])
    /// The line iterator's `nil`.
    case endOfLines
    case incomplete(partial: [UInt8], expected: Int?)
    /// `found`: the separator was found beyond the limit (else: not found within it).
    case limitOverrun(consumed: Int, found: Bool)
    case invalidArgument(String)
    case readInProgress
    case cancelled
    /// The error stored with `setException`.
    case stored(id: Int)
    /// Anything else, which the model never predicts.
    case unexpected(String)

    /// The bytes it carries (a result or a partial read).
    var bytes: [UInt8]? {
        switch self {
        case .bytes(let bytes), .incomplete(let bytes, _): bytes
        default: nil
        }
    }

    var description: String {
        switch self {
        case .bytes(let bytes): "bytes \(describe(bytes))"
        case .endOfLines: "end of lines (nil)"
        case .incomplete(let partial, let expected):
            "IncompleteReadError(partial: \(describe(partial)), expected: \(expected.map(String.init) ?? "nil"))"
        case .limitOverrun(let consumed, let found):
            "LimitOverrunError(consumed: \(consumed), separator \(found ? "found beyond the limit" : "not found"))"
        case .invalidArgument(let message): "StreamError.invalidArgument(\(message))"
        case .readInProgress: "StreamError.readInProgress"
        case .cancelled: "CancellationError"
        case .stored(let id): "FuzzError(\(id)) (the stored error)"
        case .unexpected(let text): "unexpected: \(text)"
        }
    }
}

extension Outcome: Equatable {
    // Written out (not derived) so byte arrays compare with memcmp: derived equality compares
    // element by element, each comparison traced by the coverage instrumentation.
    static func == (lhs: Outcome, rhs: Outcome) -> Bool {
        switch (lhs, rhs) {
        case (.bytes(let left), .bytes(let right)): sameBytes(left, right)
        case (.incomplete(let left, let leftExpected), .incomplete(let right, let rightExpected)):
            leftExpected == rightExpected && sameBytes(left, right)
        case (.endOfLines, .endOfLines), (.readInProgress, .readInProgress), (.cancelled, .cancelled): true
        case (.limitOverrun(let left, let leftFound), .limitOverrun(let right, let rightFound)):
            left == right && leftFound == rightFound
        case (.invalidArgument(let left), .invalidArgument(let right)): left == right
        case (.stored(let left), .stored(let right)): left == right
        case (.unexpected(let left), .unexpected(let right)): left == right
        default: false
        }
    }
}

/// Whether two byte buffers hold the same bytes (memcmp: see `Outcome.==`).
func sameBytes(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Bool {
    left.count == right.count && (left.count == 0 || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0)
}

func sameBytes(_ left: [UInt8], _ right: [UInt8]) -> Bool {
    left.withUnsafeBytes { left in right.withUnsafeBytes { right in sameBytes(left, right) } }
}

func sameBytes(_ left: Bytes, _ right: [UInt8]) -> Bool {
    left.withUnsafeBytes { left in right.withUnsafeBytes { right in sameBytes(left, right) } }
}

/// asyncio's `StreamReader` semantics over a plain byte array, as the spec
/// (docs/asyncio-mapping.md, shared spec streams-api.md) adapts them to Swift.
///
/// Where the Swift API deliberately differs from asyncio, the model follows the spec:
/// - a second read while one waits throws `readInProgress` even when it could finish at once
///   (asyncio raises only once the second read would wait);
/// - the stored error is checked on every attempt, also after a wait that data ended
///   (asyncio checks it on entry and through the waiter);
/// - `read(-1)` waits for EOF without consuming (asyncio gathers `limit`-sized blocks as they
///   come), so a cancelled or failed `read(-1)` leaves every byte in place;
/// - `read(n)` returns all `n` when buffered: standalone readers hold heap chunks, for which the
///   library joins as asyncio does (its receive-buffer exception does not arise here).
///
/// The model is stateless between attempts of one read: asyncio's `readuntil` keeps a search
/// offset across waits, but no separator can start before that offset (everything before it was
/// searched), so searching from the start finds the same match and the same overrun.
struct ReferenceReader {
    let limit: Int
    private var storage: [UInt8] = []
    private var start = 0
    private(set) var eof = false
    private(set) var exception: Int?
    /// Where a readUntil with these separators may resume its search: no match starts before
    /// `from` (asyncio's `offset`). Only a shortcut, the model's answers do not depend on it; it
    /// spares the repeated scans of a long buffer on every wake-up of a waiting read. Cleared
    /// whenever bytes are consumed.
    private var searched: (separators: [[UInt8]], from: Int)?

    init(limit: Int) {
        self.limit = limit
    }

    var count: Int { storage.count - start }
    var atEOF: Bool { eof && count == 0 }
    var contents: ArraySlice<UInt8> { storage[start...] }

    mutating func feed(_ data: [UInt8]) {
        storage += data
    }

    mutating func feedEOF() {
        eof = true
    }

    mutating func setException(_ id: Int) {
        exception = id
    }

    private mutating func take(_ n: Int) -> [UInt8] {
        let n = min(n, count)
        let result = Array(storage[start..<(start + n)])
        drop(n)
        return result
    }

    private mutating func drop(_ n: Int) {
        if n > 0 { searched = nil }
        start += min(n, count)
        if start == storage.count {
            storage.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 4096 && start * 2 > storage.count {
            storage.removeFirst(start)
            start = 0
        }
    }

    // MARK: Reads

    /// The result of the checks a read makes before it may wait (its arguments, and `n == 0`);
    /// nil when the read goes on to wait for data.
    func precheck(_ operation: ReadOperation) -> Outcome? {
        switch operation {
        case .read(0):
            if let exception { return .stored(id: exception) }
            return .bytes([])
        case .readExactly(let n) where n < 0:
            return .invalidArgument("readexactly size can not be less than zero")
        case .readExactly(0):
            if let exception { return .stored(id: exception) }
            return .bytes([])
        case .readUntil(let separators, _):
            guard !separators.isEmpty else {
                return .invalidArgument("Separator should contain at least one element")
            }
            if separators.contains(where: \.isEmpty) {
                return .invalidArgument("Separator should be at least one-byte string")
            }
            return nil
        default:
            return nil
        }
    }

    /// One attempt of a read past its precheck: its outcome (consuming what it consumes), or nil
    /// when it has to wait for more data.
    mutating func attempt(_ operation: ReadOperation) -> Outcome? {
        if let exception { return .stored(id: exception) }
        switch operation {
        case .read(let n) where n < 0:
            return eof ? .bytes(take(count)) : nil
        case .read(let n):
            guard count > 0 || eof else { return nil }
            return .bytes(take(n))
        case .readExactly(let n):
            if count >= n { return .bytes(take(n)) }
            guard eof else { return nil }
            return .incomplete(partial: take(count), expected: n)
        case .readUntil(let separators, _):
            return readUntil(separators)
        case .readLine:
            return readLine()
        case .nextLine:
            guard let line = readLine() else { return nil }
            return line == .bytes([]) ? .endOfLines : line
        }
    }

    /// asyncio `readline`: `readuntil(b'\n')`, with the partial line at EOF as its result, and on
    /// an overrun the line dropped through its newline (or the whole buffer when none is there).
    private mutating func readLine() -> Outcome? {
        let result = readUntil([[0x0A]])
        switch result {
        case .incomplete(let partial, _)?:
            return .bytes(partial)
        case .limitOverrun(let consumed, _)?:
            if consumed < count && storage[start + consumed] == 0x0A {
                drop(consumed + 1)
            } else {
                drop(count)
            }
            return result
        default:
            return result
        }
    }

    /// asyncio 3.13 `readuntil` with one or more separators: the match that ends first (among
    /// matches ending at the same place, the shortest separator's); LimitOverrunError (nothing
    /// consumed) when it starts beyond the limit or none is found within it; IncompleteReadError
    /// (everything consumed) at EOF.
    private mutating func readUntil(_ separators: [[UInt8]]) -> Outcome? {
        // Stable: equal lengths keep their order (which then cannot matter: two different
        // separators of one length never end at the same place).
        let sorted = separators.enumerated().sorted { ($0.element.count, $0.offset) < ($1.element.count, $1.offset) }
            .map(\.element)
        let shortest = sorted.first!.count
        let longest = sorted.last!.count
        if count >= shortest {
            let from = searched.flatMap { $0.separators == sorted ? $0.from : nil } ?? 0
            var best: (start: Int, end: Int)?
            for separator in sorted {
                if let found = firstIndex(of: separator, from: from), found + separator.count < (best?.end ?? Int.max) {
                    best = (found, found + separator.count)
                }
            }
            if let best {
                if best.start > limit {
                    return .limitOverrun(consumed: best.start, found: true)
                }
                return .bytes(take(best.end))
            }
            let offset = max(0, count + 1 - longest)
            searched = (sorted, offset)
            if offset > limit {
                return .limitOverrun(consumed: offset, found: false)
            }
        }
        if eof {
            return .incomplete(partial: take(count), expected: nil)
        }
        return nil
    }

    /// The first position at or after `from` (counted from the start of the buffer) where
    /// `separator` begins.
    private func firstIndex(of separator: [UInt8], from: Int) -> Int? {
        guard separator.count <= count - from else { return nil }
        // memchr finds candidates (the C library is not instrumented); the rest of a separator (at
        // most three bytes) is compared here, not with memcmp, whose interception by libFuzzer
        // costs far more per call than the comparison.
        return storage.withUnsafeBytes { whole in
            let base = whole.baseAddress! + start
            let last = count - separator.count
            var from = from
            while from <= last {
                guard let hit = memchr(base + from, Int32(separator[0]), last - from + 1) else { return nil }
                let position = UnsafeRawPointer(hit) - base
                var matched = 1
                while matched < separator.count && whole[start + position + matched] == separator[matched] {
                    matched += 1
                }
                if matched == separator.count { return position }
                from = position + 1
            }
            return nil
        }
    }
}
