/// The seam between the event loop and io_uring.
///
/// The event loop talks only to this protocol, so tests can drive everything above the ring with
/// scripted completions and injected faults (short sends, resets, cancellations, ENOBUFS), the way
/// SwiftNIO's "syscall abstraction layer" tests drive its selector. ``IOURing`` is the real one.
///
/// A backend is used from one thread only: the thread of the event loop that created it.
public protocol RingBackend: AnyObject {
    /// Queues one operation; it reaches the kernel at the next ``submit(waitingFor:)``.
    func prepare(_ submission: Submission, userData: UInt64)
    /// Submits what is queued and waits until at least `minimumCompletions` completions are ready.
    /// Returns early with `EINTR` swallowed; throws only for errors the loop cannot recover from.
    func submit(waitingFor minimumCompletions: Int) throws(RingError)
    /// Copies ready completions into `buffer`, returning how many.
    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int
    /// Registers a provided-buffer ring of `entries` slots (a power of two) for `group`, incremental
    /// when asked for and the kernel supports it (the result says which); returns the ring memory the
    /// caller fills with `addBuffer`.
    func registerBufferRing(entries: Int, group: UInt16, incremental: Bool) throws(RingError)
        -> ProvidedBufferRingMemory
    /// Unregisters a ring made by ``registerBufferRing(entries:group:incremental:)``.
    func unregisterBufferRing(_ memory: ProvidedBufferRingMemory)
    /// What this kernel's ring offers beyond the required opcodes, probed at set-up.
    var features: RingFeatures { get }
    /// Operations queued that the kernel has not consumed yet (after a submit: those it refused to
    /// take for now). Memory such an operation points to for its submission must stay valid.
    var pendingSubmissions: Int { get }
    /// Counters of ring traffic since creation.
    var counters: RingCounters { get }
    /// io_uring, or the epoll fallback.
    var kind: RingBackendKind { get }
    /// Lets the backend reach `fd` faster from now on (io_uring's registered files); on the
    /// loop thread, for a connected socket the caller owns.
    func registerFile(_ fd: Int32)
    /// Undoes ``registerFile(_:)``; the caller must call it before closing `fd`.
    func unregisterFile(_ fd: Int32)
}

/// Ring traffic counted where it happens.
public struct RingCounters: Sendable, Equatable {
    public var submissions = 0
    public var enterCalls = 0
    public var completions = 0
    public init() {}
}

/// Optional kernel features, probed when the ring is set up; the runtime keeps a path without each.
public struct RingFeatures: Sendable, Equatable {
    /// Multishot receives may fill several buffers per completion (`IORING_RECVSEND_BUNDLE`, 6.10).
    public var receiveBundles = false
    /// `IORING_OP_SENDMSG_ZC` (6.1) with usage reports (`IORING_SEND_ZC_REPORT_USAGE`, 6.2).
    public var zeroCopySend = false
    public init(receiveBundles: Bool = false, zeroCopySend: Bool = false) {
        self.receiveBundles = receiveBundles
        self.zeroCopySend = zeroCopySend
    }
}

/// Which mechanism a backend uses to do I/O.
public enum RingBackendKind: Sendable {
    /// io_uring: the kernel performs operations and posts completions.
    case ioUring
    /// epoll readiness, with the operations performed by ``EpollBackend`` (where io_uring is blocked).
    case epoll
}

extension RingBackend {
    /// io_uring unless the backend says otherwise (test doubles stand in for a ring).
    public var kind: RingBackendKind { .ioUring }
    /// Backends without a file table reach every descriptor by its number.
    public func registerFile(_ fd: Int32) {}
    public func unregisterFile(_ fd: Int32) {}
}
