import Glibc
import UringRing

/// A listening socket that accepts with one multishot accept and hands each new descriptor to
/// `onAccept`, on its loop's thread. Corresponds to asyncio's accept loop in `_accept_connection`.
package final class Listener: CompletionTarget, LoopResource, @unchecked Sendable {
    // Sendable: every mutable field is touched only on `loop`'s thread.
    package let loop: EventLoop
    package let fileDescriptor: Int32
    private let onAccept: (Int32) -> Void
    private var armed = false
    private var stopping = false
    private var closed = false
    private var acceptUserData: UInt64 = 0
    private var retryPending = false

    /// `onAccept` runs on `loop`'s thread for every accepted descriptor, which it then owns.
    package init(loop: EventLoop, fileDescriptor: Int32, onAccept: @escaping (Int32) -> Void) {
        self.loop = loop
        self.fileDescriptor = fileDescriptor
        self.onAccept = onAccept
    }

    /// Starts accepting; on the loop thread.
    package func start() {
        precondition(loop.inEventLoop)
        guard !armed, !stopping, !loop.isStopping else { return }
        loop.register(self)
        armed = true
        acceptUserData = loop.submit(.accept(fd: fileDescriptor, multishot: true), target: self, tag: 0)
    }

    /// Stops accepting and closes the socket once the accept is gone; on the loop thread.
    package func close() {
        precondition(loop.inEventLoop)
        guard !closed, !stopping else { return }
        stopping = true
        if armed { loop.submitIgnoringResult(.cancel(target: acceptUserData)) }
        finishIfIdle()
    }

    private func finishIfIdle() {
        guard stopping, !armed, !closed else { return }
        closed = true
        Glibc.close(fileDescriptor)
        loop.unregister(self)
    }

    package override func complete(_ completion: Completion, tag: UInt64) {
        if !completion.hasMore { armed = false }
        let result = completion.result
        if result >= 0 {
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
            // The socket no longer listens: Server.close shuts it down from any thread before its
            // close reaches this loop. Re-arming would spin on the same error until then.
            return
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            // Out of descriptors or memory: retry after a second, as asyncio does, instead of spinning.
            retryLater()
        default:
            start()
        }
    }

    func abortForShutdown() {
        close()
    }

    private func retryLater() {
        guard !retryPending else { return }
        retryPending = true
        Task(executorPreference: loop) { [self] in
            try? await loop.sleep(for: .seconds(1))
            retryPending = false
            start()
        }
    }
}
