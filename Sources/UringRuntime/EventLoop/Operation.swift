import Glibc
import UringRing

/// A one-shot operation a task awaits: connect, accept, a timeout. Its completion resumes the task
/// on the loop; task cancellation submits `IORING_OP_ASYNC_CANCEL` and the task still waits for the
/// operation's own completion, so memory the operation uses outlives it.
final class PendingOperation: CompletionTarget {
    private var continuation: UnsafeContinuation<Int32, Never>?
    private(set) var userData: UInt64 = 0
    private var inFlight = false

    /// Not weak: the loop calls `complete` and so is alive whenever it is read, and a weak
    /// reference would give every operation a side table (which LeakSanitizer, unable to follow
    /// the refcount field's encoded pointer, reports as leaked).
    private unowned(unsafe) var loop: EventLoop?

    package override func complete(_ completion: Completion, tag: UInt64) {
        inFlight = false
        loop?.pendingOperations[ObjectIdentifier(self)] = nil
        continuation.take()?.resume(returning: completion.result)
    }

    /// The ring failed and no completion will come: resumes the waiting task with `-ESHUTDOWN`.
    func abandon() {
        inFlight = false
        continuation.take()?.resume(returning: -ESHUTDOWN)
    }

    func cancel(on loop: EventLoop) {
        guard inFlight else { return }
        loop.submitIgnoringResult(.cancel(target: userData))
    }

    fileprivate func start(_ submission: Submission, on loop: EventLoop, continuation: UnsafeContinuation<Int32, Never>)
    {
        self.continuation = continuation
        inFlight = true
        self.loop = loop
        loop.pendingOperations[ObjectIdentifier(self)] = self
        userData = loop.submit(submission, target: self, tag: 0)
    }
}

extension EventLoop {
    /// Submits `submission` and waits for its completion; returns its result (a negative errno on
    /// failure, `-ECANCELED` when the task was cancelled while it waited, `-ESHUTDOWN` when the
    /// ring failed meanwhile: ``ringFailure`` says why). On the loop thread only.
    func perform(_ submission: Submission) async -> Int32 {
        precondition(inEventLoop, "perform must run on its loop")
        if Task.isCancelled || isStopping { return -ECANCELED }
        let operation = PendingOperation()
        // Only touched on the loop: the cancel handler merely forwards it there.
        let handle = UncheckedOperation(operation)
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { continuation in
                handle.operation.start(submission, on: self, continuation: continuation)
            }
        } onCancel: {
            // Any thread: the cancel request itself must come from the loop thread (SINGLE_ISSUER).
            self.execute { handle.operation.cancel(on: self) }
        }
    }

    /// Suspends the calling task for `duration` on this loop's timer (`IORING_OP_TIMEOUT`, or the
    /// epoll backend's `epoll_wait` timeout).
    ///
    /// - Parameter duration: How long to wait.
    /// - Throws: `CancellationError` when the task is cancelled first;
    ///   ``StreamError/ioUringUnavailable(_:)`` on a loop without io_uring.
    ///
    /// Corresponds to asyncio `asyncio.sleep(delay)`; unlike `Task.sleep`, the task stays on the loop.
    public func sleep(for duration: Duration) async throws {
        try await ensureRing()
        if !inEventLoop {
            try await withTaskExecutorPreference(self) { try await self.sleep(for: duration) }
            return
        }
        let timespec = Self.makeTimespec(max(duration, .zero))
        defer { timespec.deallocate() }
        let result = await perform(.timeout(timespec: UnsafeMutableRawPointer(timespec)))
        if result == -ECANCELED { throw CancellationError() }
        if result == -ESHUTDOWN { throw ringFailure }
    }

    /// `duration` as the kernel's `struct __kernel_timespec` (seconds, nanoseconds); the caller
    /// deallocates it.
    static func makeTimespec(_ duration: Duration) -> UnsafeMutablePointer<Int64> {
        let timespec = UnsafeMutablePointer<Int64>.allocate(capacity: 2)
        let (seconds, attoseconds) = duration.components
        timespec[0] = seconds
        timespec[1] = attoseconds / 1_000_000_000
        return timespec
    }

    /// Why an operation ended with `-ESHUTDOWN`: the ring's failure, or the loop's shutdown.
    var ringFailure: StreamError { unavailable ?? Self.stoppedError(id) }
}

/// Carries an operation into a `@Sendable` cancel handler.
struct UncheckedOperation: @unchecked Sendable {
    // Safe: the handler only forwards it to the loop thread, where all its state lives.
    let operation: PendingOperation
    init(_ operation: PendingOperation) { self.operation = operation }
}
