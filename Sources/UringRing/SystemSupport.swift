internal import CURing

/// Small system calls the layers above need but Swift's Glibc module does not expose.
public enum SystemSupport {
    /// A new close-on-exec eventfd, or -1 with `errno` set.
    public static func makeEventFD() -> Int32 {
        curing_eventfd()
    }

    /// Makes descriptor `target` refer to what `source` refers to, close-on-exec (dup3), in one
    /// step: the number never becomes free. Returns `target`, or -1 with `errno` set.
    public static func replaceDescriptor(_ target: Int32, with source: Int32) -> Int32 {
        curing_dup3_cloexec(source, target)
    }

    /// The address of the Swift task running the caller, or 0 outside a task; without the retain
    /// and release `withUnsafeCurrentTask` costs. Equal addresses mean the same task only while
    /// that task is alive.
    public static func currentTaskAddress() -> UInt {
        UInt(bitPattern: curing_current_task())
    }

    /// Whether the Swift task running the caller is cancelled (false outside a task); without the
    /// retain and release `Task.isCancelled` costs.
    public static func currentTaskIsCancelled() -> Bool {
        curing_current_task_is_cancelled()
    }

    /// How many CPUs the calling thread's affinity mask allows (`sched_getaffinity`), or nil when
    /// it cannot be read.
    public static func affinityCPUCount() -> Int? {
        let count = curing_affinity_cpu_count()
        return count > 0 ? Int(count) : nil
    }

    /// Names the calling thread (at most 15 bytes are kept).
    public static func setThreadName(_ name: String) {
        curing_set_thread_name(String(name.utf8.prefix(15))!)
    }
}
