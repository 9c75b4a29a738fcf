import Glibc

/// Threads of the library's own for calls that block (`getaddrinfo`, for seconds when a DNS server
/// does not answer), so they never hold a thread Swift's tasks need. On Linux, Dispatch's global
/// queues share their threads with the tasks' cooperative pool (as many as there are CPUs), and
/// Dispatch adds a thread for a blocked one only after about a second.
///
/// Up to `limit` threads start as work arrives; further work waits for one of them. A thread with
/// nothing to do for `idleSeconds` ends.
package final class BlockingThreads: @unchecked Sendable {
    // Sendable: `state` is touched only with `mutex` held.
    private struct State {
        var queue: [@Sendable () -> Void] = []
        var next = 0
        var threads = 0
        var idle = 0
    }

    /// The threads name lookups run on.
    package static let shared = BlockingThreads(limit: 16)

    private let limit: Int
    private let idleSeconds: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workArrived = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var state = State()

    package init(limit: Int, idleSeconds: Int = 10) {
        precondition(limit > 0, "BlockingThreads needs at least one thread")
        self.limit = limit
        self.idleSeconds = idleSeconds
        pthread_mutex_init(mutex, nil)
        // CLOCK_MONOTONIC: an idle thread's deadline does not move with the wall clock.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(workArrived, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        // Only a pool nobody holds any more goes away; its threads hold it while they run.
        pthread_cond_destroy(workArrived)
        pthread_mutex_destroy(mutex)
        workArrived.deallocate()
        mutex.deallocate()
    }

    /// Runs `work` on one of the threads, after the work handed over before it.
    package func run(_ work: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mutex)
        state.queue.append(work)
        let waiting = state.queue.count - state.next
        let startThread = waiting > state.idle && state.threads < limit
        if startThread { state.threads += 1 }
        if state.idle > 0 { pthread_cond_signal(workArrived) }
        pthread_mutex_unlock(mutex)
        if startThread { start() }
    }

    private func start() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { raw in
                let pool = Unmanaged<BlockingThreads>.fromOpaque(raw!).takeRetainedValue()
                pool.work()
                return nil
            }, context)
        guard result == 0 else {
            // The threads already running take the work in turn; with none, this is as fatal as
            // failing to allocate.
            Unmanaged<BlockingThreads>.fromOpaque(context).release()
            pthread_mutex_lock(mutex)
            state.threads -= 1
            let none = state.threads == 0
            pthread_mutex_unlock(mutex)
            precondition(!none, "UringStreams: pthread_create failed: \(String(cString: strerror(result)))")
            return
        }
        pthread_detach(thread)
    }

    /// A thread's life: take work until there has been none for `idleSeconds`.
    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            if state.next < state.queue.count {
                let job = state.queue[state.next]
                state.next += 1
                if state.next == state.queue.count {
                    state.queue.removeAll(keepingCapacity: true)
                    state.next = 0
                }
                pthread_mutex_unlock(mutex)
                job()
                pthread_mutex_lock(mutex)
                continue
            }
            var deadline = timespec()
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            deadline.tv_sec += idleSeconds
            state.idle += 1
            let waited = pthread_cond_timedwait(workArrived, mutex, &deadline)
            state.idle -= 1
            if waited == ETIMEDOUT && state.next == state.queue.count {
                state.threads -= 1
                pthread_mutex_unlock(mutex)
                return
            }
        }
    }
}
