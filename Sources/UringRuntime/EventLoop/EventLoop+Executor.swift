extension EventLoop: SerialExecutor, TaskExecutor {
    /// Schedules `job` on the loop: straight onto the loop's queue from its own thread, through the
    /// inbox (waking the loop if it sleeps) from any other.
    public func enqueue(_ job: consuming ExecutorJob) {
        enqueue(.job(UnownedJob(job)))
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    public func isSameExclusiveExecutionContext(other: EventLoop) -> Bool {
        self === other
    }

    public func checkIsolated() {
        precondition(inEventLoop, "expected to run on event loop \(id), not on another thread")
    }
}
