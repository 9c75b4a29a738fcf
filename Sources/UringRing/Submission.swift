/// One operation for the ring to start, described without liburing types so that the layers above
/// can be driven by a scripted ring in tests.
///
/// Pointers inside a submission must stay valid until the operation's last completion arrives:
/// the kernel reads them asynchronously. The caller owns that memory.
public enum Submission {
    /// Multishot receive selecting buffers from provided-buffer group `bufferGroup`; with `bundle`,
    /// one completion may cover several consecutive buffers of the ring. A `totalLimit` above 0 ends
    /// the receive (a completion without ``CompletionFlags/more``) once that many bytes arrived
    /// (Linux 6.17; older kernels refuse it with `EINVAL`).
    case receiveMultishot(fd: Int32, bufferGroup: UInt16, bundle: Bool, totalLimit: UInt32)
    /// A send of one buffer, which the caller keeps alive. Cheaper than a one-iovec `sendMessage`:
    /// the kernel copies and checks no `msghdr`.
    case send(fd: Int32, buffer: UnsafeRawPointer, length: Int, flags: Int32)
    /// A gathered send; `message` points to a `msghdr` whose iovecs the caller keeps alive.
    case sendMessage(fd: Int32, message: UnsafeMutableRawPointer, flags: Int32)
    /// A gathered zero-copy send: the kernel sends from the caller's pages. A first completion gives
    /// the result (flagged ``CompletionFlags/more``); a notification completion (flagged
    /// ``CompletionFlags/notification``) follows once the kernel no longer reads the memory, which
    /// must stay alive until then.
    case sendMessageZeroCopy(fd: Int32, message: UnsafeMutableRawPointer, flags: Int32)
    /// Accepts connections; multishot keeps accepting until cancelled or failed.
    case accept(fd: Int32, multishot: Bool)
    case connect(fd: Int32, address: UnsafeRawPointer, length: UInt32)
    case read(fd: Int32, buffer: UnsafeMutableRawPointer, length: Int)
    /// A relative timeout; `timespec` points to a `__kernel_timespec` (two Int64s).
    case timeout(timespec: UnsafeMutableRawPointer)
    /// Cancels the operation submitted with `target` as its user data.
    case cancel(target: UInt64)
    /// Cancels every operation in flight on the ring (loop shutdown).
    case cancelEverything
}

/// A completion as the ring reported it. Same layout as the shim's `curing_cqe`.
public struct Completion: Sendable, Equatable {
    public var userData: UInt64
    public var result: Int32
    public var flags: UInt32

    public init(userData: UInt64, result: Int32, flags: UInt32 = 0) {
        self.userData = userData
        self.result = result
        self.flags = flags
    }

    /// More completions will follow for the same submission (multishot).
    public var hasMore: Bool { flags & CompletionFlags.more != 0 }
    /// With an incremental buffer ring: the buffer this completion used stays in the ring, more data
    /// will go after this completion's bytes.
    public var bufferHasMore: Bool { flags & CompletionFlags.bufferMore != 0 }
    /// A zero-copy send's notification reporting that the kernel copied the data after all.
    public var zeroCopyWasCopied: Bool { UInt32(bitPattern: result) & (1 << 31) != 0 }
    /// The provided buffer the kernel picked, when it picked one.
    public var bufferID: UInt16? {
        flags & CompletionFlags.buffer != 0 ? UInt16(truncatingIfNeeded: flags >> 16) : nil
    }
}

/// Completion flag bits of the kernel ABI.
public enum CompletionFlags {
    public static let buffer: UInt32 = 1 << 0
    public static let more: UInt32 = 1 << 1
    public static let socketNonEmpty: UInt32 = 1 << 2
    public static let notification: UInt32 = 1 << 3
    public static let bufferMore: UInt32 = 1 << 4
}
