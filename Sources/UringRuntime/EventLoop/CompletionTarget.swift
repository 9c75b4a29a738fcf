import UringRing

/// Something a completion is delivered to. A submission's `user_data` is the target's address with a
/// small operation tag in the low bits (objects are 16-byte aligned), so dispatch needs no lookup.
///
/// The loop holds a strong reference to the target from submission until the operation's last
/// completion (the one without `IORING_CQE_F_MORE`): the memory an operation uses lives in its
/// target, so it stays valid for as long as the kernel may touch it.
///
/// Public only because public types (``SocketTransport``) derive from it; it cannot be subclassed
/// or called outside the package.
public class CompletionTarget {
    /// Whether the loop's shutdown waits for this target's last completion (see
    /// ``EventLoop/stopAwaitingAtShutdown(_:)``).
    package final var awaitedAtShutdown = true

    package init() {}

    /// Handles one completion on the loop thread. `tag` is the value given at submission.
    package func complete(_ completion: Completion, tag: UInt64) {
        preconditionFailure("\(type(of: self)) must override complete(_:tag:)")
    }
}

/// `user_data` values that name no target.
enum ReservedUserData {
    /// Completions nobody waits for (cancel requests, fire-and-forget closes).
    static let ignored: UInt64 = 0
    /// The loop's eventfd read: another thread woke the loop.
    static let wake: UInt64 = 1
    /// The loop's timer for giving unused receive buffers' pages back.
    static let bufferRelease: UInt64 = 2
    /// Tags live in the low four bits of a target's address.
    static let tagMask: UInt64 = 0xF
}
