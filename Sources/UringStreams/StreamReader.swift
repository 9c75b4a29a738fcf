/// Buffered reading from a stream, as asyncio's `StreamReader`.
///
/// Received data is kept as a queue of `Bytes` chunks; a read that lies within one chunk returns
/// it without copying. Reading pauses the transport above 2 × `limit` buffered bytes and resumes it
/// once reads bring the buffer down to `limit`.
///
/// Reads may come from any task; only one may wait at a time. Corresponds to asyncio
/// `asyncio.StreamReader`.
public final class StreamReader: Sendable {
    fileprivate struct State {
        var buffer = ChunkQueue()
        var eof = false
        var exception: (any Error)?
        var waiter: UnsafeContinuation<Void, any Error>?
        /// Set while a task waits and until it resumes: a second waiting read is an error.
        var waiting = false
        var paused = false
        /// Strong: a weak reference would give every transport a side table and slow down each
        /// of its retains. The cycle through the transport's delegate ends when the connection is
        /// lost (the transport drops its delegate then), and the writer closes it on deinit.
        var transport: StreamTransport?
    }

    /// The buffer limit: separators must be found within it, and it sets the flow-control marks.
    public let limit: Int
    private let state = Locked(State())

    /// A standalone reader with the default limit (64 KiB), fed by hand.
    ///
    /// Corresponds to asyncio `StreamReader()`.
    public convenience init() {
        self.init(validLimit: 65_536)
    }

    /// A standalone reader, fed by hand.
    ///
    /// - Parameter limit: The buffer limit; must be positive.
    /// - Throws: ``StreamError/invalidArgument(_:)`` when `limit <= 0`.
    ///
    /// Corresponds to asyncio `StreamReader(limit=...)`.
    public convenience init(limit: Int) throws {
        guard limit > 0 else { throw StreamError.invalidArgument("Limit cannot be <= 0") }
        self.init(validLimit: limit)
    }

    init(validLimit: Int) {
        limit = validLimit
    }

    /// Connects the reader to the transport it pauses and resumes.
    func attach(_ transport: StreamTransport) {
        state.withLock { $0.transport = transport }
    }

    // MARK: Feeding

    /// Appends received bytes and wakes a waiting read (asyncio `feed_data`).
    ///
    /// - Parameter data: The bytes; `Bytes` are kept without copying, other collections are copied.
    public func feedData(_ data: some Collection<UInt8>) {
        if let bytes = data as? Bytes {
            feed(bytes)
        } else {
            feed(Bytes(data))
        }
    }

