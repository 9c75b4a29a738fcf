internal import CURing
import Glibc

/// An operation the epoll backend could not finish when it was submitted: it waits for its
/// descriptor to become ready (or, for a connect the kernel refused for now, for a timer).
struct EpollOperation {
    enum Kind {
        /// A multishot receive into the buffer ring of `group`; `limitLeft` bytes until it ends
        /// (0: no limit).
        case receive(group: UInt16, limitLeft: UInt32)
        case send(buffer: UnsafeRawPointer, length: Int, flags: Int32)
        /// `message` is the backend's own copy of the header and its iovecs once the operation
        /// waits: io_uring copies the header at submission, so callers reuse theirs afterwards.
        case sendMessage(message: UnsafeMutableRawPointer, flags: Int32, zeroCopy: Bool, owned: Bool)
        case accept(multishot: Bool)
        /// A connect the kernel is completing; ready once the socket is writable.
        case connect
        /// A read of a descriptor that may be blocking (the loop's eventfd): attempted only once
        /// epoll says it is readable.
        case read(buffer: UnsafeMutableRawPointer, length: Int)
    }

    enum Direction { case reading, writing }

    let fd: Int32
    let userData: UInt64
    var kind: Kind

    var direction: Direction {
        switch kind {
        case .receive, .accept, .read: return .reading
        case .send, .sendMessage, .connect: return .writing
        }
    }

    /// Takes ownership of the header `message` points to: copies it and its iovecs into memory of
    /// its own, freed by ``release()``.
    mutating func ownMessage() {
        guard case .sendMessage(let message, let flags, let zeroCopy, false) = kind else { return }
        let header = message.assumingMemoryBound(to: msghdr.self).pointee
        let iovecCount = Int(header.msg_iovlen)
        let copy = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<msghdr>.stride + iovecCount * MemoryLayout<iovec>.stride,
            alignment: MemoryLayout<msghdr>.alignment)
        let iovecs = (copy + MemoryLayout<msghdr>.stride).bindMemory(to: iovec.self, capacity: iovecCount)
        if let source = header.msg_iov { iovecs.initialize(from: source, count: iovecCount) }
        var owned = header
        owned.msg_iov = iovecs
        copy.bindMemory(to: msghdr.self, capacity: 1).initialize(to: owned)
        kind = .sendMessage(message: copy, flags: flags, zeroCopy: zeroCopy, owned: true)
    }

    /// Frees what the operation owns; once it has ended.
    func release() {
        if case .sendMessage(let message, _, _, true) = kind { message.deallocate() }
    }
}
