import Glibc
import UringStreams

/// The error the programs store with `setException`.
struct FuzzError: Error, Equatable {
    let id: Int
}

/// Where a read task leaves its outcome; written and read on the fuzzing thread only (every task
/// runs on the ``ManualExecutor``).
final class ResultSlot: @unchecked Sendable {
    var outcome: Outcome?
    /// The `Bytes` the read returned (or carried in IncompleteReadError), kept to check at the end
    /// that their memory still holds what they held when returned.
    var bytes: Bytes?
}

/// Whether FUZZ_TRACE is set: then every step and outcome is printed (for replaying one input).
let tracing = getenv("FUZZ_TRACE") != nil

/// Runs one program against a real `StreamReader` and the ``ReferenceReader`` side by side, and
/// stops the process with a message naming the step at the first difference.
struct Driver {
    /// A read whose task waits (or was woken and has not run yet).
    private struct Pending {
        enum State {
            /// Suspended in its wait for data.
            case waiting
            /// Resumed normally by a feed, EOF or error: it attempts again when it runs.
            case woken
            /// Resumed with CancellationError by its task's cancellation.
            case wokenCancelled
        }

        let operation: ReadOperation
        let slot: ResultSlot
        let task: Task<Void, Never>
        let step: Int
        var state = State.waiting
        var cancelled = false
    }

    private let program: Program
    private let executor: ManualExecutor
    private var reader: StreamReader
    private var model: ReferenceReader
    private var pending: Pending?
    /// Every returned `Bytes` with the bytes it held, checked again at the end.
    private var returned: [(bytes: Bytes, expected: [UInt8], step: Int)] = []
    private var step = -1

    init(program: Program, executor: ManualExecutor) {
        self.program = program
        self.executor = executor
        model = ReferenceReader(limit: program.effectiveLimit)
        switch program.limit {
        case .standard:
            reader = StreamReader()
        case .value(let limit):
            reader = try! StreamReader(limit: limit)
        case .invalid(let limit, let fallback):
            reader = try! StreamReader(limit: fallback)
            do {
                _ = try StreamReader(limit: limit)
                fail("StreamReader(limit: \(limit)) did not throw")
            } catch StreamError.invalidArgument {
            } catch {
                fail("StreamReader(limit: \(limit)) threw \(error), not invalidArgument")
            }
        }
        if reader.limit != program.effectiveLimit {
            fail("reader.limit is \(reader.limit), not \(program.effectiveLimit)")
        }
    }

    mutating func run() {
        if tracing { print("[fuzz] \(program.limit)") }
        for (index, current) in program.steps.enumerated() {
            step = index
            if tracing { print("[fuzz] step \(index): \(current)") }
            perform(current)
            checkState()
        }
        step = program.steps.count
        finish()
    }

    private mutating func perform(_ current: Program.Step) {
        switch current {
        case .feed(let data, let style, let deferRun):
            // feedData after feedEOF is a programming error (asserts in debug builds), unless
            // there is nothing to feed.
            if model.eof && !data.isEmpty { return }
            feed(data, style)
            model.feed(data)
            if !data.isEmpty, let waiting = pending, wakes(waiting.operation, fed: data) { wake() }
            if !deferRun { runQueue() }
        case .feedEOF(let deferRun):
            reader.feedEOF()
            model.feedEOF()
            wake()
            if !deferRun { runQueue() }
        case .setException(let id, let deferRun):
            reader.setException(FuzzError(id: id))
            model.setException(id)
            wake()
            if !deferRun { runQueue() }
        case .cancel(let deferRun):
            guard var waiting = pending else { return }
            waiting.task.cancel()
            waiting.cancelled = true
            // The cancellation handler resumes the read's continuation only while it waits.
            if waiting.state == .waiting { waiting.state = .wokenCancelled }
            pending = waiting
            if !deferRun { runQueue() }
        case .run:
            runQueue()
        case .read(let operation, let preCancelled):
            startRead(operation, preCancelled: preCancelled)
        }
    }

    private func feed(_ data: [UInt8], _ style: Program.FeedStyle) {
        switch style {
        case .array:
            reader.feedData(data)
        case .lazy:
            reader.feedData(data.lazy.map { $0 })
        case .slices(let pieces):
            let whole = Bytes(data)
            let size = max(1, (data.count + pieces - 1) / pieces)
            var start = 0
            repeat {
                let end = min(data.count, start + size)
                reader.feedData(whole.bytes(start..<end))
                start = end
            } while start < data.count
        }
    }