    func feed(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        let waiter = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            assert(!state.eof, "feedData after feedEOF")
            state.buffer.append(bytes)
            if !state.paused, state.buffer.count > 2 * limit, let transport = state.transport {
                // Under the lock, so pause and resume reach the transport in the order decided
                // here; a reader on another thread must not resume before this pause lands.
                state.paused = true
                transport.pauseReading()
            }
            return state.waiter.take()
        }
        waiter?.resume()
    }

    /// Marks the end of the stream and wakes a waiting read (asyncio `feed_eof`).
    public func feedEOF() {
        let waiter = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            state.eof = true
            return state.waiter.take()
        }
        waiter?.resume()
    }

    /// Whether the buffer is empty and the stream has ended (asyncio `at_eof`).
    public var atEOF: Bool {
        state.withLock { $0.eof && $0.buffer.isEmpty }
    }

    /// The error every later read throws, once set (asyncio `exception()`).
    public var exception: (any Error)? {
        state.withLock { $0.exception }
    }

    /// Stores `error`, which every later read throws, and wakes a waiting read with it
    /// (asyncio `set_exception`).
    public func setException(_ error: any Error) {
        let waiter = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            state.exception = error
            return state.waiter.take()
        }
        waiter?.resume(throwing: error)
    }

    // MARK: Reading

    /// Reads up to `n` bytes; with `n < 0`, reads until the end of the stream.
    ///
    /// Where asyncio returns everything buffered up to `n`, this returns at most what is left of
    /// the first chunk received from the socket when more chunks follow, so that it never copies
    /// received bytes; the rest comes with the next read. Both keep the promise of "up to `n`".
    ///
    /// - Parameter n: The most bytes to return; -1 (the default) for everything until EOF.
    /// - Returns: The bytes; empty at EOF or when `n == 0`.
    /// - Throws: The stored connection error; `CancellationError` (nothing is consumed);
    ///   ``StreamError/readInProgress`` when another read is waiting.
    ///
    /// Corresponds to asyncio `await reader.read(n=-1)`.
    public func read(_ n: Int = -1) async throws -> Bytes {
        try checkException()
        if n == 0 { return Bytes() }
        if n < 0 {
            // Wait for EOF without consuming, so a cancelled read(-1) leaves every byte in place.
            while true {
                let (done, seen) = try state.withLock { state -> (Bool, Int) in
                    if let error = state.exception { throw error }
                    return (state.eof, state.buffer.count)
                }
                if done { break }
                try await waitForData(moreThan: seen)
            }
            return take { $0.buffer.count }
        }
        while true {
            let ready = try state.withLock { state -> Bool in
                if let error = state.exception { throw error }
                return !state.buffer.isEmpty || state.eof
            }
            if ready { break }
            try await waitForData(moreThan: 0)
        }
        // Up to n bytes, as asyncio, but never a copy of received data: what lies beyond the first
        // received chunk is left for the next read (it may split a message anywhere, as TCP does).
        return take { $0.buffer.uncopiedPrefix(upTo: Swift.min(n, $0.buffer.count)) }
    }

    /// Reads one line, up to and including `\n`.
    ///
    /// - Returns: The line; at EOF the partial last line, or empty bytes.
    /// - Throws: ``LimitOverrunError`` when no `\n` comes within the limit (the overrunning data is
    ///   discarded as asyncio does); the stored error; `CancellationError` (nothing consumed).
    ///
    /// Corresponds to asyncio `await reader.readline()`.
    public func readLine() async throws -> Bytes {
        do {
            return try await readUntil(anyOf: Self.newline)
        } catch let error as IncompleteReadError {
            return error.partial
        } catch let error as LimitOverrunError {
            state.withLock { state in
                if state.buffer.hasPrefix([UInt8(ascii: "\n")], at: error.consumed) {
                    state.buffer.drop(error.consumed + 1)
                } else {
                    state.buffer.removeAll()
                }
                Self.resumeIfDrained(&state, limit: limit)
            }
            throw error
        }
    }

    /// readLine's separator, made once: building it per call cost two allocations per line.
    private static let newline: [[UInt8]] = [[UInt8(ascii: "\n")]]

    /// Reads until `separator`, returning the data with the separator.
    ///
    /// - Parameter separator: One or more bytes; default `\n`.
    /// - Throws: ``IncompleteReadError`` at EOF before the separator (the buffer is consumed);
    ///   ``LimitOverrunError`` when it is not found within the limit (nothing is consumed);
    ///   ``StreamError/invalidArgument(_:)`` for an empty separator.
    ///
    /// Corresponds to asyncio `await reader.readuntil(separator=b'\n')`.
    public func readUntil(_ separator: some Collection<UInt8> = [UInt8(ascii: "\n")]) async throws -> Bytes {
        try await readUntil(anyOf: [Array(separator)])
    }

    /// Reads until the first of several separators; where matches overlap, the one that ends first
    /// wins (the shortest).
    ///
    /// - Parameter separators: At least one separator, each at least one byte.
    /// - Throws: As ``readUntil(_:)``.
    ///
    /// Corresponds to asyncio 3.13 `await reader.readuntil((sep1, sep2))`.
    public func readUntil(anyOf separators: [[UInt8]]) async throws -> Bytes {
        let sorted = separators.count == 1 ? separators : separators.sorted { $0.count < $1.count }
        guard let shortest = sorted.first else {
            throw StreamError.invalidArgument("Separator should contain at least one element")
        }
        guard !shortest.isEmpty else {
            throw StreamError.invalidArgument("Separator should be at least one-byte string")
        }
        let longest = sorted.last!.count
        try checkException()
        var offset = 0
        while true {
            enum Step { case found(end: Int), wait(seen: Int) }
            let step = try state.withLock { state -> Step in
                if let error = state.exception { throw error }
                let count = state.buffer.count
                if count - offset >= shortest.count {
                    var bestStart: Int?
                    var bestEnd: Int?
                    for separator in sorted {
                        if let start = state.buffer.firstIndex(of: separator, from: offset) {
                            let end = start + separator.count
                            if bestEnd == nil || end < bestEnd! {
                                bestEnd = end
                                bestStart = start
                            }
                        }
                    }
                    if let bestStart, let bestEnd {
                        if bestStart > limit {
                            throw LimitOverrunError(
                                message: "Separator is found, but chunk is longer than limit", consumed: bestStart)
                        }
                        return .found(end: bestEnd)
                    }
                    offset = Swift.max(0, count + 1 - longest)
                    if offset > limit {
                        throw LimitOverrunError(
                            message: "Separator is not found, and chunk exceed the limit", consumed: offset)
                    }
                }
                if state.eof {
                    var copied = 0
                    let partial = state.buffer.take(state.buffer.count, copied: &copied)
                    throw IncompleteReadError(partial: partial, expected: nil)
                }
                return .wait(seen: count)
            }
            switch step {
            case .found(let end):
                return take { _ in end }
            case .wait(let seen):
                try await waitForData(moreThan: seen)
            }
        }
    }

    /// Reads exactly `n` bytes.
    ///
    /// - Throws: ``IncompleteReadError`` (with what arrived) when the stream ends first;
    ///   ``StreamError/invalidArgument(_:)`` for `n < 0`; the stored error; `CancellationError`.
    ///
    /// Corresponds to asyncio `await reader.readexactly(n)`.
    public func readExactly(_ n: Int) async throws -> Bytes {
        guard n >= 0 else { throw StreamError.invalidArgument("readexactly size can not be less than zero") }
        try checkException()
        if n == 0 { return Bytes() }
        while true {
            let (ready, seen) = try state.withLock { state -> (Bool, Int) in
                if let error = state.exception { throw error }
                if state.buffer.count >= n { return (true, 0) }
                if state.eof {
                    var copied = 0
                    let partial = state.buffer.take(state.buffer.count, copied: &copied)
                    throw IncompleteReadError(partial: partial, expected: n)
                }
                return (false, state.buffer.count)
            }
            if ready { break }
            try await waitForData(moreThan: seen)
        }
        return take { _ in n }
    }

    // MARK: Internals

    private func checkException() throws {
        if let error = state.withLock({ $0.exception }) { throw error }
    }

    /// Takes `count(state)` bytes from the front, resuming the transport when the buffer drained.
    private func take(_ count: (State) -> Int) -> Bytes {
        var copied = 0
        let (bytes, transport) = state.withLock { state -> (Bytes, StreamTransport?) in
            let bytes = state.buffer.take(count(state), copied: &copied)
            Self.resumeIfDrained(&state, limit: limit)
            return (bytes, state.transport)
        }
        if copied > 0, let transport { transport.loop.recordCopiedOnReceive(copied) }
        return bytes
    }

    /// Resumes the transport once reads brought the buffer down to `limit` (under the lock).
    private static func resumeIfDrained(_ state: inout State, limit: Int) {
        guard state.buffer.count <= limit else { return }
        resume(&state)
    }

    /// Resumes a paused transport (under the lock, see `feed`).
    private static func resume(_ state: inout State) {
        guard state.paused, let transport = state.transport else { return }
        state.paused = false
        transport.resumeReading()
    }

    /// Waits until more than `seen` bytes are buffered, or EOF or an error arrives. `seen` is what
    /// the caller's check observed: bytes fed between that check and this wait must not be
    /// missed. Waiting while paused would deadlock (a read of more than 2 × limit bytes), so
    /// reading resumes first, as asyncio's `_wait_for_data` does.
    private func waitForData(moreThan seen: Int) async throws {
        try state.withLock { state in
            if state.waiting { throw StreamError.readInProgress }
            state.waiting = true
            Self.resume(&state)
        }
        defer { state.withLock { $0.waiting = false } }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                enum Outcome { case wait, ready, cancelled }
                let outcome = state.withLock { state -> Outcome in
                    if Task.isCancelled { return .cancelled }
                    if state.exception != nil || state.eof || state.buffer.count > seen { return .ready }
                    state.waiter = continuation
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .ready: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            state.withLock { $0.waiter.take() }?.resume(throwing: CancellationError())
        }
    }
}

extension StreamReader: AsyncSequence {
    public typealias Element = Bytes

    /// Lines until EOF (asyncio `async for line in reader`).
    public struct AsyncIterator: AsyncIteratorProtocol {
        let reader: StreamReader

        public mutating func next() async throws -> Bytes? {
            let line = try await reader.readLine()
            return line.isEmpty ? nil : line
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: self)
    }
}
