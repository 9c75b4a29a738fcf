import Glibc

/// The loop's memory for `msghdr`s and iovec arrays of sends that have not reached the kernel yet.
///
/// The kernel copies a `sendmsg`'s header and iovec array when it consumes the submission
/// (`IORING_FEAT_SUBMIT_STABLE`, Linux 5.5), so that memory is needed only from preparing the
/// submission until the next `io_uring_enter`. Sharing it per loop instead of keeping a header and
/// 64 iovecs in every connection is what lets an idle connection hold no send memory at all.
/// Loop thread only.
final class MessageScratch {
    static let iovecCapacity = 4096
    static let messageCapacity = 256
    /// Most iovecs one send gathers.
    static let iovecsPerSend = 64

    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<msghdr>
    private var usedIovecs = 0
    private var usedMessages = 0

    init() {
        iovecs = .allocate(capacity: Self.iovecCapacity)
        messages = .allocate(capacity: Self.messageCapacity)
        messages.initialize(repeating: msghdr(), count: Self.messageCapacity)
    }

    deinit {
        iovecs.deallocate()
        messages.deallocate()
    }

    /// Whether a send of up to ``iovecsPerSend`` iovecs fits before the next reset.
    var hasRoom: Bool {
        usedMessages < Self.messageCapacity && usedIovecs + Self.iovecsPerSend <= Self.iovecCapacity
    }

    /// Room for one send; check ``hasRoom`` first. Returns the header and its iovec array.
    func take() -> (message: UnsafeMutablePointer<msghdr>, iovecs: UnsafeMutablePointer<iovec>) {
        let message = messages + usedMessages
        let vector = iovecs + usedIovecs
        usedMessages += 1
        usedIovecs += Self.iovecsPerSend
        message.pointee = msghdr()
        message.pointee.msg_iov = vector
        return (message, vector)
    }

    /// Gives back the iovecs a send did not use (the last one taken only).
    func returnUnused(_ count: Int) {
        usedIovecs -= count
    }

    /// Everything taken so far has been submitted: start over.
    func reset() {
        usedIovecs = 0
        usedMessages = 0
    }
}
