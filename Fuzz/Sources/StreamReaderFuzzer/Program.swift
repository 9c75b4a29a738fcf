/// What one fuzz input means: a reader limit and a list of steps, decoded from the bytes front to
/// back. Every byte string decodes to some program (past the end of the input every byte reads as
/// 0), so libFuzzer's mutations never produce an input that is rejected.
struct Program {
    /// How the reader is made.
    enum Limit: CustomStringConvertible {
        /// `try StreamReader(limit:)` with a valid limit.
        case value(Int)
        /// `StreamReader()`: the default limit, 65 536.
        case standard
        /// `try StreamReader(limit:)` with `limit <= 0`, which must throw; the program then runs
        /// on a reader with the valid limit `fallback`.
        case invalid(Int, fallback: Int)

        var description: String {
            switch self {
            case .value(let limit): "limit \(limit)"
            case .standard: "StreamReader() (limit 65536)"
            case .invalid(let limit, let fallback): "limit \(limit) (must throw), then limit \(fallback)"
            }
        }
    }

    /// How a feed hands its bytes to `feedData`, since each way takes another path into the
    /// reader's chunk queue.
    enum FeedStyle: CustomStringConvertible {
        /// One `[UInt8]` (copied into a `Bytes`).
        case array
        /// One `Bytes`, fed as `pieces` consecutive slices of it (kept without copying).
        case slices(pieces: Int)
        /// A lazy collection without contiguous storage (gathered into an array first).
        case lazy

        var description: String {
            switch self {
            case .array: "array"
            case .slices(let pieces): "\(pieces) Bytes slices"
            case .lazy: "lazy collection"
            }
        }
    }

    enum Step: CustomStringConvertible {
        /// `feedData`; `deferRun` leaves a woken read queued (not run) until the next step that
        /// runs the queue, so later events land between its wake-up and its next attempt.
        case feed([UInt8], style: FeedStyle, deferRun: Bool)
        case feedEOF(deferRun: Bool)
        case setException(id: Int, deferRun: Bool)
        /// Starts a read in a new task; `preCancelled` cancels that task before it first runs.
        case read(ReadOperation, preCancelled: Bool)
        /// Cancels the task of the read that is waiting, if any.
        case cancel(deferRun: Bool)
        /// Runs every queued job.
        case run

        var description: String {
            switch self {
            case .feed(let data, let style, let deferRun):
                "feedData(\(describe(data))) as \(style)\(deferRun ? ", run deferred" : "")"
            case .feedEOF(let deferRun): "feedEOF()\(deferRun ? ", run deferred" : "")"
            case .setException(let id, let deferRun):
                "setException(FuzzError(\(id)))\(deferRun ? ", run deferred" : "")"
            case .read(let operation, let preCancelled):
                "\(operation)\(preCancelled ? " in a task cancelled before it runs" : "")"
            case .cancel(let deferRun): "cancel the waiting read's task\(deferRun ? ", run deferred" : "")"
            case .run: "run queued jobs"
            }
        }
    }

    var limit: Limit
    var steps: [Step]

    /// The limit a valid reader gets.
    var effectiveLimit: Int {
        switch limit {
        case .value(let limit): limit
        case .standard: 65_536
        case .invalid(_, let fallback): fallback
        }
    }
}

/// One read of the public API.
enum ReadOperation: Sendable, CustomStringConvertible {
    case read(Int)
    case readLine
    case readExactly(Int)
    /// `readUntil(_:)` with one separator (`single`), else `readUntil(anyOf:)`.
    case readUntil([[UInt8]], single: Bool)
    /// `next()` of the reader's line iterator (`for try await line in reader`).
    case nextLine

    var description: String {
        switch self {
        case .read(let n): "read(\(n))"
        case .readLine: "readLine()"
        case .readExactly(let n): "readExactly(\(n))"
        case .readUntil(let separators, true): "readUntil(\(describe(separators[0])))"
        case .readUntil(let separators, false):
            "readUntil(anyOf: [\(separators.map(describe).joined(separator: ", "))])"
        case .nextLine: "lines.next()"
        }
    }
}

/// Bytes as a quoted, escaped string, long runs shortened, for failure messages.
func describe(_ bytes: [UInt8]) -> String {
    var text = "\""
    for (index, byte) in bytes.enumerated() {
        if index == 48 && bytes.count > 64 {
            text += "…(\(bytes.count - 64) more)…"
        }
        if index >= 48 && index < bytes.count - 16 && bytes.count > 64 { continue }
        switch byte {
        case 0x0A: text += "\\n"
        case 0x0D: text += "\\r"
        case 0x22: text += "\\\""
        case 0x5C: text += "\\\\"
        case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = String(byte, radix: 16)
            text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
        }
    }
    return text + "\" (\(bytes.count))"
}

/// Reads the input front to back; past its end every byte is 0.
struct InputCursor {
    private let input: UnsafeBufferPointer<UInt8>
    private var position = 0

    init(_ input: UnsafeBufferPointer<UInt8>) {
        self.input = input
    }

    var isAtEnd: Bool { position >= input.count }

    mutating func next() -> UInt8 {
        guard position < input.count else { return 0 }
        defer { position += 1 }
        return input[position]
    }