    /// Whether feeding `data` (now in the model) wakes a read waiting for `operation`: the reader
    /// wakes a read only for a feed that can complete it (or make it throw), unlike asyncio, which
    /// wakes it for every feed. A feed split into slices wakes it when any slice would; each
    /// condition below holds for the whole data exactly when it holds for one of its slices.
    private func wakes(_ operation: ReadOperation, fed data: [UInt8]) -> Bool {
        func separatorEnd(_ separators: [[UInt8]]) -> Bool {
            let last = separators[0].last!
            // Separators ending in different bytes: any data wakes the read.
            guard separators.allSatisfy({ $0.last == last }) else { return true }
            return model.count > model.limit || data.contains(last)
        }
        switch operation {
        case .read(let n): return n >= 0
        case .readExactly(let n): return model.count >= n
        case .readLine, .nextLine: return separatorEnd([[UInt8(ascii: "\n")]])
        case .readUntil(let separators, _): return separatorEnd(separators)
        }
    }

    /// A feed that meets the waiting read's need, EOF or an error resumes it (it attempts again
    /// when it runs).
    private mutating func wake() {
        if pending?.state == .waiting { pending?.state = .woken }
    }

    /// Runs the executor's queue and, in step, the model's view of the pending read.
    private mutating func runQueue() {
        executor.runAll()
        settlePending()
    }

    /// What the pending read does when its queued resumption has run; checks the real one agrees.
    private mutating func settlePending() {
        guard var waiting = pending else { return }
        let expected: Outcome?
        switch waiting.state {
        case .waiting:
            expected = nil
        case .woken:
            // Attempts again; with nothing to return it waits again, unless its task was
            // cancelled meanwhile (the wait then throws at once).
            expected = model.attempt(waiting.operation) ?? (waiting.cancelled ? .cancelled : nil)
        case .wokenCancelled:
            expected = .cancelled
        }
        if let expected {
            pending = nil
            check(waiting.slot, expected, waiting.operation, startedAt: waiting.step)
        } else {
            if let outcome = waiting.slot.outcome {
                fail("\(waiting.operation) (started at step \(waiting.step)) returned \(outcome); the model waits")
            }
            waiting.state = .waiting
            pending = waiting
        }
    }

    private mutating func startRead(_ operation: ReadOperation, preCancelled: Bool) {
        let slot = ResultSlot()
        let task = Task(executorPreference: executor) { [reader] in
            await Self.execute(operation, on: reader, into: slot)
        }
        if preCancelled { task.cancel() }
        executor.runAll()
        // The queue is first in, first out: a read already woken ran before this one started.
        settlePending()
        let expected: Outcome?
        if let immediate = model.precheck(operation) {
            expected = immediate
        } else if pending != nil {
            expected = .readInProgress
        } else if let result = model.attempt(operation) {
            expected = result
        } else {
            expected = preCancelled ? .cancelled : nil
        }
        if let expected {
            check(slot, expected, operation, startedAt: step)
        } else {
            if let outcome = slot.outcome {
                fail("\(operation) returned \(outcome); the model waits")
            }
            pending = Pending(operation: operation, slot: slot, task: task, step: step)
        }
    }

    private mutating func check(_ slot: ResultSlot, _ expected: Outcome, _ operation: ReadOperation, startedAt: Int) {
        guard let outcome = slot.outcome else {
            fail("\(operation) (started at step \(startedAt)) is still waiting; the model expects \(expected)")
        }
        if tracing { print("[fuzz]   \(operation) (step \(startedAt)) -> \(outcome)") }
        if outcome != expected {
            fail("\(operation) (started at step \(startedAt)) returned \(outcome); the model expects \(expected)")
        }
        if let bytes = slot.bytes {
            // The outcome holds the bytes as read through the collection API; the same memory
            // through withUnsafeBytes must agree. (Bytes == [UInt8] compares byte by byte, each
            // comparison traced: BytesTests covers it, at no cost to every execution here.)
            let array = outcome.bytes ?? []
            if !sameBytes(bytes, array) {
                fail("\(operation) returned Bytes whose views disagree: \(describe(array))")
            }
            returned.append((bytes, array, startedAt))
        }
    }

