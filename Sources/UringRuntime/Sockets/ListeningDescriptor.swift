import Glibc
import UringRing

/// A listening socket's descriptor number, shared by the server (any thread) and its listener
/// (the loop thread), used only while owned.
///
/// Closing from another thread while an accept that names the number may still reach the kernel
/// would let that accept land on whatever file takes the number next. So ``release()`` stops the
/// socket and drops it at once (asyncio's `close()` closes listening sockets before it returns)
/// but, when an accept may be in flight, keeps the number reserved by putting a placeholder behind
/// it; the listener closes the number on its loop once its accept is over.
package final class ListeningDescriptor: Sendable {
    private enum State {
        /// The socket, and whether an accept submitted with its number may still be in flight.
        case open(Int32, accepting: Bool)
        /// The socket is gone; the number holds a placeholder until the listener closes it.
        case reserved(Int32)
        case closed
    }

    private let state: Locked<State>

    package init(_ fileDescriptor: Int32) {
        state = Locked(.open(fileDescriptor, accepting: false))
    }

    /// The number while the socket is open (for reading its address, or `listen`), or nil.
    package func withOpenDescriptor<R>(_ body: (Int32) throws -> R) rethrows -> R? {
        try state.withLock { state in
            guard case .open(let fd, _) = state else { return nil }
            return try body(fd)
        }
    }

    /// Calls `prepare` with the number and marks an accept in flight, while the socket is open;
    /// returns whether it did. The accept's submission is prepared under the lock, so a release
    /// that comes later knows to keep the number reserved.
    func startAccepting(_ prepare: (Int32) -> Void) -> Bool {
        state.withLock { state in
            guard case .open(let fd, _) = state else { return false }
            prepare(fd)
            state = .open(fd, accepting: true)
            return true
        }
    }

    /// The accept is over (its last completion arrived).
    func acceptEnded() {
        state.withLock { state in
            if case .open(let fd, _) = state { state = .open(fd, accepting: false) }
        }
    }

    /// Stops accepting and lets go of the socket now, from any thread: it is shut down and closed,
    /// or (with an accept in flight) replaced by a placeholder until ``closeNumber()``.
    package func release() {
        state.withLock { state in
            guard case .open(let fd, let accepting) = state else { return }
            _ = shutdown(fd, Int32(SHUT_RDWR))
            if accepting, Self.placeholder >= 0, SystemSupport.replaceDescriptor(fd, with: Self.placeholder) == fd {
                state = .reserved(fd)
            } else if accepting {
                // No placeholder could be made: the number stays with the stopped socket until
                // the listener closes it.
                state = .reserved(fd)
            } else {
                close(fd)
                state = .closed
            }
        }
    }

    /// Closes the number, whatever it holds now; once nothing can reach the kernel with it.
    func closeNumber() {
        state.withLock { state in
            switch state {
            case .open(let fd, _), .reserved(let fd): close(fd)
            case .closed: break
            }
            state = .closed
        }
    }

    /// Whether the number has been closed.
    package var isClosed: Bool {
        state.withLock { if case .closed = $0 { return true } else { return false } }
    }

    /// A descriptor of /dev/null to hold released numbers (an accept on it fails at once).
    private static let placeholder: Int32 = open("/dev/null", O_RDONLY | O_CLOEXEC)
}
