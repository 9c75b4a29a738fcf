extension Locked {
    /// Suspends the calling task in the waiter list `list` of the locked value until a waker
    /// resumes it, unless `isReady` (checked under the lock, first) already holds or throws.
    /// Task cancellation takes the waiter out and throws `CancellationError`.
    ///
    /// The one way the runtime waits: reads, drains, closes, handshakes and servers all use it, so
    /// the lost-wake-up reasoning lives here once. A waker changes the value and takes the list's
    /// waiters under the same lock, then resumes them outside it.
    @inlinable nonisolated(nonsending) public func wait(
        in list: any WritableKeyPath<Value, Waiters<any Error>> & Sendable, until isReady: (inout Value) throws -> Bool
    ) async throws where Value: Sendable {
        let id = withLock { $0[keyPath: list].reserveID() }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                let outcome = withLock { value -> WaitOutcome in
                    do {
                        if try isReady(&value) { return .ready }
                    } catch {
                        return .fail(error)
                    }
                    if CurrentTask.isCancelled { return .fail(CancellationError()) }
                    value[keyPath: list].add(continuation, id: id)
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .ready: continuation.resume()
                case .fail(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            // Under the same lock as the add: either the waiter is there to take out, or the add
            // comes later and sees Task.isCancelled.
            let waiter = withLock { $0[keyPath: list].remove(id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}

/// What a wait's first check under the lock decided.
@usableFromInline enum WaitOutcome {
    case wait, ready, fail(any Error)
}
