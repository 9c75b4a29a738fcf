import Glibc

/// The write side of a connection as a value: what is queued, how much is unconfirmed, whether a
/// send is in flight, and where closing stands. Each method changes the state and returns what
/// the transport must do; nothing here touches a ring, a lock or a protocol, so it is tested on
/// its own (SwiftNIO's `PendingStreamWritesState` is the model).
struct WriteBuffer {
    /// How far the write side is from closed, as the user and errors asked.
    enum Phase: Equatable {
        /// Writes are accepted.
        case open
        /// `writeEOF()`: what is queued goes out, then the write half is shut down.
        case eofRequested
        /// `close()`: what is queued goes out, then the descriptor is closed.
        case closing
        /// `abort()` or a failure: nothing more goes out.
        case aborted
    }

    /// Whether a send is scheduled or in flight (one at a time per connection).
    enum Sending: Equatable {
        case idle
        /// A flush will run (end of the loop turn, or when the message scratch has room).
        case scheduled
        case inFlight
    }

    private(set) var phase = Phase.open
    private(set) var sending = Sending.idle
    /// Bytes written and not yet confirmed sent (asyncio's write buffer size).
    private(set) var buffered = 0
    private(set) var high = WriteBufferDefaults.high
    private(set) var low = WriteBufferDefaults.high / 4
    /// A write was dropped (after close, writeEOF or a failure): the next drain says so.
    private(set) var droppedWrite = false
    /// The protocol has been told to pause writing and not yet to resume.
    private(set) var protocolPaused = false
    private var queue = WriteQueue()

    var isClosing: Bool { phase == .closing || phase == .aborted }
    var hasQueuedBytes: Bool { !queue.isEmpty }

    /// What a write asks of the transport.
    struct WriteEffects: Equatable {
        var scheduleFlush = false
        var pauseProtocol = false
    }

    /// Queues `bytes` unless the write side is shut.
    mutating func write(_ bytes: Bytes) -> WriteEffects {
        guard phase == .open else {
            droppedWrite = true
            return WriteEffects()
        }
        queue.append(bytes)
        buffered += bytes.count
        var effects = WriteEffects()
        if sending == .idle {
            sending = .scheduled
            effects.scheduleFlush = true
        }
        if !protocolPaused, buffered > high {
            protocolPaused = true
            effects.pauseProtocol = true
        }
        return effects
    }

    /// `writeEOF()`: returns whether a flush must be scheduled to get to the shutdown.
    mutating func requestEOF() -> Bool {
        guard phase == .open else { return false }
        phase = .eofRequested
        return scheduleIfIdle()
    }

    /// `close()`: returns whether this was the first request to close.
    mutating func requestClose() -> Bool {
        guard phase == .open || phase == .eofRequested else { return false }
        phase = .closing
        return true
    }

    /// `abort()` or a failure: what is not being sent is dropped now, and the write buffer is
    /// empty as far as the user can see (asyncio clears it); the chunks of a send in flight stay
    /// until its completion, which must not count them again.
    mutating func abort() {
        phase = .aborted
        queue.removeUnsent(keepingInFlight: sending == .inFlight)
        buffered = 0
    }

    private mutating func scheduleIfIdle() -> Bool {
        guard sending == .idle else { return false }
        sending = .scheduled
        return true
    }

    /// What a flush does next.
    enum Flush: Equatable {
        case nothing
        /// Send the `iovecs` filled iovecs, `bytes` bytes in all.
        case send(iovecs: Int, bytes: Int)
        case shutdownWrite
        case close
    }

    /// Runs a flush: with bytes queued, fills up to `capacity` iovecs at `iovecs` for one send.
    /// Without iovec memory (`iovecs` nil) the flush stays scheduled: the caller is called back
    /// when there is room.
    mutating func flush(
        iovecs: UnsafeMutablePointer<iovec>?, capacity: Int
    ) -> Flush {
        guard sending != .inFlight, phase != .aborted else {
            if sending == .scheduled { sending = .idle }
            return .nothing
        }
        if queue.isEmpty {
            sending = .idle
            switch phase {
            case .closing: return .close
            case .eofRequested: return .shutdownWrite
            default: return .nothing
            }
        }
        guard let iovecs else {
            sending = .scheduled
            return .nothing
        }
        let (count, bytes) = queue.fill(iovecs, capacity: capacity)
        sending = .inFlight
        return .send(iovecs: count, bytes: bytes)
    }

    /// The chunks the send in flight reads, for a zero-copy send to hold until its notification.
    var inFlightChunks: [Bytes] { queue.inFlightChunks }

    /// What a send's completion asks of the transport.
    struct SendEffects: Equatable {
        /// Flush again (more is queued, or a close/EOF waits for the queue to empty).
        var flushAgain = false
        var resumeProtocol = false
        /// New, lower water marks put the queue above the high one.
        var pauseProtocol = false
        /// Drains waiting above the high-water mark may go on.
        var wakeDrainers = false
    }

    /// The send in flight confirmed `sent` bytes (a short send leaves the rest queued).
    mutating func sendCompleted(sent: Int) -> SendEffects {
        sending = .idle
        queue.consume(sent)
        if phase == .aborted {
            // Aborted while sending: nothing else goes out, and the buffer was emptied then.
            queue.removeAll()
            return SendEffects()
        }
        buffered -= sent
        var effects = SendEffects(flushAgain: true)
        if buffered <= low {
            effects.wakeDrainers = true
            if protocolPaused {
                protocolPaused = false
                effects.resumeProtocol = true
            }
        }
        return effects
    }

    /// The send in flight failed or was cancelled: nothing of it was confirmed.
    mutating func sendFailed() {
        sending = .idle
    }

    /// A zero-copy send the kernel refused without sending anything: the same bytes go again.
    mutating func sendRefused() -> Bool {
        sending = .idle
        return !queue.isEmpty || phase == .closing || phase == .eofRequested
    }

    /// New water marks (already checked).
    mutating func setLimits(high: Int, low: Int) -> SendEffects {
        self.high = high
        self.low = low
        var effects = SendEffects()
        if buffered <= low {
            effects.wakeDrainers = true
            if protocolPaused {
                protocolPaused = false
                effects.resumeProtocol = true
            }
        } else if buffered > high, !protocolPaused {
            protocolPaused = true
            effects.pauseProtocol = true
        }
        return effects
    }
}