    /// After every step: EOF, the stored error and the buffered byte count agree with the model,
    /// and chunk records cost a bounded overhead whatever the chunking.
    private func checkState() {
        if reader.atEOF != model.atEOF {
            fail("atEOF is \(reader.atEOF); the model says \(model.atEOF)")
        }
        let stored = reader.exception.map { ($0 as? FuzzError)?.id ?? -1 }
        if stored != model.exception {
            let modelError = model.exception.map { "FuzzError(\($0))" } ?? "nil"
            fail("exception is \(String(describing: reader.exception)); the model has \(modelError)")
        }
        let memory = reader.bufferedMemory
        if memory.bytes != model.count {
            fail("the reader buffers \(memory.bytes) bytes; the model \(model.count)")
        }
        // Every chunk record past the first is either at least 512 bytes (a large feed) or a
        // gathering of small feeds that is followed by a large feed or is (nearly) full, so
        // records stay within 2 + bytes/256; one spare for slack.
        let recordCost = MemoryLayout<Bytes>.stride + MemoryLayout<Int>.stride
        let records = (memory.cost - memory.bytes) / recordCost
        if records > 3 + memory.bytes / 256 {
            fail("\(memory.bytes) buffered bytes are held in \(records) chunk records (cost \(memory.cost))")
        }
    }

    /// Ends any waiting read, reads what is left and compares it, and checks that every `Bytes`
    /// returned still holds its bytes.
    private mutating func finish() {
        if pending != nil {
            perform(.cancel(deferRun: false))
            checkState()
        }
        if let waiting = pending {
            fail("\(waiting.operation) (started at step \(waiting.step)) is still waiting after cancellation")
        }
        if model.exception == nil {
            if !model.eof {
                reader.feedEOF()
                model.feedEOF()
            }
            startRead(.read(-1), preCancelled: false)
            checkState()
            if !reader.atEOF { fail("not at EOF after read(-1) at EOF") }
        }
        for (bytes, expected, startedAt) in returned where !sameBytes(bytes, expected) {
            fail("Bytes returned at step \(startedAt) changed from \(describe(expected)) to \(describe(Array(bytes)))")
        }
    }

    /// Runs `operation` on the real reader and maps its result.
    private static func execute(_ operation: ReadOperation, on reader: StreamReader, into slot: ResultSlot) async {
        do {
            let bytes: Bytes?
            switch operation {
            case .read(let n):
                bytes = try await reader.read(n)
            case .readLine:
                bytes = try await reader.readLine()
            case .readExactly(let n):
                bytes = try await reader.readExactly(n)
            case .readUntil(let separators, true):
                bytes = try await reader.readUntil(separators[0])
            case .readUntil(let separators, false):
                bytes = try await reader.readUntil(anyOf: separators)
            case .nextLine:
                var lines = reader.makeAsyncIterator()
                bytes = try await lines.next()
            }
            slot.bytes = bytes
            slot.outcome = bytes.map { .bytes(Array($0)) } ?? .endOfLines
        } catch let error as IncompleteReadError {
            slot.bytes = error.partial
            slot.outcome = .incomplete(partial: Array(error.partial), expected: error.expected)
        } catch let error as LimitOverrunError {
            slot.outcome = .limitOverrun(
                consumed: error.consumed, found: error.message == "Separator is found, but chunk is longer than limit")
        } catch StreamError.invalidArgument(let message) {
            slot.outcome = .invalidArgument(message)
        } catch StreamError.readInProgress {
            slot.outcome = .readInProgress
        } catch is CancellationError {
            slot.outcome = .cancelled
        } catch let error as FuzzError {
            slot.outcome = .stored(id: error.id)
        } catch {
            slot.outcome = .unexpected(String(describing: error))
        }
    }

    /// Stops with the program, the step and the model's state: libFuzzer keeps the input.
    private func fail(_ message: String) -> Never {
        var report = "StreamReaderFuzzer: mismatch at step \(step): \(message)\n"
        report += "  model: \(model.count) bytes buffered \(describe(Array(model.contents))), eof \(model.eof), "
        report += "exception \(model.exception.map(String.init) ?? "nil"), limit \(model.limit)\n"
        report += "  program (\(program.limit)):\n"
        for (index, listed) in program.steps.enumerated() where index <= step {
            report += "    \(index): \(listed)\n"
        }
        // Straight to descriptor 2: libFuzzer's own report goes there too.
        var text = report
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        fatalError("StreamReaderFuzzer: mismatch at step \(step): \(message)")
    }
}
