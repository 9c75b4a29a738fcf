/// The stream ended before a read got what it asked for (asyncio `IncompleteReadError`).
public struct IncompleteReadError: Error, Sendable, CustomStringConvertible {
    /// The bytes read before the end of the stream.
    public let partial: Bytes
    /// How many bytes were expected; nil when the read looked for a separator.
    public let expected: Int?

    public init(partial: Bytes, expected: Int?) {
        self.partial = partial
        self.expected = expected
    }

    public var description: String {
        let wanted = expected.map(String.init) ?? "undefined"
        return "\(partial.count) bytes read on a total of \(wanted) expected bytes"
    }
}

/// A separator was not found within the reader's limit (asyncio `LimitOverrunError`).
public struct LimitOverrunError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    /// How many bytes to consume to get past the data that overran the limit.
    public let consumed: Int

    public init(message: String, consumed: Int) {
        self.message = message
        self.consumed = consumed
    }

    public var description: String { message }
}
