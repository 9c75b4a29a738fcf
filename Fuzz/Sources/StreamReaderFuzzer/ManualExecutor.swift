import Glibc

/// A task executor that runs nothing until asked: jobs queue up in order and ``runAll()`` runs
/// them on the calling thread. Every read task prefers it, so a task's start and each resumption
/// after a wake-up happen exactly when the fuzzer runs the queue, in a deterministic order the
/// model can follow, with no thread hop (which also keeps an execution fast).
final class ManualExecutor: TaskExecutor, @unchecked Sendable {
    // Sendable: used from the fuzzing thread only, which enqueue checks.
    private var jobs: [UnownedJob] = []
    private var next = 0
    private let thread = pthread_self()

    func enqueue(_ job: consuming ExecutorJob) {
        // A job from another thread would mean some part of a read ran off this executor, and
        // the fuzzer's deterministic order (and its result checks) would no longer hold.
        guard pthread_equal(pthread_self(), thread) != 0 else {
            fatalError("StreamReaderFuzzer: a job was enqueued from another thread")
        }
        jobs.append(UnownedJob(job))
    }

    /// Runs queued jobs, including those they queue, until none is left.
    func runAll() {
        while next < jobs.count {
            let job = jobs[next]
            next += 1
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
        jobs.removeAll(keepingCapacity: true)
        next = 0
    }
}
