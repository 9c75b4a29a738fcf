import Glibc
import UringRing

/// What a transport reports, on its loop's thread (asyncio's protocol callbacks).
package protocol StreamTransportDelegate: AnyObject {
    /// Bytes arrived (asyncio `data_received`).
    func transport(_ transport: StreamTransport, received bytes: Bytes)
    /// The peer will send no more (asyncio `eof_received`).
    func transportReceivedEOF(_ transport: StreamTransport)
    /// The socket is closed; `error` is nil for an orderly close (asyncio `connection_lost`).
    func transport(_ transport: StreamTransport, connectionLost error: (any Error)?)
}

/// The object that owns a connected stream socket: it receives with a multishot receive from the
/// loop's provided buffers, sends what is written as one gathered `sendmsg` per loop turn, applies
/// write-buffer limits, and closes the descriptor only once no operation uses it any more.
///
/// Its synchronous members may be called from any thread; the I/O itself always happens on the
/// loop thread. Corresponds to asyncio's socket transport (`writer.transport`).
public final class StreamTransport: CompletionTarget, EndOfTurnWork, LoopResource, @unchecked Sendable {
    // Sendable: `state` is locked; every other mutable field is touched only on `loop`'s thread.

    private struct State {
        var queue = WriteQueue()
        var buffered = 0
        var high = 64 * 1024
        var low = 16 * 1024
        var closing = false
        var aborting = false
        var eofRequested = false
        var droppedWrite = false
        var flushScheduled = false
        var sendInFlight = false
        var readingPaused = false
        var lost = false
        var lostError: (any Error)?
        var drainWaiters = Waiters<any Error>()
        var closeWaiters = Waiters<any Error>()

        subscript(list: WaitList) -> Waiters<any Error> {
            get { list == .drain ? drainWaiters : closeWaiters }
            set {
                if list == .drain { drainWaiters = newValue } else { closeWaiters = newValue }
            }
        }
    }

    private enum WaitList { case drain, close }

    private enum Tag {
        static let receive: UInt64 = 1
        static let send: UInt64 = 2
    }

    /// The loop this connection lives on for its whole life.
    public let loop: EventLoop
    /// The socket descriptor (owned: closed by the transport).
    public let fileDescriptor: Int32
    /// The peer's address, captured when the connection was made.
    public let peerAddress: SocketAddress?
    /// The local address, captured when the connection was made.
    public let localAddress: SocketAddress?
    private let state = Locked(State())

    // Loop-thread state.
    private var delegate: (any StreamTransportDelegate)?
    private var receiveArmed = false
    private var receiveUserData: UInt64 = 0
    private var receiveCancelRequested = false
    /// Whether the armed receive carries a total limit (a kernel before 6.17 refuses it).
    private var receiveIsLimited = false
    private var eofReceived = false
    /// Data (and EOF) that arrived while reading was paused: asyncio's pause_reading promises that
    /// nothing reaches the protocol until resume_reading, even what the kernel had in flight.
    private var held: [Bytes] = []
    private var heldEOF = false
    private var sendUserData: UInt64 = 0
    private var closeStarted = false
    private var descriptorClosed = false
    private var shutdownSent = false
    /// Zero-copy sends are worth trying on this connection (a remote peer, the loop allows them,
    /// and the kernel has not reported copying or refused them here).
    private var zeroCopyEligible: Bool

