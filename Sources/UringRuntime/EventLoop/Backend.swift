import Logging
import UringRing

extension EventLoop {
    /// How a loop does I/O.
    ///
    /// io_uring is the fast path; epoll is the fallback where io_uring is blocked (Docker's and
    /// Kubernetes' default seccomp profiles, the `kernel.io_uring_disabled` sysctl, gVisor). Both
    /// give the same streams semantics; docs/benchmarks.md gives what the fallback costs.
    ///
    /// asyncio has the same split in its selector event loop (epoll) and, in other libraries,
    /// proactor-style loops; there is no asyncio API for choosing.
    public enum Backend: String, Sendable, CaseIterable {
        /// io_uring when it works here (set-up, opcode probe, a provided-buffer ring), otherwise
        /// epoll; decided by each loop as it starts.
        case automatic
        /// io_uring only: where it is blocked, I/O throws ``StreamError/ioUringUnavailable(_:)``.
        case ioUring = "io_uring"
        /// epoll readiness, even where io_uring works (for comparing, or to sidestep a kernel's
        /// io_uring).
        case epoll
    }

    /// The backend this loop does I/O with: ``Backend/ioUring`` or ``Backend/epoll``, nil while it
    /// has none (set-up failed, or it stopped); from any thread.
    public var backend: Backend? { statistics.backend }

    /// A factory of the backend `choice` asks for; `makeIOURing` makes a checked io_uring.
    static func backendFactory(_ choice: Backend, makeIOURing: @escaping RingFactory) -> RingFactory {
        switch choice {
        case .ioUring:
            return makeIOURing
        case .epoll:
            return { () throws(RingError) -> any RingBackend in try EpollBackend() }
        case .automatic:
            return { () throws(RingError) -> any RingBackend in
                do throws(RingError) {
                    return try makeIOURing()
                } catch {
                    // Out of descriptors or memory says nothing about io_uring: the loop retries
                    // it later rather than settle for epoll for good.
                    if error.isTransient { throw error }
                    return try EpollBackend(fallbackReason: "\(StreamError(error))")
                }
            }
        }
    }

    /// Why this loop uses epoll although io_uring was allowed to be chosen, or nil; from any thread.
    package var backendFallbackReason: String? { fallbackReason.withLock { $0 } }

    /// Notes which backend `ring` is, for ``backend`` and the log line; on the loop thread.
    func recordBackend(_ ring: any RingBackend) {
        fallbackReason.withLock { $0 = (ring as? EpollBackend)?.fallbackReason }
        publishStatistics()
    }

    /// Says once, at notice, when io_uring was blocked for `loops` and epoll stands in (each loop
    /// also says which backend it uses at debug as it starts).
    static func logFallback(of loops: [EventLoop], to logger: Logger) {
        let fallbacks = loops.filter { $0.backendFallbackReason != nil }
        guard let reason = fallbacks.first?.backendFallbackReason else { return }
        logger.notice(
            "io_uring is unavailable here; UringStreams uses the epoll backend",
            metadata: ["reason": "\(reason)", "loops": "\(fallbacks.count) of \(loops.count)"])
    }
}

extension RingBackendKind {
    var backend: EventLoop.Backend {
        switch self {
        case .ioUring: return .ioUring
        case .epoll: return .epoll
        }
    }
}
