import Synchronization
@_spi(UringInternals) import UringRuntime

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
        /// The waiting read (one at most), resumed (without an error: the read checks again) when
        /// data, EOF or an error arrives, or with `CancellationError` when its task is cancelled.
        var waiters = Waiters<any Error>()
        /// Set from a read's first wait until it finishes: meanwhile no other read may start.
        var reading = false
        /// Counts feeds, EOF and errors, so a read that found nothing can tell whether anything
        /// arrived before its wait began.
        var changes = 0
        /// What the waiting read needs from a feed; a feed that cannot help it does not wake it.
        var wakeNeed = WakeNeed.anyData
        /// The connection's handler task while it runs (``cover(_:)``), 0 otherwise: its reads
        /// wait without a cancellation handler of their own, as the server wakes them.
        var coveredTask: UInt = 0
        /// The server cancelled the handler task: its reads stop waiting.
        var coveredCancelled = false
        /// Whether the waiting read is the handler task's, which ``coveredTaskCancelled()`` wakes.
        var waiterCovered = false
        /// Feeds that woke a waiting read, for tests of the wake-up policy.
        var feedWakeups = 0
        /// Waits of the handler task's reads (``waitCoveredForChange(since:)``), for tests.
        var coveredWaits = 0
        var paused = false
        /// Strong: a weak reference would give every transport a side table and slow down each
        /// of its retains. The cycle through the transport's delegate ends when the connection is
        /// lost (the transport drops its delegate then), and the writer closes it on deinit.
        var transport: (any Transport)?
    }

    /// The buffer limit: separators must be found within it, and it sets the flow-control marks.
    public let limit: Int
    /// Reading pauses above this much buffered memory (2 × `limit`, at most `Int.max`); computed,
    /// not stored, so the reader with its `hasException` flag still fits a 48-byte heap block.
    private var pauseAbove: Int {
        let (doubled, overflow) = limit.multipliedReportingOverflow(by: 2)
        return overflow ? Int.max : doubled
    }
    private let state = Locked(State())
    /// Whether `State.exception` is set, readable without the lock: `StreamWriter.drain` checks it
    /// on every call. Set under the lock, after the exception, and never cleared.
    private let hasException = Atomic<Bool>(false)

    /// A standalone reader with the default limit (64 KiB), fed by hand.
    ///
    /// Corresponds to asyncio `StreamReader()`.
    public convenience init() {
        self.init(validLimit: 65_536)
    }

    /// A standalone reader, fed by hand.
    ///
    /// - Parameter limit: The buffer limit; any value from 1 to `Int.max`.
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
    func attach(_ transport: any Transport) {
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
        let (waiter, copied, transport) = state.withLock {
            state -> (Waiters<any Error>.Taken, Int, (any Transport)?) in
            assert(!state.eof, "feedData after feedEOF")
            let copied = state.buffer.append(bytes)
            state.changes &+= 1
            // A waiting read would resume reading at once (asyncio's _wait_for_data): pausing
            // under it would only cancel and re-arm the receive.
            if !state.paused, !state.reading, state.buffer.memoryCost > pauseAbove, let transport = state.transport {
                // Under the lock, so pause and resume reach the transport in the order decided
                // here; a reader on another thread must not resume before this pause lands.
                state.paused = true
                transport.pauseReading()
            }
            let wake = !state.waiters.isEmpty && state.wakeNeed.isMet(by: bytes, buffered: state.buffer.count)
            if wake { state.feedWakeups &+= 1 }
            return (wake ? state.waiters.takeAll() : .none, copied, state.transport)
        }
        if copied > 0, let transport { transport.loop.recordCopiedOnReceive(copied) }
        waiter.resume()
    }

    /// Marks the end of the stream and wakes a waiting read (asyncio `feed_eof`).
    public func feedEOF() {
        state.withLock { state in
            state.eof = true
            state.changes &+= 1
            return state.waiters.takeAll()
        }.resume()
    }

    /// Whether the buffer is empty and the stream has ended (asyncio `at_eof`).
    public var atEOF: Bool {
        state.withLock { $0.eof && $0.buffer.isEmpty }
    }

    /// The error every later read throws, once set (asyncio `exception()`).
    public var exception: (any Error)? {
        guard hasException.load(ordering: .acquiring) else { return nil }
        return state.withLock { $0.exception }
    }

    /// Stores `error`, which every later read throws, and wakes a waiting read with it
    /// (asyncio `set_exception`).
    public func setException(_ error: any Error) {
        state.withLock { state in
            state.exception = error
            hasException.store(true, ordering: .releasing)
            state.changes &+= 1
            return state.waiters.takeAll()
        }.resume()
    }

    /// What the reader holds, for tests of its memory bound: payload bytes and their total cost
    /// including chunk records.
    package var bufferedMemory: (bytes: Int, cost: Int) {
        state.withLock { ($0.buffer.count, $0.buffer.memoryCost) }
    }

    /// Whether a read is waiting, and how many feeds have woken one, for tests of the wake-up
    /// policy.
    package var waitingRead: (isWaiting: Bool, feedWakeups: Int) {
        state.withLock { (!$0.waiters.isEmpty, $0.feedWakeups) }
    }

    /// How many reads of the connection's handler task waited without a cancellation handler of
    /// their own, for tests that the handler's reads take that path.
    package var coveredWaits: Int {
        state.withLock { $0.coveredWaits }
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
    nonisolated(nonsending) public func read(_ n: Int = -1) async throws -> Bytes {
        if n == 0 {
            try checkException()
            return Bytes()
        }
        if n < 0 {
            // Waits for EOF without consuming, so a cancelled read(-1) leaves every byte in place.
            return try await perform(wakingOn: .eof) { state, copied in
                state.eof ? state.buffer.take(state.buffer.count, copied: &copied) : nil
            }
        }
        return try await perform(wakingOn: .anyData) { state, copied in
            guard !state.buffer.isEmpty || state.eof else { return nil }
            // Up to n bytes, as asyncio, but never a copy of received data: what lies beyond the
            // first received chunk is left for the next read (it may split a message anywhere, as
            // TCP does).
            let available = state.buffer.uncopiedPrefix(upTo: Swift.min(n, state.buffer.count))
            return state.buffer.take(available, copied: &copied)
        }
    }

    /// Reads one line, up to and including `\n`.
    ///
    /// - Returns: The line; at EOF the partial last line, or empty bytes.
    /// - Throws: ``LimitOverrunError`` when no `\n` comes within the limit (the overrunning data is
    ///   discarded as asyncio does); the stored error; `CancellationError` (nothing consumed).
    ///
    /// Corresponds to asyncio `await reader.readline()`.
    nonisolated(nonsending) public func readLine() async throws -> Bytes {
        var scan = SeparatorScan(Self.newline)
        return try await perform(wakingOn: .separator(ending: UInt8(ascii: "\n"), orAbove: limit)) { state, copied in
            do {
                return try scan.attempt(&state, limit: limit, copied: &copied)
            } catch let error as IncompleteReadError {
                return error.partial
            } catch let error as LimitOverrunError {
                // asyncio's readline: drop the line that overran (with its separator when that is
                // what comes next), or everything when no separator is in sight.
                if state.buffer.hasPrefix(Self.newline[0], at: error.consumed) {
                    state.buffer.drop(error.consumed + 1)
                } else {
                    state.buffer.removeAll()
                }
                throw error
            }
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
    nonisolated(nonsending) public func readUntil(_ separator: some Collection<UInt8> = [UInt8(ascii: "\n")])
        async throws -> Bytes
    {
        try await readUntil(anyOf: [Array(separator)])
    }

    /// Reads until the first of several separators; where matches overlap, the one that ends first
    /// wins (the shortest).
    ///
    /// - Parameter separators: At least one separator, each at least one byte.
    /// - Throws: As ``readUntil(_:)``.
    ///
    /// Corresponds to asyncio 3.13 `await reader.readuntil((sep1, sep2))`.
    nonisolated(nonsending) public func readUntil(anyOf separators: [[UInt8]]) async throws -> Bytes {
        let sorted = separators.count == 1 ? separators : separators.sorted { $0.count < $1.count }
        guard let shortest = sorted.first else {
            throw StreamError.invalidArgument("Separator should contain at least one element")
        }
        guard !shortest.isEmpty else {
            throw StreamError.invalidArgument("Separator should be at least one-byte string")
        }
        var scan = SeparatorScan(sorted)
        return try await perform(wakingOn: scan.wakeNeed(limit: limit)) { state, copied in
            try scan.attempt(&state, limit: limit, copied: &copied)
        }
    }

    /// Reads exactly `n` bytes.
    ///
    /// - Throws: ``IncompleteReadError`` (with what arrived) when the stream ends first;
    ///   ``StreamError/invalidArgument(_:)`` for `n < 0`; the stored error; `CancellationError`.
    ///
    /// Corresponds to asyncio `await reader.readexactly(n)`.
    nonisolated(nonsending) public func readExactly(_ n: Int) async throws -> Bytes {
        guard n >= 0 else { throw StreamError.invalidArgument("readexactly size can not be less than zero") }
        if n == 0 {
            try checkException()
            return Bytes()
        }
        return try await perform(wakingOn: .count(n)) { state, copied in
            if state.buffer.count >= n { return state.buffer.take(n, copied: &copied) }
            guard state.eof else { return nil }
            let partial = state.buffer.take(state.buffer.count, copied: &copied)
            throw IncompleteReadError(partial: partial, expected: n)
        }
    }

    // MARK: Internals

    private func checkException() throws {
        if let error = exception { throw error }
    }

    /// Runs one read: `attempt` (under the lock, after the stored error is checked) returns the
    /// result, throws, or returns nil to wait for more data, after which it runs again. Checking
    /// and taking happen under one lock, and only one read may wait at a time: a read that would
    /// start while another waits throws ``StreamError/readInProgress``. Feeds wake the read only
    /// once `need` is met (EOF and errors always do).
    nonisolated(nonsending) private func perform(
        wakingOn need: WakeNeed, _ attempt: (inout State, inout Int) throws -> Bytes?
    ) async throws -> Bytes {
        var copied = 0
        defer { recordCopies(copied) }
        var seen = 0
        var covered = false
        let done = try state.withLock { state -> Bytes? in
            if state.reading { throw StreamError.readInProgress }
            if let result = try attemptChecked(&state, &copied, attempt) { return result }
            state.reading = true
            state.wakeNeed = need
            seen = state.changes
            covered = state.coveredTask != 0 && state.coveredTask == CurrentTask.address
            Self.resume(&state)
            return nil
        }
        if let done { return done }
        do {
            while true {
                if covered {
                    try await waitCoveredForChange(since: seen)
                } else {
                    try await waitForChange(since: seen)
                }
                let result = try state.withLock { state -> Bytes? in
                    let result = try attemptChecked(&state, &copied, attempt)
                    if result != nil { state.reading = false }
                    seen = state.changes
                    return result
                }
                if let result { return result }
            }
        } catch {
            state.withLock { state in
                state.reading = false
                Self.resumeIfDrained(&state, limit: limit)
            }
            throw error
        }
    }

    /// `attempt` after the stored-error check, resuming the transport when a result drained the
    /// buffer; under the lock.
    private func attemptChecked(
        _ state: inout State, _ copied: inout Int, _ attempt: (inout State, inout Int) throws -> Bytes?
    ) throws -> Bytes? {
        if let error = state.exception { throw error }
        let result: Bytes?
        do {
            result = try attempt(&state, &copied)
        } catch {
            // A failed read may have consumed (readExactly at EOF, readLine past the limit).
            Self.resumeIfDrained(&state, limit: limit)
            throw error
        }
        if result != nil { Self.resumeIfDrained(&state, limit: limit) }
        return result
    }

    private func recordCopies(_ copied: Int) {
        guard copied > 0, let transport = state.withLock({ $0.transport }) else { return }
        transport.loop.recordCopiedOnReceive(copied)
    }

    /// Resumes the transport once reads brought the buffer down to `limit` (under the lock).
    fileprivate static func resumeIfDrained(_ state: inout State, limit: Int) {
        guard state.buffer.memoryCost <= limit else { return }
        resume(&state)
    }

    /// Resumes a paused transport (under the lock, see `feed`).
    private static func resume(_ state: inout State) {
        guard state.paused, let transport = state.transport else { return }
        state.paused = false
        transport.resumeReading()
    }

    /// Waits until data, EOF or an error was fed after the read's last attempt (whose count of
    /// changes was `seen`), or the task is cancelled; on a feed that came between that attempt and
    /// this wait, returns at once.
    ///
    /// The wait of every task but a server's handler (``waitCoveredForChange(since:)``): clients,
    /// and tasks a handler starts. Written out rather than through `Locked.wait`: a client's idle
    /// task sleeps here, and the shared primitive's deeper frames cost each such task another
    /// 1 KiB slab (handler tasks measured 3.7 -> 4.8 KiB per idle connection when they waited
    /// here, `compare --scenarios idle-1000`). `CurrentTask.isCancelled` rather than
    /// `Task.isCancelled`: a retain and a release fewer per wait.
    nonisolated(nonsending) private func waitForChange(since seen: Int) async throws {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                enum Outcome { case wait, changed, cancelled }
                let outcome = state.withLock { state -> Outcome in
                    if CurrentTask.isCancelled { return .cancelled }
                    if state.changes != seen { return .changed }
                    state.waiters.add(continuation, id: 0)
                    state.waiterCovered = false
                    return .wait
                }
                switch outcome {
                case .wait: break
                case .changed: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            // One read waits at most (`reading`), so its id needs no reserving.
            state.withLock { $0.waiters.remove(0) }?.resume(throwing: CancellationError())
        }
    }

    /// `waitForChange` for the handler task's reads: the server wakes them when it cancels the
    /// task (``coveredTaskCancelled()``), so the wait installs no cancellation handler. That saves,
    /// per wait, adding and removing a cancellation record, the runtime's executor checks around
    /// `withTaskCancellationHandler`, and the retain `Task.isCancelled` costs (docs/benchmarks.md).
    ///
    /// `_unsafeInheritExecutor_withUnsafeThrowingContinuation` because the standard one first
    /// hops to the caller's isolation, where this already runs: a `swift_task_switch` (and a
    /// status-record lock) per wait. The task resumes where the resumer enqueues it (the loop, its
    /// executor preference), and the hop after the continuation returns to the caller's isolation
    /// as with the standard one.
    ///
    /// Should Swift gain cancellation shields, a shielded read must not take this path: the server
    /// wakes covered reads regardless.
    @inline(never)
    nonisolated(nonsending) private func waitCoveredForChange(since seen: Int) async throws {
        try await _unsafeInheritExecutor_withUnsafeThrowingContinuation { continuation in
            waitCovered(continuation, since: seen)
        }
    }

    private func waitCovered(_ continuation: UnsafeContinuation<Void, any Error>, since seen: Int) {
        enum Outcome { case wait, changed, cancelled }
        let outcome = state.withLock { state -> Outcome in
            // The server sets coveredCancelled after the task's flag or before it: either this
            // sees one, or the waiter is in place when the server looks. A task can also cancel
            // itself (through `withUnsafeCurrentTask`), and then only its flag tells.
            if state.coveredCancelled || CurrentTask.isCancelled { return .cancelled }
            if state.changes != seen { return .changed }
            state.waiters.add(continuation, id: 0)
            state.waiterCovered = true
            state.coveredWaits &+= 1
            return .wait
        }
        switch outcome {
        case .wait: break
        case .changed: continuation.resume()
        case .cancelled: continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: The connection's handler task

    /// Marks the running task as the connection's handler (`task` its address), or, with 0, that
    /// it has ended: its reads wait without a cancellation handler of their own.
    ///
    /// Only for a task that nothing but the server cancels, and only then through
    /// ``coveredTaskCancelled()``: a standalone handler task (no one holds it) or a child of
    /// `serveForever()`. Cleared before the task ends, as a later task may get its address.
    func cover(_ task: UInt) {
        state.withLock { $0.coveredTask = task }
    }

    /// The server cancelled the handler task: its waiting read ends with `CancellationError`, as
    /// do its later reads that would wait.
    func coveredTaskCancelled() {
        state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            state.coveredCancelled = true
            return state.waiterCovered ? state.waiters.remove(0) : nil
        }?.resume(throwing: CancellationError())
    }
}

/// A readUntil in progress: the separators and how far the buffer has been searched, so each
/// attempt searches only what arrived since (asyncio's `offset`).
private struct SeparatorScan {
    let separators: [[UInt8]]
    let shortest: Int
    let longest: Int
    var offset = 0

    /// What a feed must bring to wake this scan: a byte that ends a separator, or enough to
    /// overrun the limit. Several different last bytes: any data (rare; kept simple).
    func wakeNeed(limit: Int) -> StreamReader.WakeNeed {
        let last = separators[0].last!
        guard separators.allSatisfy({ $0.last == last }) else { return .anyData }
        return .separator(ending: last, orAbove: limit)
    }

    /// `separators` sorted shortest first, none empty.
    init(_ separators: [[UInt8]]) {
        self.separators = separators
        shortest = separators.first!.count
        longest = separators.last!.count
    }

    /// The data up to and including the separator that ends first, nil to wait for more; throws
    /// asyncio's ``LimitOverrunError`` and ``IncompleteReadError``.
    mutating func attempt(_ state: inout StreamReader.State, limit: Int, copied: inout Int) throws -> Bytes? {
        let count = state.buffer.count
        if count - offset >= shortest {
            var bestStart: Int?
            var bestEnd = Int.max
            for separator in separators {
                if let start = state.buffer.firstIndex(of: separator, from: offset), start + separator.count < bestEnd {
                    bestEnd = start + separator.count
                    bestStart = start
                }
            }
            if let bestStart {
                if bestStart > limit {
                    throw LimitOverrunError(
                        message: "Separator is found, but chunk is longer than limit", consumed: bestStart)
                }
                return state.buffer.take(bestEnd, copied: &copied)
            }
            offset = Swift.max(0, count + 1 - longest)
            if offset > limit {
                throw LimitOverrunError(message: "Separator is not found, and chunk exceed the limit", consumed: offset)
            }
        }
        if state.eof {
            let partial = state.buffer.take(count, copied: &copied)
            throw IncompleteReadError(partial: partial, expected: nil)
        }
        return nil
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
