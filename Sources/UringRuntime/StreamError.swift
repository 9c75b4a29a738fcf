import Glibc
import UringRing

/// Errors of the streams API and its runtime.
public enum StreamError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A bad argument (asyncio `ValueError`).
    case invalidArgument(String)
    /// Another read is already waiting on this reader (asyncio `RuntimeError`).
    case readInProgress
    /// Writing or draining after `close()` or `writeEOF()`.
    case closed
    /// The server is closed.
    case serverClosed
    /// Another task already serves this server forever.
    case alreadyServing
    case connectionReset, connectionRefused, connectionAborted, brokenPipe, timedOut
    case tlsHandshakeFailed(String), tlsCertificateRejected(String)
    /// io_uring cannot be used here; the text names the cause and the fix.
    case ioUringUnavailable(String)
    /// A system call failed.
    case system(errno: Int32, operation: String)

    /// The error for a failed `operation` that returned `errno`.
    package static func from(errno: Int32, operation: String) -> StreamError {
        switch errno {
        case ECONNRESET: return .connectionReset
        case ECONNREFUSED: return .connectionRefused
        case ECONNABORTED: return .connectionAborted
        case EPIPE: return .brokenPipe
        case ETIMEDOUT: return .timedOut
        default: return .system(errno: errno, operation: operation)
        }
    }

    package init(_ error: RingError) {
        switch error {
        case .unavailable(let reason), .exhausted(_, let reason): self = .ioUringUnavailable(reason)
        case .system(let errno, let operation): self = .system(errno: errno, operation: operation)
        }
    }

    public var description: String {
        switch self {
        case .invalidArgument(let text): return "invalid argument: \(text)"
        case .readInProgress: return "another task is already waiting to read from this stream"
        case .closed: return "the stream is closed"
        case .serverClosed: return "the server is closed"
        case .alreadyServing: return "the server is already being served forever by another task"
        case .connectionReset: return "connection reset by peer"
        case .connectionRefused: return "connection refused"
        case .connectionAborted: return "connection aborted"
        case .brokenPipe: return "broken pipe"
        case .timedOut: return "timed out"
        case .tlsHandshakeFailed(let text): return "TLS handshake failed: \(text)"
        case .tlsCertificateRejected(let text): return "TLS certificate rejected: \(text)"
        case .ioUringUnavailable(let text): return "io_uring unavailable: \(text)"
        case .system(let errno, let operation) where errno < 0:
            // Negative codes are getaddrinfo's EAI_* values.
            return "\(operation) failed: \(String(cString: gai_strerror(errno))) (\(errno))"
        case .system(let errno, let operation):
            return "\(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }
}
