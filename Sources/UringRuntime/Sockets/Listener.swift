import Glibc
import Logging
import UringRing

/// A listening socket that accepts with one multishot accept and hands each new descriptor to
/// `onAccept`, on its loop's thread. Corresponds to asyncio's accept loop in `_accept_connection`.
package final class Listener: CompletionTarget, LoopResource, @unchecked Sendable {
    // Sendable: every mutable field is touched only on `loop`'s thread.
    package let loop: EventLoop
    package let descriptor: ListeningDescriptor
    private let onAccept: (Int32) -> Void
    private let onClosed: () -> Void
    private let logger: Logger
    private var armed = false
    private var stopping = false
    private var closed = false
    private var acceptUserData: UInt64 = 0
    private var retryPending = false
    /// Unexpected accept errors in a row: each waits longer before the accept is armed again.
    private var unexpectedErrors = 0

    /// `onAccept` runs on `loop`'s thread for every accepted descriptor, which it then owns;
    /// `onClosed` once the listener has closed its descriptor (the socket is gone then). Failed
    /// accepts and back-offs go to `logger`.
    package init(
        loop: EventLoop, descriptor: ListeningDescriptor, logger: Logger, onAccept: @escaping (Int32) -> Void,
        onClosed: @escaping () -> Void
    ) {
        self.logger = logger
        self.loop = loop
        self.descriptor = descriptor
        self.onAccept = onAccept
        self.onClosed = onClosed
    }

    /// Starts accepting; on the loop thread. A listener whose loop stopped, or whose descriptor
    /// was released meanwhile, closes instead.
    package func start() {
        loop.assertInEventLoop()
        guard !armed, !stopping, !closed else { return }
        guard !loop.isStopping else { return close() }
        let started = descriptor.startAccepting { fd in
            acceptUserData = loop.submit(.accept(fd: fd, multishot: true), target: self, tag: 0)
        }
        guard started else { return close() }
        loop.register(self)
        armed = true
    }

    /// Stops accepting and closes the socket once the accept is gone; on the loop thread.
    package func close() {
        loop.assertInEventLoop()
        guard !closed, !stopping else { return }
        stopping = true
        if armed { loop.submitIgnoringResult(.cancel(target: acceptUserData)) }
        finishIfIdle()
    }

    private func finishIfIdle() {
        guard stopping, !armed, !closed else { return }
        closed = true
        descriptor.closeNumber()
        loop.unregister(self)
        onClosed()
    }

    package override func complete(_ completion: Completion, tag: UInt64) {
        if !completion.hasMore {
            armed = false
            descriptor.acceptEnded()
        }
        let result = completion.result
        if result >= 0 {
            unexpectedErrors = 0
            if stopping {
                Glibc.close(result)
            } else {
                onAccept(result)
            }
        }
        guard !completion.hasMore else { return }
        if stopping {
            finishIfIdle()
            return
        }
        switch -result {
        case EINVAL, EBADF, ENOTSOCK:
            // The socket no longer listens: Server.close released it from another thread before
            // its close reached this loop. Re-arming would spin on the same error until then.
            close()
        case ECANCELED:
            // Cancelled without our asking (the loop is stopping): done.
            close()
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            // Out of descriptors or memory: retry after a second, as asyncio does, instead of
            // spinning; asyncio logs this at error ("socket.accept() out of system resource").
            loop.counters.acceptErrors += 1
            logger.error(
                "accept failed: out of system resources; accepting again in 1 s",
                metadata: [
                    "error": "\(StreamError.system(errno: -result, operation: "accept"))", "listener": "\(address)",
                ])
            retryLater(after: .seconds(1))
        case let error where error > 0:
            // Anything else (a connection that failed while queued: ECONNABORTED, EPROTO, EPERM
            // from a firewall...) is about one connection: accept again, but back off when it
            // keeps coming, so a persistent error cannot make the loop spin.
            loop.counters.acceptErrors += 1
            unexpectedErrors += 1
            let delay =
                unexpectedErrors < 3 ? nil : Duration.milliseconds(min(1000, 10 << min(unexpectedErrors - 3, 7)))
            logger.error(
                "accept failed",
                metadata: [
                    "error": "\(StreamError.system(errno: error, operation: "accept"))", "listener": "\(address)",
                    "retry-in": "\(delay ?? .zero)",
                ])
            if let delay { retryLater(after: delay) } else { start() }
        default:
            // The kernel ended the multishot accept on its own (a full completion queue): again.
            start()
        }
    }

    func abortForShutdown() {
        close()
    }

    func abortAfterRingFailure(_ error: StreamError) {
        // The accept will never complete: it is over as far as this side knows.
        armed = false
        stopping = true
        finishIfIdle()
    }

    /// The listening address for log text (only on the error path: it takes a system call).
    private var address: String {
        let local = descriptor.withOpenDescriptor { SocketDescriptor.localAddress(of: $0) } ?? nil
        return local.map { "\($0)" } ?? "closed"
    }

    private func retryLater(after delay: Duration) {
        guard !retryPending else { return }
        retryPending = true
        Task(executorPreference: loop) { [self] in
            try? await loop.sleep(for: delay)
            retryPending = false
            start()
        }
    }
}
