/// Every address of a host was tried and the attempts did not all fail the same way.
///
/// When every attempt fails with the same ``StreamError``, that error is thrown instead, so
/// `catch StreamError.connectionRefused` works for a name with several addresses.
///
/// Corresponds to asyncio's `OSError('Multiple exceptions: ...')` from `create_connection`
/// (an `ExceptionGroup` with `all_errors=True`).
public struct ConnectionAttemptsError: Error, Sendable, CustomStringConvertible {
    /// Each address tried and why it failed, in the order the attempts started.
    public let attempts: [(address: SocketAddress, error: StreamError)]

    public init(attempts: [(address: SocketAddress, error: StreamError)]) {
        self.attempts = attempts
    }

    public var description: String {
        "Multiple exceptions: " + attempts.map { "\($0.address): \($0.error)" }.joined(separator: ", ")
    }

    /// What a failed connection to several addresses throws: the one error when all agree,
    /// else every error together.
    package static func combining(_ attempts: [(address: SocketAddress, error: StreamError)]) -> any Error {
        guard let first = attempts.first?.error else {
            return StreamError.invalidArgument("no address to connect to")
        }
        if attempts.allSatisfy({ $0.error == first }) { return first }
        return ConnectionAttemptsError(attempts: attempts)
    }
}