    /// Up to `count` raw bytes (fewer at the end of the input).
    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(input.count, position + count)
        defer { position = max(position, end) }
        return position < end ? Array(input[position..<end]) : []
    }
}

extension Program {
    /// Bytes a separator or fed data is likely to be made of: the line separator, its usual
    /// companion, letters that build multi-byte separators, and the extremes of the byte range.
    static let alphabet: [UInt8] = [0x0A, 0x0D, 0x61, 0x62, 0x63, 0x0A, 0x00, 0xFF]

    /// The most steps one input runs, so a huge input stays a quick execution.
    static let maxSteps = 400

    init(decoding input: UnsafeBufferPointer<UInt8>) {
        var cursor = InputCursor(input)
        let first = cursor.next()
        let high = Int(first >> 3)  // 0...31
        switch first & 7 {
        case 0, 1, 2, 3: limit = .value(1 + high)
        case 4: limit = .value(1 + high + Int(cursor.next()) * 4)
        case 5: limit = .value(Int.max - high)
        case 6: limit = .standard
        default:
            let invalid = [0, -1, Int.min, -high][high & 3]
            limit = .invalid(invalid, fallback: 1 + high)
        }
        steps = []
        while !cursor.isAtEnd && steps.count < Self.maxSteps {
            steps.append(Self.decodeStep(&cursor))
        }
    }

    private static func decodeStep(_ cursor: inout InputCursor) -> Step {
        let code = cursor.next()
        let flags = code >> 4
        let deferRun = flags & 1 != 0
        // Rarer than deferring: a pre-cancelled read is mostly a read that cannot wait.
        let preCancelled = flags & 6 == 6
        switch code & 15 {
        case 0:
            let count = Int(cursor.next())
            return .feed(cursor.take(count), style: .array, deferRun: deferRun)
        case 1:
            let count = Int(cursor.next())
            let data = cursor.take(count).map { alphabet[Int($0 & 7)] }
            return .feed(data, style: .array, deferRun: deferRun)
        case 2:
            // A run of one byte, long enough to pass the small-chunk size (512) and any small
            // limit, optionally closed by a newline, fed as slices of one Bytes.
            let length = (Int(cursor.next()) + 1) * 8
            let shape = cursor.next()
            var data = [UInt8](repeating: alphabet[Int(shape & 7)], count: length)
            if shape & 8 != 0 { data.append(0x0A) }
            return .feed(data, style: .slices(pieces: 1 + Int(shape >> 4)), deferRun: deferRun)
        case 3:
            let count = Int(cursor.next())
            let shape = cursor.next()
            let data = cursor.take(count).map { shape & 1 != 0 ? alphabet[Int($0 & 7)] : $0 }
            let style: FeedStyle = shape & 2 != 0 ? .lazy : .slices(pieces: 1 + Int(shape >> 2) % 8)
            return .feed(data, style: style, deferRun: deferRun)
        case 4: return .feedEOF(deferRun: deferRun)
        case 5: return .setException(id: Int(cursor.next()), deferRun: deferRun)
        case 6: return .read(.read(readSize(cursor.next())), preCancelled: preCancelled)
        case 7: return .read(.readLine, preCancelled: preCancelled)
        case 8: return .read(.readExactly(exactSize(cursor.next())), preCancelled: preCancelled)
        case 9: return .read(.readUntil([separator(&cursor)], single: true), preCancelled: preCancelled)
        case 10: return .read(.readUntil(separators(&cursor), single: false), preCancelled: preCancelled)
        case 11: return .cancel(deferRun: deferRun)
        case 12: return .run
        case 13: return .read(.nextLine, preCancelled: preCancelled)
        case 14: return .read(.read(-1), preCancelled: preCancelled)
        default:
            // Tiny feeds, the shape that exercises gathering of small chunks most.
            let count = Int(cursor.next() & 7)
            let data = cursor.take(count).map { alphabet[Int($0 & 7)] }
            return .feed(data, style: .array, deferRun: deferRun)
        }
    }

    private static func readSize(_ byte: UInt8) -> Int {
        switch byte {
        case 255: Int.max
        case 254: -1
        case 253: Int.min
        default: Int(byte)
        }
    }

    private static func exactSize(_ byte: UInt8) -> Int {
        switch byte {
        case 255: 100_000
        case 254: -1
        case 253: Int.max
        case 252: Int.min
        case 240..<252: (Int(byte) - 239) * 256
        default: Int(byte)
        }
    }

    /// One to four bytes, from the alphabet or raw.
    private static func separator(_ cursor: inout InputCursor) -> [UInt8] {
        let shape = cursor.next()
        let length = 1 + Int(shape & 3)
        return (0..<length).map { _ in
            let byte = cursor.next()
            return shape & 4 == 0 ? alphabet[Int(byte & 7)] : byte
        }
    }

    /// One to four separators; now and then an empty list or an empty separator (both refused).
    private static func separators(_ cursor: inout InputCursor) -> [[UInt8]] {
        let shape = cursor.next()
        var list = (0...Int(shape & 3)).map { _ in separator(&cursor) }
        if shape & 0x30 == 0x30 {
            if shape & 0x40 != 0 { list = [] } else { list.insert([], at: Int(shape >> 7)) }
        }
        return list
    }
}
