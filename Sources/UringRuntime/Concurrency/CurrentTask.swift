import UringRing

/// Which task is running, as an address to compare, and whether it is cancelled: a connection's
/// reader asks both on every read that waits, to tell its handler task from any other.
@_spi(UringInternals) public enum CurrentTask {
    /// The running task's address, or 0 outside a task. Whoever stores one must forget it before
    /// that task ends: a later task may get the same address.
    public static var address: UInt {
        SystemSupport.currentTaskAddress()
    }

    /// Whether the running task is cancelled, as `Task.isCancelled`.
    public static var isCancelled: Bool {
        SystemSupport.currentTaskIsCancelled()
    }
}
