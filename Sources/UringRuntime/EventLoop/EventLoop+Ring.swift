import Glibc
import Logging
import UringRing

extension EventLoop {
    /// Whether the loop can do I/O, readable from any thread.
    enum Availability {
        case ready
        /// No ring: `error` says why. A `retryable` cause (descriptors, memory) is tried again when
        /// I/O asks, at most once per ``retryInterval`` after `since`.
        case unavailable(StreamError, retryable: Bool, since: ContinuousClock.Instant)
        /// The loop has shut down.
        case stopped
    }

    /// How long a loop waits before making a ring again after a transient failure.
    static let retryInterval = Duration.seconds(1)

    /// Makes the eventfd, the ring and the receive-buffer pool; on the loop thread. Returns why it
    /// failed (everything made so far is released then), or nil.
    func setUpRing() -> StreamError? {
        assertInEventLoopOrStarting()
        let fd = makeWakeDescriptor()
        guard fd >= 0 else {
            let code = errno
            let error = StreamError.system(errno: code, operation: "eventfd")
            logger.warning(
                "event loop cannot do I/O: eventfd failed; it runs tasks without a ring",
                metadata: ["error": "\(error)"])
            availability.withLock {
                $0 = .unavailable(error, retryable: RingError.transientErrors.contains(code), since: .now)
            }
            return error
        }
        do throws(RingError) {
            let ring = try makeRing()
            bufferPool = try ProvidedBufferPool(
                ring: ring, group: 0, bufferCount: configuration.receiveBufferCount,
                bufferSize: configuration.receiveBufferSize, incremental: configuration.incrementalReceiveBuffers)
            self.ring = ring
            useReceiveBundles = configuration.receiveBundles && ring.features.receiveBundles
            zeroCopySendThreshold = ring.features.zeroCopySend ? configuration.zeroCopySendThreshold : nil
            multishotReceiveLimit = UInt32(configuration.multishotReceiveLimit)
        } catch {
            close(fd)
            ring = nil
            bufferPool = nil
            let failure = StreamError(error)
            logger.warning(
                "event loop cannot do I/O: io_uring set-up failed; it runs tasks without a ring",
                metadata: ["error": "\(failure)", "retryable": "\(error.isTransient)"])
            availability.withLock { $0 = .unavailable(failure, retryable: error.isTransient, since: .now) }
            return failure
        }
        // Under the inbox lock: other threads read it there to wake the loop.
        setWakeDescriptor(fd)
        recordBackend(ring)
        availability.withLock { $0 = .ready }
        return nil
    }

    /// The loop's state is made on its own thread, before `current` is set there.
    private func assertInEventLoopOrStarting() {
        assert(EventLoop.current == nil || inEventLoop, "ring set-up must run on event loop \(id)")
    }

    /// Why this loop cannot do I/O now, or nil when it can (from any thread).
    package var unavailable: StreamError? {
        switch availability.withLock({ $0 }) {
        case .ready: return nil
        case .unavailable(let error, _, _): return error
        case .stopped: return Self.stoppedError(id)
        }
    }

    static func stoppedError(_ id: Int) -> StreamError {
        .system(errno: ESHUTDOWN, operation: "I/O on event loop \(id), which has shut down")
    }

    /// Makes sure this loop can do I/O, making its ring again when an earlier attempt failed for
    /// want of descriptors or memory (at most once a second); from any thread.
    ///
    /// - Throws: ``StreamError/ioUringUnavailable(_:)`` naming the cause and the fix, the eventfd's
    ///   error, or ``StreamError/system(errno:operation:)`` with `ESHUTDOWN` on a stopped loop.
    package func ensureRing() async throws(StreamError) {
        switch availability.withLock({ $0 }) {
        case .ready: return
        case .stopped: throw Self.stoppedError(id)
        case .unavailable(let error, let retryable, let since):
            guard retryable, ContinuousClock.now - since >= Self.retryInterval else { throw error }
        }
        let failure: StreamError? = await withUnsafeContinuation { continuation in
            execute {
                // Another caller's retry may have won meanwhile; a stopped loop makes no ring.
                switch self.availability.withLock({ $0 }) {
                case .ready: continuation.resume(returning: nil)
                case .stopped: continuation.resume(returning: Self.stoppedError(self.id))
                case .unavailable(let error, let retryable, let since):
                    if self.isStopping || !retryable || ContinuousClock.now - since < Self.retryInterval {
                        continuation.resume(returning: error)
                    } else {
                        let failure = self.setUpRing()
                        if failure == nil {
                            self.logger.notice("event loop set up its io_uring on a retry")
                            self.armWake()
                        }
                        continuation.resume(returning: failure)
                    }
                }
            }
        }
        if let failure { throw failure }
    }
}
