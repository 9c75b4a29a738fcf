internal import CURing

/// Small system calls the layers above need but Swift's Glibc module does not expose.
public enum SystemSupport {
    /// A new close-on-exec eventfd, or -1 with `errno` set.
    public static func makeEventFD() -> Int32 {
        curing_eventfd()
    }

    /// Names the calling thread (at most 15 bytes are kept).
    public static func setThreadName(_ name: String) {
        curing_set_thread_name(String(name.utf8.prefix(15))!)
    }
}
