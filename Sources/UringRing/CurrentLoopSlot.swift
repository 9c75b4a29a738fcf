internal import CURing

/// The thread-local slot that tells which event loop owns the calling thread.
///
/// Swift has no thread-local variables of its own; the shim's `__thread` pointer is a plain load,
/// much cheaper than `pthread_getspecific`, and is read on every enqueue.
public enum CurrentLoopSlot {
    @inline(__always)
    public static var value: UnsafeMutableRawPointer? {
        get { curing_current_loop() }
        set { curing_set_current_loop(newValue) }
    }
}
