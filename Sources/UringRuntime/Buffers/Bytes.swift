import Glibc

/// Bytes returned by a read: an immutable, `Sendable` view of memory that may point straight into a
/// receive buffer of the event loop (no copy), or into heap storage when bytes had to be joined.
///
/// Keeping a `Bytes` keeps its memory alive; a receive buffer goes back to the kernel when the last
/// `Bytes` referring to it is gone. Compare with `[UInt8]` or a string literal: `bytes == "abc"`.
public struct Bytes: @unchecked Sendable {
    // Sendable: the memory behind `base` is never written while any Bytes refers to it (receive
    // buffers are recycled only once their owner is uniquely referenced by the pool; heap storage is
    // written once, before the first Bytes exists), and `owner` is only retained and released.
    @usableFromInline let owner: AnyObject?
    @usableFromInline let base: UnsafeRawPointer?
    /// The number of bytes.
    public let count: Int

    @inlinable
    init(owner: AnyObject?, base: UnsafeRawPointer?, count: Int) {
        self.owner = owner
        self.base = base
        self.count = count
    }

    /// Empty bytes (asyncio `b''`).
    public init() {
        self.init(owner: nil, base: nil, count: 0)
    }

    /// A copy of `bytes`.
    public init(_ bytes: some Sequence<UInt8>) {
        // One copy from contiguous memory (arrays, native strings' UTF-8, raw buffers); only other
        // sequences are gathered into an array first.
        if let copy = bytes.withContiguousStorageIfAvailable({ Bytes(copying: UnsafeRawBufferPointer($0)) }) {
            self = copy
        } else {
            self = Array(bytes).withUnsafeBytes { Bytes(copying: $0) }
        }
    }

    /// A copy of the bytes in `memory`.
    init(copying memory: UnsafeRawBufferPointer) {
        guard memory.count > 0 else {
            self.init()
            return
        }
        let storage = ByteStorage.make(count: memory.count) { target in target.copyMemory(from: memory) }
        self.init(owner: storage, base: storage.baseAddress, count: memory.count)
    }

    /// The UTF-8 bytes of `string`.
    public init(_ string: String) {
        self.init(string.utf8)
    }

    /// Joins `chunks` into one contiguous copy.
    package static func joining(_ chunks: some Collection<Bytes>, totalCount: Int) -> Bytes {
        guard totalCount > 0 else { return Bytes() }
        let storage = ByteStorage.make(count: totalCount) { target in
            var offset = 0
            for chunk in chunks where chunk.count > 0 {
                let n = Swift.min(chunk.count, totalCount - offset)
                (target.baseAddress! + offset).copyMemory(from: chunk.base!, byteCount: n)
                offset += n
                if offset == totalCount { break }
            }
        }
        return Bytes(owner: storage, base: storage.baseAddress, count: totalCount)
    }

    /// Whether these bytes lie in one of the loop's receive buffers (rather than in heap storage).
    package var isReceiveBufferSlice: Bool { owner is ReceiveBufferLease }

    /// These bytes followed by `next`, without copying, when `next` starts right where these end
    /// in the same receive buffer (consecutive receives of one connection into an incremental
    /// buffer); nil otherwise.
    package func extended(by next: Bytes) -> Bytes? {
        guard let owner, owner is ReceiveBufferLease, owner === next.owner, let base, base + count == next.base
        else { return nil }
        return Bytes(owner: owner, base: base, count: count + next.count)
    }

    /// The bytes `range` of these bytes, sharing their memory.
    public func bytes(_ range: Range<Int>) -> Bytes {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "Bytes range out of bounds")
        guard !range.isEmpty else { return Bytes() }
        return Bytes(owner: owner, base: base! + range.lowerBound, count: range.count)
    }

    /// Calls `body` with the bytes' memory.
    @inlinable
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withExtendedLifetime(owner) { () throws(E) -> R in
            try body(UnsafeRawBufferPointer(start: base, count: count))
        }
    }

    /// The bytes as a `Span`.
    public var span: Span<UInt8> {
        @_lifetime(borrow self)
        get {
            let buffer = UnsafeBufferPointer(start: base?.assumingMemoryBound(to: UInt8.self), count: count)
            return _overrideLifetime(buffer.span, borrowing: self)
        }
    }
}

extension Bytes: RandomAccessCollection {
    public typealias Index = Int
    public typealias Element = UInt8

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }

    @inlinable
    public subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < count, "Bytes index out of range")
        return base.unsafelyUnwrapped.load(fromByteOffset: position, as: UInt8.self)
    }

    public func withContiguousStorageIfAvailable<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        try withExtendedLifetime(owner) {
            try body(UnsafeBufferPointer(start: base?.assumingMemoryBound(to: UInt8.self), count: count))
        }
    }

    /// Copies the bytes into `buffer` with one memory copy: what `Array(bytes)`, `array += bytes`
    /// and `append(contentsOf:)` use. The standard library's default walks the iterator one byte
    /// at a time, which unoptimised code ran at seconds per 16 MiB.
    public func _copyContents(initializing buffer: UnsafeMutableBufferPointer<UInt8>) -> (IndexingIterator<Bytes>, Int)
    {
        let copied = Swift.min(count, buffer.count)
        if copied > 0 {
            withExtendedLifetime(owner) {
                buffer.baseAddress!.initialize(
                    from: base.unsafelyUnwrapped.assumingMemoryBound(to: UInt8.self), count: copied)
            }
        }
        // What was not copied (when `buffer` is short) is what the returned iterator yields.
        return (bytes(copied..<count).makeIterator(), copied)
    }
}

extension Bytes: Hashable {
    public static func == (lhs: Bytes, rhs: Bytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 || lhs.base == rhs.base { return true }
        return memcmp(lhs.base!, rhs.base!, lhs.count) == 0
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public static func == (lhs: Bytes, rhs: [UInt8]) -> Bool {
        // memcmp: `elementsEqual` goes byte by byte, slow in unoptimised builds.
        guard lhs.count == rhs.count else { return false }
        guard lhs.count > 0 else { return true }
        return rhs.withUnsafeBytes { right in
            lhs.withUnsafeBytes { memcmp($0.baseAddress!, right.baseAddress!, right.count) == 0 }
        }
    }

    public static func == (lhs: [UInt8], rhs: Bytes) -> Bool { rhs == lhs }
    public static func != (lhs: Bytes, rhs: [UInt8]) -> Bool { !(lhs == rhs) }
    public static func != (lhs: [UInt8], rhs: Bytes) -> Bool { !(rhs == lhs) }
}

extension Bytes: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) {
        self.init(value)
    }
}

extension Bytes: CustomStringConvertible, CustomDebugStringConvertible {
    /// Python's `repr` of the bytes: `b'abc\n'`.
    public var description: String {
        var text = "b'"
        for byte in self {
            switch byte {
            case UInt8(ascii: "\\"): text += "\\\\"
            case UInt8(ascii: "'"): text += "\\'"
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\r"): text += "\\r"
            case UInt8(ascii: "\t"): text += "\\t"
            case 0x20..<0x7f: text.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16)
                text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return text + "'"
    }

    public var debugDescription: String { description }
}
