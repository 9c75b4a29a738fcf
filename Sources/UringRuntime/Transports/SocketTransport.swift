import Glibc
import Synchronization
import UringRing

/// What a drain has to do, decided under one lock.
package enum DrainStatus {
    case ready, wait, fail(any Error)
}

/// What the streams layer needs of a transport besides asyncio's ``Transport``: the drain and
/// close waits of `StreamWriter`, decided synchronously on the caller's thread.
package protocol StreamsTransport: Transport {
    /// asyncio `StreamWriter.drain`'s decision: a connection error wins, then close or a dropped
    /// write (``StreamError/closed``), then the water mark.
    var drainStatus: DrainStatus { get }
    /// Waits while more than the high-water mark is queued, until no more than the low one is.
    func waitForDrain() async throws
    /// Waits until the socket is closed.
    func waitClosed() async throws
    /// The error the connection failed with, once it failed.
    var connectionError: (any Error)? { get }
}

/// The transport that owns a connected stream socket (asyncio's `_SelectorSocketTransport`): it
/// receives with a multishot receive from the loop's provided buffers, sends what is written as
/// one gathered `sendmsg` per loop turn, applies the write-buffer water marks, and closes the
/// descriptor only once no operation uses it any more.
///
/// Its members may be called from any thread; the I/O and every protocol callback happen on the
/// loop thread.
public final class SocketTransport: CompletionTarget, EndOfTurnWork, LoopResource, StreamsTransport,
    @unchecked Sendable
{
    // Sendable: `state` is locked; every other mutable field is touched only on `loop`'s thread.

    private struct State {
        var writes = WriteBuffer()
        /// The descriptor is closed and the protocol told.
        var lost = false
        var lostError: (any Error)?
        var drainWaiters = Waiters<any Error>()
        var closeWaiters = Waiters<any Error>()
    }

    /// The multishot receive, on the loop thread.
    private enum Receive {
        /// Not armed: reading is paused, or the transport has not started.
        case idle
        case armed(userData: UInt64, limited: Bool)
        /// Its cancel is submitted; the final completion has not come.
        case cancelling(userData: UInt64, limited: Bool)
        /// Not armed, and never again: end of file came, or the descriptor is closing.
        case ended

        /// Whether a receive may still complete.
        var inFlight: Bool {
            switch self {
            case .armed, .cancelling: return true
            case .idle, .ended: return false
            }
        }
    }

    /// The descriptor, on the loop thread.
    private enum Descriptor {
        case open
        /// Closing started: it closes once no operation uses it.
        case closing
        case closed
    }

    /// Completions after which the socket goes into the ring's file table. Registering and
    /// unregistering are two system calls (0.4–0.5 µs together, measured in a loop); the table
    /// saves a descriptor lookup and reference count per send (about 50 ns), so it pays only for
    /// a connection that keeps talking, and a short one never makes the calls.
    package static let completionsBeforeRegistering: UInt64 = 64

    private enum Tag {
        static let receive: UInt64 = 1
        static let send: UInt64 = 2
    }

    /// The loop this connection lives on for its whole life.
    public let loop: EventLoop
    /// The socket descriptor (owned: closed by the transport).
    public let fileDescriptor: Int32
    public let peerAddress: SocketAddress?
    public let localAddress: SocketAddress?
    private let state = Locked(State())

    // Loop-thread state, touched per message: `@exclusivity(unchecked)` (docs/architecture.md,
    // "Exclusivity checks").
    @exclusivity(unchecked) private var owner: (any StreamProtocol)?
    /// The owner as a buffered protocol, when it is one (cast once, not per receive).
    @exclusivity(unchecked) private var bufferedOwner: (any BufferedStreamProtocol)?
    @exclusivity(unchecked) private var receive = Receive.idle
    @exclusivity(unchecked) private var descriptor = Descriptor.open
    /// Data (and EOF) that arrived while reading was paused: asyncio's pause_reading promises that
    /// nothing reaches the protocol until resume_reading, even what the kernel had in flight.
    @exclusivity(unchecked) private var held: [Bytes] = []
    @exclusivity(unchecked) private var heldEOF = false
    @exclusivity(unchecked) private var shutdownSent = false
    @exclusivity(unchecked) private var sendUserData: UInt64 = 0
    /// What the protocol was last told: pauseWriting (true) or resumeWriting (false).
    @exclusivity(unchecked) private var ownerToldPaused = false
    private var closeCallback: (() -> Void)?
    /// Counts receive and send completions, so a server's idle sweep (which compares it between
    /// two sweeps) sees traffic without a clock read or a timer per message; loop-thread state.
    @exclusivity(unchecked) package private(set) var activity: UInt64 = 0
    /// Zero-copy sends are worth trying on this connection (a remote peer, the loop allows them,
    /// and the kernel has not reported copying or refused them here).
    private var zeroCopyEligible: Bool
    /// pauseReading() was called (and not undone by resumeReading()). Changed only under `state`'s
    /// lock, together with the checks of the write buffer; read without it on every received chunk.
    private let readingPaused = Atomic<Bool>(false)

    /// Takes ownership of a connected socket; on `loop`'s thread. Call ``start(protocol:)`` next.
    package init(loop: EventLoop, fileDescriptor: Int32) {
        self.loop = loop
        self.fileDescriptor = fileDescriptor
        let peer = SocketDescriptor.peerAddress(of: fileDescriptor)
        let local = SocketDescriptor.localAddress(of: fileDescriptor)
        peerAddress = peer
        localAddress = local
        // Traffic to this host (loopback, Unix sockets, our own address) is copied by the kernel
        // even when sent zero-copy, at extra cost.
        let onThisHost = peer.map { $0.isLoopback || $0.host == local?.host } ?? true
        zeroCopyEligible = loop.zeroCopySendThreshold != nil && (loop.configuration.zeroCopyLocalSends || !onThisHost)
    }

    deinit {
        guard descriptor != .closed else { return }
        // Started transports stay registered with their loop until closed, so this runs only for
        // one never started or one dropped at loop shutdown, whose ring and file table go too.
        if loop.inEventLoop { loop.unregisterFile(fileDescriptor) }
        Glibc.close(fileDescriptor)
    }

    /// Starts the connection: tells `owner` (asyncio `connection_made`) and starts receiving; on
    /// the loop thread.
    package func start(protocol owner: any StreamProtocol) {
        loop.assertInEventLoop()
        setProtocol(owner)
        loop.register(self)
        owner.connectionMade(self)
        syncReceive()
    }

    /// Hands received data and the connection's end to `owner` from now on (asyncio
    /// `set_protocol`; startTLS puts a TLS transport here); on the loop thread.
    package func setProtocol(_ owner: any StreamProtocol) {
        loop.assertInEventLoop()
        self.owner = owner
        bufferedOwner = owner as? any BufferedStreamProtocol
    }

    /// The protocol receiving this connection's data (asyncio `get_protocol`); on the loop thread.
    package var currentProtocol: (any StreamProtocol)? {
        loop.assertInEventLoop()
        return owner
    }

    func abortForShutdown() {
        abort()
    }

    func abortAfterRingFailure(_ error: StreamError) {
        // No completion will come: the receive and the send are over as far as this side knows.
        state.withLock { state in
            if state.lostError == nil { state.lostError = error }
            state.writes.abort()
            state.writes.sendFailed()
        }
        receive = .ended
        beginClose()
    }

    // MARK: Writing

    public func write(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        let effects = state.withLock { $0.writes.write(bytes) }
        if effects.scheduleFlush { scheduleFlush() }
        if effects.pauseProtocol { onLoop { $0.syncOwnerWriting() } }
    }

    public func write<Data: Collection>(_ data: Data) where Data.Element == UInt8 {
        if let bytes = data as? Bytes {
            write(bytes)
        } else {
            write(copying: data)
        }
    }

    /// Queues a copy of `data` (the copy is counted in the loop's statistics).
    package func write(copying data: some Collection<UInt8>) {
        guard !data.isEmpty else { return }
        let bytes = Bytes(data)
        loop.recordCopiedOnSend(bytes.count)
        write(bytes)
    }

    private func scheduleFlush() {
        if loop.inEventLoop {
            loop.runAtEndOfTurn(self)
        } else {
            loop.execute { self.flush() }
        }
    }

    func endOfTurn() {
        flush()
    }

    /// Sends what is queued (one gathered send), or finishes a close or write-EOF that waited for
    /// the queue to empty; on the loop thread.
    private func flush() {
        guard descriptor == .open else { return }
        enum Next { case act(WriteBuffer.Flush), send(UnsafeMutableRawPointer, zeroCopy: [Bytes]?) }
        let next = state.withLock { state -> Next in
            guard state.writes.hasQueuedBytes, state.writes.sending != .inFlight, state.writes.phase != .aborted else {
                return .act(state.writes.flush(iovecs: nil, capacity: 0))
            }
            // Loop-thread state only, no callbacks: safe under the lock, and one lock per flush.
            guard let scratch = loop.takeMessageScratch(orWait: self) else {
                // No room until the loop's next submit, which calls back.
                return .act(state.writes.flush(iovecs: nil, capacity: 0))
            }
            let action = state.writes.flush(iovecs: scratch.iovecs, capacity: MessageScratch.iovecsPerSend)
            guard case .send(let count, let bytes) = action else { return .act(action) }
            loop.returnUnusedMessageScratch(iovecs: MessageScratch.iovecsPerSend - count)
            scratch.message.pointee.msg_iovlen = count
            let message = UnsafeMutableRawPointer(scratch.message)
            if zeroCopyEligible, let threshold = loop.zeroCopySendThreshold, bytes >= threshold {
                return .send(message, zeroCopy: state.writes.inFlightChunks)
            }
            return .send(message, zeroCopy: nil)
        }
        switch next {
        case .send(let message, let zeroCopyChunks):
            if let chunks = zeroCopyChunks {
                loop.counters.zeroCopySends += 1
                sendUserData = loop.submit(
                    .sendMessageZeroCopy(fd: fileDescriptor, message: message, flags: Int32(MSG_NOSIGNAL)),
                    target: ZeroCopySend(transport: self, holding: chunks), tag: 0)
            } else {
                let header = message.assumingMemoryBound(to: msghdr.self).pointee
                // One buffer (every ping-pong reply): a plain send spares the kernel the msghdr.
                let submission: Submission =
                    header.msg_iovlen == 1
                    ? .send(
                        fd: fileDescriptor, buffer: header.msg_iov[0].iov_base, length: header.msg_iov[0].iov_len,
                        flags: Int32(MSG_NOSIGNAL))
                    : .sendMessage(fd: fileDescriptor, message: message, flags: Int32(MSG_NOSIGNAL))
                sendUserData = loop.submit(submission, target: self, tag: Tag.send)
            }
        case .act(.shutdownWrite):
            if !shutdownSent {
                shutdownSent = true
                _ = Glibc.shutdown(fileDescriptor, Int32(SHUT_WR))
            }
        case .act(.close):
            beginClose()
        case .act(.nothing), .act(.send):
            return
        }
    }

    /// The kernel reported copying a zero-copy send: stop paying for notifications on this
    /// connection, unless told to measure them.
    func zeroCopyWasCopied() {
        if !loop.configuration.zeroCopyLocalSends { zeroCopyEligible = false }
    }

    /// A zero-copy send's result (its ``ZeroCopySend`` keeps the memory until the notification).
    func zeroCopySendCompleted(_ completion: Completion) {
        countCompletion()
        let result = completion.result
        if result == -EOPNOTSUPP || result == -EINVAL {
            // Unix sockets do not support zero-copy sends (EOPNOTSUPP), a 6.1 kernel not the usage
            // report (EINVAL): nothing was sent, so send the same bytes plainly from now on.
            loop.counters.zeroCopyFallbacks += 1
            zeroCopyEligible = false
            if result == -EINVAL { loop.zeroCopySendThreshold = nil }
            if state.withLock({ $0.writes.sendRefused() }) { flush() }
            tryFinishClose()
            return
        }
        sendCompleted(result)
    }

    private func sendCompleted(_ result: Int32) {
        if result < 0 {
            state.withLock { $0.writes.sendFailed() }
            if result != -ECANCELED { fail(StreamError.from(errno: -result, operation: "sendmsg")) }
            tryFinishClose()
            return
        }
        loop.counters.bytesSent += Int(result)
        let (effects, drained) = state.withLock { state -> (WriteBuffer.SendEffects, Waiters<any Error>.Taken) in
            let effects = state.writes.sendCompleted(sent: Int(result))
            return (effects, effects.wakeDrainers ? state.drainWaiters.takeAll() : .none)
        }
        drained.resume()
        if effects.resumeProtocol { syncOwnerWriting() }
        if effects.flushAgain { flush() }
        tryFinishClose()
    }

    /// Tells the protocol pauseWriting or resumeWriting to match the write buffer *now*; on the
    /// loop thread. Requests from other threads arrive in any order; acting on the current state
    /// keeps a late "pause" from leaving a protocol paused under an emptied buffer.
    private func syncOwnerWriting() {
        let paused = state.withLock { $0.writes.protocolPaused }
        guard paused != ownerToldPaused, descriptor != .closed else { return }
        ownerToldPaused = paused
        if paused { owner?.pauseWriting() } else { owner?.resumeWriting() }
    }

    public func writeEOF() {
        if state.withLock({ $0.writes.requestEOF() }) { scheduleFlush() }
    }

    public var canWriteEOF: Bool { true }

    public var writeBufferSize: Int { state.withLock { $0.writes.buffered } }

    public var writeBufferLimits: (low: Int, high: Int) { state.withLock { ($0.writes.low, $0.writes.high) } }

    public func setWriteBufferLimits(high: Int?, low: Int?) {
        let limits = WriteBufferDefaults.limits(high: high, low: low)
        let (effects, released) = state.withLock {
            state -> (WriteBuffer.SendEffects, Waiters<any Error>.Taken) in
            let effects = state.writes.setLimits(high: limits.high, low: limits.low)
            return (effects, effects.wakeDrainers ? state.drainWaiters.takeAll() : .none)
        }
        released.resume()
        if effects.pauseProtocol || effects.resumeProtocol { onLoop { $0.syncOwnerWriting() } }
    }

    package var drainStatus: DrainStatus {
        state.withLock { state in
            if let error = state.lostError { return .fail(error) }
            if state.writes.isClosing || state.writes.droppedWrite { return .fail(StreamError.closed) }
            if state.lost { return .fail(StreamError.connectionReset) }
            return state.writes.buffered > state.writes.high ? .wait : .ready
        }
    }

    /// - Throws: the connection's error, or ``StreamError/connectionReset`` when it was lost;
    ///   `CancellationError` when the task is cancelled while it waits.
    package func waitForDrain() async throws {
        try await state.wait(in: \.drainWaiters) { state in
            if state.lost { throw state.lostError ?? StreamError.connectionReset }
            return state.writes.buffered <= state.writes.high
        }
    }

    package var connectionError: (any Error)? { state.withLock { $0.lostError } }

    /// Whether the socket is closed and the loss reported.
    package var isLost: Bool { state.withLock { $0.lost } }

    public func extraInfo(_ name: String) -> Any? {
        switch name {
        case "peername": return peerAddress
        case "sockname": return localAddress
        case "socket": return fileDescriptor
        default: return nil
        }
    }

    // MARK: Reading

    public func pauseReading() {
        let changed = state.withLock { state -> Bool in
            guard !readingPaused.load(ordering: .relaxed), !state.writes.isClosing else { return false }
            readingPaused.store(true, ordering: .releasing)
            return true
        }
        guard changed else { return }
        if loop.inEventLoop {
            // Stop the kernel now: every completion until the cancel lands is data past the
            // reader's limit. Delivers nothing, so it is safe under the caller's (reader's) lock.
            cancelUnwantedReceive()
        } else {
            loop.execute { self.syncReceive() }
        }
    }

    public func resumeReading() {
        let changed = state.withLock { state -> Bool in
            guard readingPaused.load(ordering: .relaxed), !state.writes.isClosing else { return false }
            readingPaused.store(false, ordering: .releasing)
            return true
        }
        // Always through the loop's queue, never inline: callers may hold the reader's lock, and
        // syncReceive may deliver held data to that reader.
        if changed { loop.execute { self.syncReceive() } }
    }

    public var isReading: Bool { readingWanted }

    private func onLoop(_ work: @escaping @Sendable (SocketTransport) -> Void) {
        if loop.inEventLoop {
            work(self)
        } else {
            loop.execute { work(self) }
        }
    }

    private var readingWanted: Bool {
        state.withLock { !readingPaused.load(ordering: .acquiring) && !$0.writes.isClosing }
    }

    private func armReceive() {
        guard case .idle = receive, descriptor == .open, !loop.isStopping else { return }
        // Capped, so that once the reader pauses at most this much more arrives before the
        // receive ends by itself (the kernel may otherwise post megabytes in one turn).
        let limit = loop.multishotReceiveLimit
        let userData = loop.submit(
            .receiveMultishot(
                fd: fileDescriptor, bufferGroup: loop.bufferPool.group, bundle: loop.useReceiveBundles,
                totalLimit: limit),
            target: self, tag: Tag.receive)
        receive = .armed(userData: userData, limited: limit > 0)
    }

    /// Makes the receive match whether reading is wanted *now*, on the loop thread. Pause and
    /// resume requests from other threads arrive here in any order; acting on the current wish
    /// (not on the request) is what keeps a late "pause" from stopping a reader that resumed.
    private func syncReceive() {
        if readingWanted {
            deliverHeld()
            // Handing over what was held may have paused reading again: arming now would receive
            // past the reader's limit into `held`, once per pause, without bound.
            if held.isEmpty, readingWanted { armReceive() }
        }
        cancelUnwantedReceive()
    }

    /// Cancels the armed receive when reading is not wanted (paused or closing).
    private func cancelUnwantedReceive() {
        guard case .armed(let userData, let limited) = receive, !readingWanted else { return }
        receive = .cancelling(userData: userData, limited: limited)
        loop.submitIgnoringResult(.cancel(target: userData))
    }

    private var deliveryPaused: Bool { readingPaused.load(ordering: .acquiring) }

    private func deliver(_ bytes: Bytes) {
        if !held.isEmpty || deliveryPaused {
            held.append(bytes)
        } else if let bufferedOwner {
            bytes.withUnsafeBytes { bufferedOwner.bytesReceived($0) }
        } else {
            owner?.dataReceived(bytes)
        }
    }

    /// Hands over what arrived while paused, for as long as reading stays wanted (the protocol
    /// may pause again while taking it).
    private func deliverHeld() {
        while !held.isEmpty, !deliveryPaused {
            let bytes = held.removeFirst()
            if let bufferedOwner {
                bytes.withUnsafeBytes { bufferedOwner.bytesReceived($0) }
            } else {
                owner?.dataReceived(bytes)
            }
        }
        if held.isEmpty, heldEOF, !deliveryPaused {
            heldEOF = false
            deliverEOF()
        }
    }

    /// asyncio's `_read_ready__on_eof`: the protocol decides whether the write half stays open.
    private func deliverEOF() {
        let keepOpen = owner?.eofReceived() ?? false
        if !keepOpen { close() }
    }

    private func receiveCompleted(_ completion: Completion) {
        let result = completion.result
        var cancelled = false
        var limited = false
        switch receive {
        case .armed(_, let wasLimited):
            limited = wasLimited
        case .cancelling(_, let wasLimited):
            limited = wasLimited
            cancelled = true
        case .idle, .ended:
            break
        }
        if !completion.hasMore {
            receive = descriptor == .open && result != 0 ? .idle : .ended
        }
        if result > 0, let id = completion.bufferID {
            loop.counters.bytesReceived += Int(result)
            let copied = loop.bufferPool.takeReceived(
                firstID: id, count: Int(result), bufferHasMore: completion.bufferHasMore
            ) { deliver($0) }
            if copied > 0 { loop.recordCopiedOnReceive(copied) }
        } else if let id = completion.bufferID {
            loop.bufferPool.takeUnused(id: id, bufferHasMore: completion.bufferHasMore)
        }
        if result == 0 {
            if held.isEmpty && !deliveryPaused {
                deliverEOF()
            } else {
                heldEOF = true
            }
        } else if result == -ENOBUFS {
            loop.counters.bufferExhaustions += 1
            loop.bufferPool.ranDry()
            if !completion.hasMore {
                // Buffers may already be back (recycled between the kernel's miss and now): then
                // re-arm this turn, unless others wait for them first; otherwise wait for a
                // recycle rather than spin on ENOBUFS.
                if loop.bufferPool.available > 0, loop.buffersWanted.isEmpty {
                    loop.runAtEndOfTurn(ReceiveRearm(self))
                } else {
                    loop.waitForReceiveBuffers(ReceiveRearm(self))
                }
            }
        } else if result == -EINVAL && limited {
            // A kernel without multishot receive limits: receive unlimited from now on.
            loop.multishotReceiveLimit = 0
            rearmReceive()
        } else if result < 0 && result != -ECANCELED {
            fail(StreamError.from(errno: -result, operation: "recv"))
        } else if !completion.hasMore && !cancelled && result != -ECANCELED {
            // The kernel ended the multishot receive on its own (its total limit, a full CQ ring).
            rearmReceive()
        } else if !completion.hasMore {
            // Our cancel landed; reading may have been wanted again meanwhile.
            syncReceive()
        }
        if !completion.hasMore { tryFinishClose() }
    }

    fileprivate func rearmReceive() {
        guard case .idle = receive, descriptor == .open else { return }
        loop.counters.receiveRearms += 1
        syncReceive()
    }

    /// Counts a completion for the idle sweep, and puts the socket in the ring's file table once
    /// the connection proved busy; for every kind of completion, so none can step over the count.
    private func countCompletion() {
        activity &+= 1
        if activity == Self.completionsBeforeRegistering, descriptor == .open { loop.registerFile(fileDescriptor) }
    }

    package override func complete(_ completion: Completion, tag: UInt64) {
        countCompletion()
        switch tag {
        case Tag.receive: receiveCompleted(completion)
        case Tag.send: sendCompleted(completion.result)
        default: preconditionFailure("unknown transport tag \(tag)")
        }
    }

    // MARK: Closing

    public func close() {
        guard state.withLock({ $0.writes.requestClose() }) else { return }
        onLoop { transport in
            transport.syncReceive()
            transport.flush()
        }
    }

    public func abort() {
        state.withLock { $0.writes.abort() }
        onLoop { $0.beginClose() }
    }

    /// Ends the connection with `error` from any thread, dropping what is queued (asyncio's
    /// `_force_close(exc)`): readers and `waitClosed` see the error.
    package func abort(failing error: any Error) {
        onLoop { $0.fail(error) }
    }

    /// Closes once what is queued has been sent (a TLS alert, say), reporting `error` as the
    /// connection's end.
    package func close(failing error: any Error) {
        state.withLock { state in
            if state.lostError == nil, !state.lost { state.lostError = error }
        }
        close()
    }

    /// Calls `callback` on the loop thread once the descriptor is closed, after the protocol
    /// heard `connectionLost` (a server counts its connections so); set before ``start(protocol:)``.
    package func onClose(_ callback: @escaping () -> Void) {
        loop.assertInEventLoop()
        closeCallback = callback
    }

    public var isClosing: Bool { state.withLock { $0.writes.isClosing || $0.lost } }

    /// - Throws: `CancellationError` when the task is cancelled while it waits.
    package func waitClosed() async throws {
        try await state.wait(in: \.closeWaiters) { $0.lost }
    }

    /// Ends the connection with `error`: what is queued is dropped (asyncio `_fatal_error`).
    private func fail(_ error: any Error) {
        state.withLock { state in
            // A connection already lost keeps how it ended.
            if state.lostError == nil, !state.lost { state.lostError = error }
            state.writes.abort()
        }
        beginClose()
    }

    private func beginClose() {
        guard descriptor == .open else { return }
        descriptor = .closing
        switch receive {
        case .armed(let userData, let limited):
            receive = .cancelling(userData: userData, limited: limited)
            loop.submitIgnoringResult(.cancel(target: userData))
        case .cancelling:
            break
        case .idle, .ended:
            receive = .ended
        }
        let sending = state.withLock { $0.writes.sending == .inFlight }
        if sending { loop.submitIgnoringResult(.cancel(target: sendUserData)) }
        tryFinishClose()
    }

    /// Closes the descriptor once no operation uses it, then reports the loss.
    private func tryFinishClose() {
        guard descriptor == .closing, !receive.inFlight else { return }
        let (sending, error) = state.withLock { ($0.writes.sending == .inFlight, $0.lostError) }
        guard !sending else { return }
        descriptor = .closed
        // Out of the ring's file table first: its reference would keep the socket open.
        loop.unregisterFile(fileDescriptor)
        Glibc.close(fileDescriptor)
        loop.unregister(self)
        let (drainers, closers) = state.withLock { state in
            state.lost = true
            return (state.drainWaiters.takeAll(), state.closeWaiters.takeAll())
        }
        let lostError = error ?? StreamError.connectionReset
        drainers.resume(throwing: lostError)
        let owner = self.owner
        self.owner = nil
        bufferedOwner = nil
        owner?.connectionLost(error)
        closers.resume()
        closeCallback.take()?()
    }
}

/// Re-arms a transport's receive once the loop has buffers again.
private final class ReceiveRearm: EndOfTurnWork {
    let transport: SocketTransport
    init(_ transport: SocketTransport) { self.transport = transport }
    func endOfTurn() { transport.rearmReceive() }
}
