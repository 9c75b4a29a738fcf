import Glibc
import Logging
import UringRing

extension EventLoop {
    /// Runs turns until `isDone` is true after a turn or the loop is asked to stop, then finishes
    /// what is in flight (asyncio.run's ending) and tears the ring down. After this the loop never
    /// turns again: work handed to it runs as work for a stopped loop.
    func runLoop(until isDone: () -> Bool) {
        if ring != nil { armWake() }
        var failure: StreamError?
        while failure == nil, !isDone(), !isStopRequested {
            if ring != nil {
                do { try turn() } catch { failure = error }
            } else {
                turnWithoutRing()
            }
        }
        if let failure {
            ringFailed(failure)
        } else {
            finishOutstandingWork()
        }
        shutDownRing()
        closeInbox()
    }

    private func turn() throws(StreamError) {
        runQueuedWork()
        takeInbox()
        runEndOfTurnWork()

        var sleep = local.isEmpty && endOfTurn.isEmpty
        if sleep {
            if bufferPool.hasOutstanding, bufferPool.recycle() > 0 {
                resumeBufferWaiters()
            } else if !buffersWanted.isEmpty, bufferPool.available > 0 {
                // Free buffers and waiters, with nothing left to recycle: no later recycle would
                // wake them.
                resumeBufferWaiters()
            }
            sleep = local.isEmpty && endOfTurn.isEmpty
        }
        if sleep {
            publishStatistics()
            sleep = enterSleep()
        } else if bufferPool.available < bufferPool.bufferCount / 4 || !buffersWanted.isEmpty {
            if bufferPool.recycle() > 0 { resumeBufferWaiters() }
        }
        // Once stopping, everything in flight was cancelled, so waiting for it cannot hang; with
        // nothing in flight there is nothing to wait for (the wake-up read is not re-armed).
        let block = sleep && (isStopping ? operationsInFlight > 0 : !isStopRequested)
        defer { if sleep { leaveSleep() } }
        // As after a recycle above: buffers taken back re-arm the receives that wait for them.
        if bufferPool.topUp() > 0 { resumeBufferWaiters() }
        armBufferReleaseIfNeeded()
        do {
            try ring.submit(waitingFor: block ? 1 : 0)
        } catch {
            throw StreamError(error)
        }
        releaseMessageScratch()
        reapCompletions()
    }

    /// A turn of a loop that has no ring: run work, then sleep until woken.
    private func turnWithoutRing() {
        runQueuedWork()
        takeInbox()
        // Work may have made the ring (a retry): from now on the loop sleeps in it.
        guard local.isEmpty, ring == nil else { return }
        if enterSleep() && !isStopRequested {
            while sem_wait(wakeSemaphore) != 0 {}
        }
        leaveSleep()
    }

    /// What asyncio.run does with leftover tasks: every connection and listener of the loop is
    /// aborted and every operation in flight cancelled, so the tasks waiting on them resume (with
    /// EOF, an error or CancellationError) and can finish; the loop turns until nothing is left in
    /// the ring. Nothing submitted after this point reaches the kernel.
    private func finishOutstandingWork() {
        runQueuedWork()
        guard ring != nil else { return }
        beginStopping()
        for resource in Array(resources.values) { resource.abortForShutdown() }
        resources.removeAll()
        submitIgnoringResult(.cancelEverything)
        // Bounded: an operation the kernel does not cancel must not keep the thread forever.
        var turns = 0
        while operationsInFlight > 0 || !local.isEmpty || !endOfTurn.isEmpty, turns < 10_000 {
            do {
                try turn()
            } catch {
                ringFailed(error)
                return
            }
            turns += 1
        }
        runQueuedWork()
    }

    /// The ring failed beyond recovery (io_uring_enter returned a fatal error): no completion will
    /// come any more. Every connection and listener closes its descriptor now and fails what waits
    /// on it with `error`; every awaited operation resumes as cancelled. Targets the ring still
    /// references stay allocated (the kernel may touch their memory until it tears the ring down).
    private func ringFailed(_ error: StreamError) {
        logger.critical(
            "event loop stopped: its io_uring failed; its connections and listeners are aborted",
            metadata: ["error": "\(error)"])
        beginStopping()
        availability.withLock { $0 = .unavailable(error, retryable: false, since: .now) }
        leaveSleep()
        // The pool is dropped without closing it: receive buffers stay mapped, since the dead ring
        // may still write into them, and so do `Bytes` that point into them.
        bufferPool = nil
        ring = nil
        for operation in Array(pendingOperations.values) { operation.abandon() }
        pendingOperations.removeAll()
        for resource in Array(resources.values) { resource.abortAfterRingFailure(error) }
        resources.removeAll()
        runQueuedWork()
        runEndOfTurnWork()
        runQueuedWork()
    }

    /// Tears down the ring; on the loop thread, after the last turn.
    private func shutDownRing() {
        if let ring { bufferPool.close(ring: ring) }
        bufferPool = nil
        ring = nil
    }
}
