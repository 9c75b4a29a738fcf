internal import CURing
import Glibc

/// Why the ring could not be created or used.
public enum RingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// io_uring cannot be used in this process; `reason` names the cause and the fix.
    case unavailable(reason: String)
    /// A ring call failed with `errno`.
    case system(errno: Int32, operation: String)
    /// The ring could not be made for want of a resource that may come back (descriptors, memory);
    /// `reason` names the cause and the fix.
    case exhausted(errno: Int32, reason: String)

    public var description: String {
        switch self {
        case .unavailable(let reason), .exhausted(_, let reason): return reason
        case .system(let errno, let operation):
            return "\(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }

    /// Whether trying again later may succeed: the failure was a resource (descriptors, memory)
    /// that other code may give back.
    public var isTransient: Bool {
        switch self {
        case .exhausted: return true
        case .system(let errno, _): return Self.transientErrors.contains(errno)
        case .unavailable: return false
        }
    }

    public static let transientErrors: Set<Int32> = [EMFILE, ENFILE, ENOMEM, EAGAIN, ENOBUFS]

    /// Explains a failed `io_uring_setup` in terms a user can act on.
    static func setupFailure(errno: Int32) -> RingError {
        let sysctl = readSysctl("/proc/sys/kernel/io_uring_disabled")
        switch errno {
        case ENOSYS:
            return .unavailable(
                reason: "io_uring is not available: the kernel has no io_uring_setup system call (ENOSYS). "
                    + "Use Linux 6.0 or newer built with CONFIG_IO_URING=y.")
        case EPERM where sysctl == "2":
            return .unavailable(
                reason: "io_uring is disabled by the kernel.io_uring_disabled sysctl (value 2; EPERM). "
                    + "Fix: sysctl -w kernel.io_uring_disabled=0.")
        case EPERM where sysctl == "1":
            return .unavailable(
                reason: "io_uring is restricted by the kernel.io_uring_disabled sysctl (value 1; EPERM): only "
                    + "members of kernel.io_uring_group may use it. Fix: add this user to that group or "
                    + "sysctl -w kernel.io_uring_disabled=0.")
        case EPERM, EACCES:
            return .unavailable(
                reason: "io_uring_setup was refused (\(String(cString: strerror(errno)))), most likely by a "
                    + "seccomp filter: container runtimes such as Docker block io_uring by default. Fix: run "
                    + "with a seccomp profile that allows io_uring_setup, io_uring_enter and "
                    + "io_uring_register (e.g. --security-opt seccomp=<profile>).")
        case ENOMEM:
            return .exhausted(errno: ENOMEM, reason: memlockAdvice(operation: "io_uring_setup"))
        case EMFILE, ENFILE, EAGAIN:
            return .exhausted(
                errno: errno,
                reason: "io_uring_setup failed: \(String(cString: strerror(errno))) (errno \(errno)); "
                    + "it is tried again when the loop is next used.")
        default:
            return .unavailable(
                reason: "io_uring_setup failed: \(String(cString: strerror(errno))) (errno \(errno)).")
        }
    }

    /// Explains ENOMEM from ring set-up: pinned ring pages count against RLIMIT_MEMLOCK for users
    /// without CAP_IPC_LOCK, and the limit is often 64 KiB or 8 MiB.
    static func memlockAdvice(operation: String) -> String {
        var limit = rlimit()
        let current =
            getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0
            ? (limit.rlim_cur == rlim_t.max ? "unlimited" : "\(limit.rlim_cur / 1024) KiB") : "unknown"
        return "\(operation) failed with ENOMEM: the kernel could not pin the ring's memory, which counts "
            + "against RLIMIT_MEMLOCK for users without CAP_IPC_LOCK (this process: \(current)). Fix: raise "
            + "the limit (ulimit -l, LimitMEMLOCK= in a systemd unit, --ulimit memlock= for a container), or "
            + "use fewer loops or receive buffers (URINGSTREAMS_RECEIVE_BUFFER_COUNT)."
    }

    private static func readSysctl(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 16)
        guard fgets(&buffer, 16, file) != nil else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.trimmingCharacters(in: " \n")
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