    /// Takes ownership of a connected socket; on `loop`'s thread. Call ``start(delegate:)`` next.
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
        if !descriptorClosed { Glibc.close(fileDescriptor) }
    }

    /// Starts receiving, reporting to `delegate`; on the loop thread.
    package func start(delegate: any StreamTransportDelegate) {
        precondition(loop.inEventLoop)
        self.delegate = delegate
        loop.register(self)
        armReceive()
    }

    func abortForShutdown() {
        abort()
    }

    func abortAfterRingFailure(_ error: StreamError) {
        // No completion will come: the receive and the send are over as far as this side knows.
        state.withLock { state in
            if state.lostError == nil { state.lostError = error }
            state.closing = true
            state.aborting = true
            state.queue.removeAll()
            state.buffered = 0
            state.sendInFlight = false
        }
        receiveArmed = false
        closeStarted = true
        tryFinishClose()
    }

    // MARK: Writing

    /// Queues `bytes` for sending without copying them. Never blocks; after `close()` or
    /// `writeEOF()` the bytes are dropped and the next drain reports it.
    public func write(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        let schedule = state.withLock { state -> Bool in
            guard !state.closing, !state.eofRequested, !state.lost else {
                state.droppedWrite = true
                return false
            }
            state.queue.append(bytes)
            state.buffered += bytes.count
            guard !state.flushScheduled, !state.sendInFlight else { return false }
            state.flushScheduled = true
            return true
        }
        if schedule { scheduleFlush() }
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
        guard !descriptorClosed else { return }
        enum Next {
            case nothing, send(UnsafeMutableRawPointer), zeroCopySend(UnsafeMutableRawPointer, chunks: [Bytes])
            case shutdown, close
        }
        let next = state.withLock { state -> Next in
            state.flushScheduled = false
            // An aborted connection may still hold the chunks of its cancelled send: never resend.
            guard !state.sendInFlight, !state.aborting else { return .nothing }
            if state.queue.isEmpty {
                if state.closing { return .close }
                if state.eofRequested { return .shutdown }
                return .nothing
            }
            // Loop-thread state only, no callbacks: safe under the lock, and one lock per flush.
            guard let scratch = loop.takeMessageScratch(orWait: self) else {
                // No room until the loop's next submit, which calls back; writes meanwhile need
                // not schedule another flush.
                state.flushScheduled = true
                return .nothing
            }
            let (count, bytes) = state.queue.fill(scratch.iovecs, capacity: MessageScratch.iovecsPerSend)
            loop.returnUnusedMessageScratch(iovecs: MessageScratch.iovecsPerSend - count)
            scratch.message.pointee.msg_iovlen = count
            state.sendInFlight = true
            let message = UnsafeMutableRawPointer(scratch.message)
            if zeroCopyEligible, let threshold = loop.zeroCopySendThreshold, bytes >= threshold {
                return .zeroCopySend(message, chunks: state.queue.inFlightChunks)
            }
            return .send(message)
        }
        switch next {
        case .nothing:
            return
        case .send(let message):
            sendUserData = loop.submit(
                .sendMessage(fd: fileDescriptor, message: message, flags: Int32(MSG_NOSIGNAL)), target: self,
                tag: Tag.send)
        case .zeroCopySend(let message, let chunks):
            loop.counters.zeroCopySends += 1
            sendUserData = loop.submit(
                .sendMessageZeroCopy(fd: fileDescriptor, message: message, flags: Int32(MSG_NOSIGNAL)),
                target: ZeroCopySend(transport: self, holding: chunks), tag: 0)
        case .shutdown:
            if !shutdownSent {
                shutdownSent = true
                _ = Glibc.shutdown(fileDescriptor, Int32(SHUT_WR))
            }
        case .close:
            beginClose()
        }
    }

    /// The kernel reported copying a zero-copy send: stop paying for notifications on this
    /// connection, unless told to measure them.
    func zeroCopyWasCopied() {
        if !loop.configuration.zeroCopyLocalSends { zeroCopyEligible = false }
    }

    /// A zero-copy send's result (its ``ZeroCopySend`` keeps the memory until the notification).
    func zeroCopySendCompleted(_ completion: Completion) {
        let result = completion.result
        if result == -EOPNOTSUPP || result == -EINVAL {
            // Unix sockets do not support zero-copy sends (EOPNOTSUPP), a 6.1 kernel not the usage
            // report (EINVAL): nothing was sent, so send the same bytes plainly from now on.
            loop.counters.zeroCopyFallbacks += 1
            zeroCopyEligible = false
            if result == -EINVAL { loop.zeroCopySendThreshold = nil }
            state.withLock { $0.sendInFlight = false }
            flush()
            tryFinishClose()
            return
        }
        sendCompleted(result)
    }

    private func sendCompleted(_ result: Int32) {
        if result < 0 {
            state.withLock { $0.sendInFlight = false }
            if result != -ECANCELED { fail(StreamError.from(errno: -result, operation: "sendmsg")) }
            tryFinishClose()
            return
        }
        loop.counters.bytesSent += Int(result)
        let drained = state.withLock { state -> [UnsafeContinuation<Void, any Error>] in
            state.sendInFlight = false
            state.queue.consume(Int(result))
            // An aborted connection kept the chunks this send read; nothing else goes out now, and
            // its write buffer was emptied when it aborted (asyncio's abort clears the buffer).
            if state.aborting {
                state.queue.removeAll()
            } else {
                state.buffered -= Int(result)
            }
            guard state.buffered <= state.low else { return [] }
            return state.drainWaiters.takeAll()
        }
        for waiter in drained { waiter.resume() }
        flush()
        tryFinishClose()
    }

    /// Half-closes the connection once what is queued has been sent (asyncio `write_eof`).
    public func writeEOF() {
        let schedule = state.withLock { state -> Bool in
            guard !state.closing, !state.eofRequested else { return false }
            state.eofRequested = true
            guard !state.flushScheduled, !state.sendInFlight else { return false }
            state.flushScheduled = true
            return true
        }
        if schedule { scheduleFlush() }
    }

    /// Whether the transport supports ``writeEOF()`` (true for TCP and Unix stream sockets).
    public var canWriteEOF: Bool { true }

    /// Bytes written and not yet confirmed sent (asyncio `get_write_buffer_size`).
    public var writeBufferSize: Int { state.withLock { $0.buffered } }

    /// The write-buffer water marks (asyncio `get_write_buffer_limits`).
    public var writeBufferLimits: (low: Int, high: Int) { state.withLock { ($0.low, $0.high) } }

    /// Sets the write-buffer water marks: `drain()` waits while more than `high` bytes are queued,
    /// until no more than `low` are.
    ///
    /// - Parameters:
    ///   - high: Default 64 KiB, or 4 × `low` when only `low` is given.
    ///   - low: Default `high / 4`.
    ///
    /// Corresponds to asyncio `transport.set_write_buffer_limits(high, low)`.
    public func setWriteBufferLimits(high: Int? = nil, low: Int? = nil) {
        // 4 × low saturates: any low is accepted, and a high beyond Int.max means no limit anyway.
        let high = high ?? (low.map { $0.multipliedReportingOverflow(by: 4) }.map { $1 ? Int.max : $0 } ?? 64 * 1024)
        let low = low ?? high / 4
        precondition(high >= low && low >= 0, "high (\(high)) must be >= low (\(low)) must be >= 0")
        let released = state.withLock { state -> [UnsafeContinuation<Void, any Error>] in
            state.high = high
            state.low = low
            guard state.buffered <= low else { return [] }
            return state.drainWaiters.takeAll()
        }
        for waiter in released { waiter.resume() }
    }

    /// What a drain has to do, decided under one lock.
    package enum DrainStatus {
        case ready, wait, fail(any Error)
    }

    /// The drain decision of asyncio's `StreamWriter.drain` for this transport, in one lock: a
    /// connection error wins, then close/dropped writes (``StreamError/closed``), then the water
    /// mark. The common case (below the mark) returns without suspending.
    package var drainStatus: DrainStatus {
        state.withLock { state in
            if let error = state.lostError { return .fail(error) }
            if state.closing || state.droppedWrite { return .fail(StreamError.closed) }
            if state.lost { return .fail(StreamError.connectionReset) }
            return state.buffered > state.high ? .wait : .ready
        }
    }

    /// Waits while the write buffer is above the high-water mark, until it is at or below the low one.
    /// - Throws: the connection's error, or ``StreamError/connectionReset`` when it was lost.
    /// - Throws: `CancellationError` when the task is cancelled while it waits.
    package func waitForDrain() async throws {
        try await wait(in: .drain) { state in
            if state.lost { throw state.lostError ?? StreamError.connectionReset }
            return state.buffered <= state.high
        }
    }

    /// Waits in `list` until `isReady` (checked under the lock first) holds and a waker resumes the
    /// list; task cancellation takes the waiter out and throws `CancellationError`.
    private func wait(
        in list: WaitList, until isReady: (State) throws -> Bool
    ) async throws {
        let id = state.withLock { $0[list].reserveID() }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                enum Outcome { case wait, ready, fail(any Error) }
                let outcome = state.withLock { state -> Outcome in
                    do {
                        if try isReady(state) { return .ready }
                    } catch {
                        return .fail(error)
                    }
                    if Task.isCancelled { return .fail(CancellationError()) }
                    state[list].add(continuation, id: id)
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .ready: continuation.resume()
                case .fail(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            // Under the same lock as the add: either the waiter is there to take out, or the add
            // comes later and sees Task.isCancelled.
            let waiter = state.withLock { $0[list].remove(id) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Whether the socket is closed and the loss reported.
    package var isLost: Bool { state.withLock { $0.lost } }

    /// The connection's error, once the connection failed.
    package var connectionError: (any Error)? { state.withLock { $0.lostError } }

    // MARK: Reading

    /// Stops delivering received data until ``resumeReading()``; from the moment this returns, no
    /// data reaches the reader (asyncio `pause_reading`).
    public func pauseReading() {
        let changed = state.withLock { state -> Bool in
            guard !state.readingPaused, !state.closing else { return false }
            state.readingPaused = true
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

    /// Delivers and receives again after ``pauseReading()`` (asyncio `resume_reading`).
    public func resumeReading() {
        let changed = state.withLock { state -> Bool in
            guard state.readingPaused, !state.closing else { return false }
            state.readingPaused = false
            return true
        }
        if changed { loop.execute { self.syncReceive() } }
    }

    /// Whether the transport is receiving (asyncio `is_reading`).
    public var isReading: Bool { state.withLock { !$0.readingPaused && !$0.closing } }

    private func onLoop(_ work: @escaping @Sendable (StreamTransport) -> Void) {
        if loop.inEventLoop {
            work(self)
        } else {
            loop.execute { work(self) }
        }
    }

    private func armReceive() {
        guard !receiveArmed, !eofReceived, !closeStarted, !descriptorClosed, !loop.isStopping else { return }
        receiveArmed = true
        receiveCancelRequested = false
        // Capped, so that once the reader pauses at most this much more arrives before the
        // receive ends by itself (the kernel may otherwise post megabytes in one turn).
        let limit = loop.multishotReceiveLimit
        receiveIsLimited = limit > 0
        receiveUserData = loop.submit(
            .receiveMultishot(
                fd: fileDescriptor, bufferGroup: loop.bufferPool.group, bundle: loop.useReceiveBundles,
                totalLimit: limit),
            target: self, tag: Tag.receive)
    }

    /// Makes the receive match whether reading is wanted *now*, on the loop thread. Pause and
    /// resume requests from other threads arrive here in any order; acting on the current wish
    /// (not on the request) is what keeps a late "pause" from stopping a reader that resumed.
    /// An armed receive whose cancel is in flight is re-synced when its final completion lands.
    private func syncReceive() {
        if readingWanted {
            deliverHeld()
            // Handing over what was held may have paused reading again: arming now would receive
            // past the reader's limit into `held`, once per pause, without bound.
            if held.isEmpty, readingWanted { armReceive() }
        }
        cancelUnwantedReceive()
    }

    private var readingWanted: Bool { state.withLock { !$0.readingPaused && !$0.closing } }

    /// Cancels the armed receive when reading is not wanted (paused or closing).
    private func cancelUnwantedReceive() {
        guard receiveArmed, !receiveCancelRequested, !readingWanted else { return }
        receiveCancelRequested = true
        loop.submitIgnoringResult(.cancel(target: receiveUserData))
    }

    private var deliveryPaused: Bool {
        state.withLock { $0.readingPaused }
    }

    private func deliver(_ bytes: Bytes) {
        if !held.isEmpty || deliveryPaused {
            held.append(bytes)
        } else {
            delegate?.transport(self, received: bytes)
        }
    }

    /// Hands over what arrived while paused, for as long as reading stays wanted (the reader may
    /// pause again while taking it).
    private func deliverHeld() {
        while !held.isEmpty, !deliveryPaused {
            delegate?.transport(self, received: held.removeFirst())
        }
        if held.isEmpty, heldEOF, !deliveryPaused {
            heldEOF = false
            delegate?.transportReceivedEOF(self)
        }
    }

    private func receiveCompleted(_ completion: Completion) {
        let result = completion.result
        let cancelled = receiveCancelRequested
        if !completion.hasMore {
            receiveArmed = false
            receiveCancelRequested = false
        }
        if result > 0, let id = completion.bufferID {
            loop.counters.bytesReceived += Int(result)
            let pool = loop.bufferPool!
            let copied = pool.takeReceived(
                firstID: id, count: Int(result), bufferHasMore: completion.bufferHasMore
            ) { deliver($0) }
            if copied > 0 { loop.recordCopiedOnReceive(copied) }
        } else if let id = completion.bufferID {
            loop.bufferPool.takeUnused(id: id, bufferHasMore: completion.bufferHasMore)
        }
        if result == 0 {
            eofReceived = true
            if held.isEmpty && !deliveryPaused {
                delegate?.transportReceivedEOF(self)
            } else {
                heldEOF = true
            }
        } else if result == -ENOBUFS {
            loop.counters.bufferExhaustions += 1
            if !completion.hasMore {
                // Buffers may already be back (recycled between the kernel's miss and now): then
                // re-arm this turn; otherwise wait for a recycle rather than spin on ENOBUFS.
                if loop.bufferPool.available > 0 {
                    loop.runAtEndOfTurn(ReceiveRearm(self))
                } else {
                    loop.waitForReceiveBuffers(ReceiveRearm(self))
                }
            }
        } else if result == -EINVAL && receiveIsLimited {
            // A kernel without multishot receive limits: receive unlimited from now on.
            loop.multishotReceiveLimit = 0
            rearmReceive()
        } else if result < 0 && result != -ECANCELED {
            fail(StreamError.from(errno: -result, operation: "recv"))
        } else if !completion.hasMore && !cancelled && result != -ECANCELED {
            // The kernel ended the multishot receive on its own (e.g. a full CQ ring): keep reading.
            rearmReceive()
        } else if !completion.hasMore {
            // Our cancel landed; reading may have been wanted again meanwhile.
            syncReceive()
        }
        if !completion.hasMore { tryFinishClose() }
    }

    fileprivate func rearmReceive() {
        guard !receiveArmed, !eofReceived, !closeStarted else { return }
        loop.counters.receiveRearms += 1
        syncReceive()
    }

    package override func complete(_ completion: Completion, tag: UInt64) {
        switch tag {
        case Tag.receive: receiveCompleted(completion)
        case Tag.send: sendCompleted(completion.result)
        default: preconditionFailure("unknown transport tag \(tag)")
        }
    }

    // MARK: Closing

    /// Closes the connection once what is queued has been sent (asyncio `close`).
    public func close() {
        let first = state.withLock { state -> Bool in
            guard !state.closing else { return false }
            state.closing = true
            return true
        }
        guard first else { return }
        onLoop { transport in
            transport.syncReceive()
            transport.flush()
        }
    }

    /// Closes the connection at once, dropping what is queued (asyncio `abort`).
    public func abort() {
        state.withLock { state in
            state.closing = true
            state.aborting = true
            // The send in flight still reads its chunks; the rest is dropped.
            state.queue.removeUnsent(keepingInFlight: state.sendInFlight)
            state.buffered = 0
        }
        onLoop { $0.beginClose() }
    }

    /// Ends the connection with `error` from any thread, dropping what is queued (asyncio's
    /// `_force_close(exc)`): readers and `waitClosed` see the error.
    package func abort(failing error: any Error) {
        onLoop { $0.fail(error) }
    }

    /// Whether ``close()`` or ``abort()`` was called or the connection failed (asyncio `is_closing`).
    public var isClosing: Bool { state.withLock { $0.closing } }

    /// Waits until the socket is closed (asyncio `wait_closed` on the writer).
    /// - Throws: `CancellationError` when the task is cancelled while it waits.
    package func waitClosed() async throws {
        try await wait(in: .close) { $0.lost }
    }

    /// Ends the connection with `error`: what is queued is dropped (asyncio `_fatal_error`).
    private func fail(_ error: any Error) {
        // asyncio's _fatal_error: the connection is gone, whatever was queued.
        state.withLock { state in
            // A connection already lost keeps how it ended.
            if state.lostError == nil, !state.lost { state.lostError = error }
            state.closing = true
            state.aborting = true
            // The send in flight still reads its chunks; the rest is dropped.
            state.queue.removeUnsent(keepingInFlight: state.sendInFlight)
            state.buffered = 0
        }
        beginClose()
    }

    private func beginClose() {
        guard !closeStarted else { return }
        closeStarted = true
        if receiveArmed, !receiveCancelRequested {
            receiveCancelRequested = true
            loop.submitIgnoringResult(.cancel(target: receiveUserData))
        }
        let sending = state.withLock { $0.sendInFlight }
        if sending { loop.submitIgnoringResult(.cancel(target: sendUserData)) }
        tryFinishClose()
    }

    /// Closes the descriptor once no operation uses it, then reports the loss.
    private func tryFinishClose() {
        guard closeStarted, !descriptorClosed, !receiveArmed else { return }
        let (sending, error) = state.withLock { ($0.sendInFlight, $0.lostError) }
        guard !sending else { return }
        descriptorClosed = true
        Glibc.close(fileDescriptor)
        loop.unregister(self)
        let (drainers, closers) = state.withLock { state in
            state.lost = true
            return (state.drainWaiters.takeAll(), state.closeWaiters.takeAll())
        }
        let lostError = error ?? StreamError.connectionReset
        for waiter in drainers { waiter.resume(throwing: lostError) }
        let delegate = self.delegate
        self.delegate = nil
        delegate?.transport(self, connectionLost: error)
        for waiter in closers { waiter.resume() }
    }
}

/// Re-arms a transport's receive once the loop has buffers again.
private final class ReceiveRearm: EndOfTurnWork {
    let transport: StreamTransport
    init(_ transport: StreamTransport) { self.transport = transport }
    func endOfTurn() { transport.rearmReceive() }
}
