// Port of the CPython `Lib/test/test_asyncio/test_streams.py` cases that drive a
// standalone StreamReader by hand (feed_data / feed_eof / set_exception), plus
// the Swift-specific behaviour the spec adds: readUntil(anyOf:), async
// iteration, cancellation that keeps bytes, and readInProgress.
//
// Python's `stream._buffer` checks become "what is left": feed EOF, then read
// everything (`remainingText(of:)`), always as the last step.
//
// Skipped CPython cases:
// - test___repr__, test___repr__nondefault_limit, test___repr__eof,
//   test___repr__data, test___repr__exception, test___repr__waiter,
//   test___repr__transport: the repr() text of Python objects.
// - test_IncompleteReadError_pickleable, test_LimitOverrunError_pickleable:
//   pickling has no Swift counterpart.
// - test_streamreader_constructor_without_loop, _use_running_loop,
//   _use_global_loop: bind a reader to a loop object; StreamReader() takes no
//   loop (every test here creates readers off-loop and on a loop instead).
// - test_streamreaderprotocol_constructor_without_loop, _use_running_loop,
//   _use_global_loop: StreamReaderProtocol is not part of the Swift API.
// - The str(exception) text check of test_readexactly_eof: Python message
//   formatting (the partial and expected fields are checked).
// - The buffer check after test_readline_exception's failing read: once an
//   exception is stored every read throws, so the buffer is unobservable.

import Testing
@_spi(UringInternals) import UringRuntime
import UringStreams

@Suite(.timeLimit(.minutes(1)))
struct StreamReaderFeedTests {
    static let data = "line1\nline2\nline3\n"

    // MARK: feeding

    @Test func feedingEmptyDataBuffersNothing() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData([UInt8]())
            #expect(!reader.atEOF)
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func feedingDataBuffersIt() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData(Self.data.utf8)
            let rest = try await remainingText(of: reader)
            #expect(rest == Self.data)
        }
    }

    @Test func feedingFromAForeignThreadWakesTheReader() async throws {
        try await withDeadline {
            let reader = StreamReader()
            async let pendingLine = reader.readLine()
            try await settle(20)
            try await onThread { reader.feedData(utf8("from a thread\n")) }
            let line = try await pendingLine
            #expect(text(line) == "from a thread\n")
        }
    }

    // MARK: read(n)

    @Test func readZeroReturnsEmptyAndConsumesNothing() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData(Self.data.utf8)
            let chunk = try await reader.read(0)
            #expect(chunk.isEmpty)
            let rest = try await remainingText(of: reader)
            #expect(rest == Self.data)
        }
    }

    @Test(arguments: Placement.allCases)
    func readWaitsForData(placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let reader = StreamReader()
                async let pending = reader.read(30)
                try await settle(20)
                reader.feedData(Self.data.utf8)
                let chunk = try await pending
                #expect(text(chunk) == Self.data)
                let rest = try await remainingText(of: reader)
                #expect(rest == "")
            }
        }
    }

    @Test func readReturnsAtMostTheRequestedCount() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("line1".utf8)
            reader.feedData("line2".utf8)
            let chunk = try await reader.read(5)
            #expect(text(chunk) == "line1")
            let rest = try await remainingText(of: reader)
            #expect(rest == "line2")
        }
    }

    @Test func readReturnsEmptyAtEOF() async throws {
        try await withDeadline {
            let reader = StreamReader()
            async let pending = reader.read(1024)
            try await settle(20)
            reader.feedEOF()
            let chunk = try await pending
            #expect(chunk.isEmpty)
            #expect(reader.atEOF)
        }
    }

    @Test func readAllGathersEverythingUntilEOF() async throws {
        try await withDeadline {
            let reader = StreamReader()
            async let pending = reader.read(-1)
            try await settle(20)
            reader.feedData("chunk1\n".utf8)
            reader.feedData("chunk2".utf8)
            reader.feedEOF()
            let everything = try await pending
            #expect(text(everything) == "chunk1\nchunk2")
            #expect(reader.atEOF)
        }
    }

    @Test func readThrowsTheStoredException() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("line\n".utf8)
            let chunk = try await reader.read(2)
            #expect(text(chunk) == "li")
            reader.setException(SampleError(tag: "read"))
            await #expect(throws: SampleError(tag: "read")) { _ = try await reader.read(2) }
        }
    }

    @Test(arguments: [0, -1])
    func nonPositiveLimitIsRejected(limit: Int) async throws {
        let error = #expect(throws: StreamError.self) { _ = try StreamReader(limit: limit) }
        #expect(isInvalidArgument(error))
    }

    @Test func readIgnoresTheLimit() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("chunk".utf8)
            let chunk = try await reader.read(5)
            #expect(text(chunk) == "chunk")
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    // MARK: readLine

    @Test(arguments: Placement.allCases)
    func readLineWaitsForTheNewline(placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let reader = StreamReader()
                reader.feedData("chunk1 ".utf8)
                async let pendingLine = reader.readLine()
                try await settle(20)
                reader.feedData("chunk2 ".utf8)
                reader.feedData("chunk3 ".utf8)
                reader.feedData("\n chunk4".utf8)
                let line = try await pendingLine
                #expect(text(line) == "chunk1 chunk2 chunk3 \n")
                let rest = try await remainingText(of: reader)
                #expect(rest == " chunk4")
            }
        }
    }

    @Test func readLineOverLimitDiscardsOnlyThatLine() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("li".utf8)
            reader.feedData("ne1\nline2\n".utf8)
            await #expect(throws: LimitOverrunError.self) { _ = try await reader.readLine() }
            let rest = try await remainingText(of: reader)
            #expect(rest == "line2\n")
        }
    }

    @Test func readLineOverLimitWithoutNewlineDiscardsTheBuffer() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("li".utf8)
            reader.feedData("ne1".utf8)
            reader.feedData("li".utf8)
            await #expect(throws: LimitOverrunError.self) { _ = try await reader.readLine() }
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func atEOFNeedsEOFAndAnEmptyBuffer() async throws {
        try await withDeadline {
            let reader = StreamReader()
            #expect(!reader.atEOF)
            reader.feedData("some data\n".utf8)
            #expect(!reader.atEOF)
            _ = try await reader.readLine()
            #expect(!reader.atEOF)
            reader.feedData("some data\n".utf8)
            reader.feedEOF()
            #expect(!reader.atEOF)
            _ = try await reader.readLine()
            #expect(reader.atEOF)
        }
    }

    @Test func readLineOverLimitWhileWaitingDiscardsTheLine() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 7)
            let line = Task { try await reader.readLine() }
            try await settle(20)
            // asyncio's callback feeds all three chunks before the reader wakes;
            // one call gives the same buffer however soon the reader runs.
            reader.feedData("chunk1chunk2chunk3\n".utf8)
            await #expect(throws: LimitOverrunError.self) { _ = try await line.value }
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func readLineOverLimitWhileWaitingKeepsTheNextLine() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 7)
            let line = Task { try await reader.readLine() }
            try await settle(20)
            reader.feedData("chunk1".utf8)
            reader.feedData("chunk2\n".utf8)
            reader.feedData("chunk3\n".utf8)
            reader.feedEOF()
            await #expect(throws: LimitOverrunError.self) { _ = try await line.value }
            let rest = try await reader.read()
            #expect(text(rest) == "chunk3\n")
        }
    }

    @Test func readLineLimitCountsBytesBeforeTheNewline() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 7)
            reader.feedData("1234567\n".utf8)
            let line = try await reader.readLine()
            #expect(text(line) == "1234567\n")

            reader.feedData("12345678\n".utf8)
            await #expect(throws: LimitOverrunError.self) { _ = try await reader.readLine() }

            // Had the failed line left its "\n" behind, this would return it.
            reader.feedData("12345678".utf8)
            await #expect(throws: LimitOverrunError.self) { _ = try await reader.readLine() }
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func defaultLimitIs64KiB() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData([UInt8](repeating: UInt8(ascii: "a"), count: 65_536) + utf8("\n"))
            let longest = try await reader.readLine()
            #expect(longest.count == 65_537)

            reader.feedData([UInt8](repeating: UInt8(ascii: "b"), count: 65_537) + utf8("\nnext\n"))
            await #expect(throws: LimitOverrunError.self) { _ = try await reader.readLine() }
            let next = try await reader.readLine()
            #expect(text(next) == "next\n")
        }
    }

    @Test func readLineReturnsTheFirstBufferedLine() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let data = utf8(Self.data)
            reader.feedData(data[..<6])
            reader.feedData(data[6...])
            let line = try await reader.readLine()
            #expect(text(line) == "line1\n")
            let rest = try await remainingText(of: reader)
            #expect(rest == "line2\nline3\n")
        }
    }

    @Test func readLineReturnsAPartialLineAtEOF() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("some data".utf8)
            reader.feedEOF()
            let line = try await reader.readLine()
            #expect(text(line) == "some data")
        }
    }

    @Test func readLineReturnsEmptyAtEOF() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedEOF()
            let line = try await reader.readLine()
            #expect(line.isEmpty)
        }
    }

    @Test func readAfterReadLineContinuesWhereItStopped() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData(Self.data.utf8)
            _ = try await reader.readLine()
            let chunk = try await reader.read(7)
            #expect(text(chunk) == "line2\nl")
            let rest = try await remainingText(of: reader)
            #expect(rest == "ine3\n")
        }
    }

    @Test func readLineThrowsTheStoredException() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("line\n".utf8)
            let line = try await reader.readLine()
            #expect(text(line) == "line\n")
            reader.setException(SampleError(tag: "readLine"))
            await #expect(throws: SampleError(tag: "readLine")) { _ = try await reader.readLine() }
        }
    }

    // MARK: readUntil

    @Test func readUntilRejectsEmptySeparators() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let empty = await #expect(throws: StreamError.self) { _ = try await reader.readUntil([UInt8]()) }
            #expect(isInvalidArgument(empty))
            let emptyInList = await #expect(throws: StreamError.self) { _ = try await reader.readUntil(anyOf: [[]]) }
            #expect(isInvalidArgument(emptyInList))
            let noSeparators = await #expect(throws: StreamError.self) { _ = try await reader.readUntil(anyOf: []) }
            #expect(isInvalidArgument(noSeparators))
        }
    }

    @Test func readUntilDefaultsToNewline() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("first\nsecond".utf8)
            let line = try await reader.readUntil()
            #expect(text(line) == "first\n")
            let rest = try await remainingText(of: reader)
            #expect(rest == "second")
        }
    }

    @Test func readUntilConsumesThroughTheSeparator() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("lineAAA".utf8)
            var chunk = try await reader.readUntil(utf8("AAA"))
            #expect(text(chunk) == "lineAAA")

            reader.feedData("lineAAA".utf8)
            chunk = try await reader.readUntil(utf8("AAA"))
            #expect(text(chunk) == "lineAAA")

            reader.feedData("lineAAAxxx".utf8)
            chunk = try await reader.readUntil(utf8("AAA"))
            #expect(text(chunk) == "lineAAA")
            let rest = try await remainingText(of: reader)
            #expect(rest == "xxx")
        }
    }

    @Test func readUntilFindsSeparatorsSpanningChunks() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let separator = utf8("aaa")

            reader.feedData("QWEaa".utf8)
            reader.feedData("XYaa".utf8)
            reader.feedData("a".utf8)
            #expect(text(try await reader.readUntil(separator)) == "QWEaaXYaaa")

            reader.feedData("QWEaa".utf8)
            reader.feedData("XYa".utf8)
            reader.feedData("aa".utf8)
            #expect(text(try await reader.readUntil(separator)) == "QWEaaXYaaa")

            reader.feedData("aaa".utf8)
            #expect(text(try await reader.readUntil(separator)) == "aaa")

            reader.feedData("Xaaa".utf8)
            #expect(text(try await reader.readUntil(separator)) == "Xaaa")

            reader.feedData("XXX".utf8)
            reader.feedData("a".utf8)
            reader.feedData("a".utf8)
            reader.feedData("a".utf8)
            #expect(text(try await reader.readUntil(separator)) == "XXXaaa")

            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func readUntilAtEOFThrowsIncompleteReadWithEverything() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("some dataAA".utf8)
            reader.feedEOF()
            let error = try await #require(throws: IncompleteReadError.self) {
                _ = try await reader.readUntil(utf8("AAA"))
            }
            #expect(text(error.partial) == "some dataAA")
            #expect(error.expected == nil)
            let rest = try await reader.read()
            #expect(rest.isEmpty)
        }
    }

    @Test func readUntilOverLimitKeepsTheBuffer() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("some dataAA".utf8)
            let notFound = try await #require(throws: LimitOverrunError.self) {
                _ = try await reader.readUntil(utf8("AAA"))
            }
            #expect(notFound.message.contains("not found"))
            // asyncio reports how far it searched: 11 buffered bytes + 1 - 3-byte separator.
            #expect(notFound.consumed == 9)

            reader.feedData("A".utf8)
            let found = try await #require(throws: LimitOverrunError.self) {
                _ = try await reader.readUntil(utf8("AAA"))
            }
            #expect(found.message.contains("is found"))
            #expect(found.consumed == 9)  // where the separator starts
            let rest = try await remainingText(of: reader)
            #expect(rest == "some dataAAA")
        }
    }

    @Test func readUntilAnyOfStopsAtTheEarliestEnd() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let lineEnds = [utf8("\r"), utf8("\n")]
            reader.feedData("line 1\nline 2\r".utf8)
            #expect(text(try await reader.readUntil(anyOf: lineEnds)) == "line 1\n")
            #expect(text(try await reader.readUntil(anyOf: lineEnds)) == "line 2\r")

            // The match that ends first wins, even when another starts earlier.
            reader.feedData("ABCDEFG".utf8)
            #expect(text(try await reader.readUntil(anyOf: [utf8("DEF"), utf8("BCDE")])) == "ABCDE")
            let rest = try await remainingText(of: reader)
            #expect(rest == "FG")
        }
    }

    @Test func readUntilAnyOfOverLimitKeepsTheBuffer() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("some dataA".utf8)
            let error = try await #require(throws: LimitOverrunError.self) {
                _ = try await reader.readUntil(anyOf: [utf8("A"), utf8("ome dataA")])
            }
            #expect(error.message.contains("is found"))
            let rest = try await remainingText(of: reader)
            #expect(rest == "some dataA")
        }
    }

    @Test func readUntilAnyOfWaitsWhileTheLongestSeparatorCannotFit() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("data".utf8)
            async let pendingChunk = reader.readUntil(anyOf: [utf8("A"), utf8("long sep")])
            try await settle(20)
            reader.feedData("Z".utf8)
            reader.feedData("Aaaa".utf8)
            let chunk = try await pendingChunk
            #expect(text(chunk) == "dataZA")
            let rest = try await remainingText(of: reader)
            #expect(rest == "aaa")
        }
    }

    @Test func readUntilAcceptsAnyByteCollection() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("one\r\ntwo\r\nthree\r\nfour".utf8)
            let fromSlice = try await reader.readUntil(utf8("x\r\n")[1...])
            #expect(text(fromSlice) == "one\r\n")
            let fromUTF8View = try await reader.readUntil("\r\n".utf8)
            #expect(text(fromUTF8View) == "two\r\n")
            let fromContiguous = try await reader.readUntil(ContiguousArray(utf8("\r\n")))
            #expect(text(fromContiguous) == "three\r\n")
            let rest = try await remainingText(of: reader)
            #expect(rest == "four")
        }
    }

    // MARK: readExactly

    @Test func readExactlyZeroIsEmptyAndNegativeIsRejected() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData(Self.data.utf8)
            let nothing = try await reader.readExactly(0)
            #expect(nothing.isEmpty)
            let error = await #expect(throws: StreamError.self) { _ = try await reader.readExactly(-1) }
            #expect(isInvalidArgument(error))
            let rest = try await remainingText(of: reader)
            #expect(rest == Self.data)
        }
    }

    @Test(arguments: Placement.allCases)
    func readExactlyWaitsForEnoughBytes(placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let reader = StreamReader()
                let wanted = 2 * Self.data.utf8.count
                async let pendingExact = reader.readExactly(wanted)
                try await settle(20)
                reader.feedData(Self.data.utf8)
                reader.feedData(Self.data.utf8)
                reader.feedData(Self.data.utf8)
                let exact = try await pendingExact
                #expect(text(exact) == Self.data + Self.data)
                let rest = try await remainingText(of: reader)
                #expect(rest == Self.data)
            }
        }
    }

    @Test func readExactlyIgnoresTheLimit() async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: 3)
            reader.feedData("chunk".utf8)
            let chunk = try await reader.readExactly(5)
            #expect(text(chunk) == "chunk")
            let rest = try await remainingText(of: reader)
            #expect(rest == "")
        }
    }

    @Test func readExactlyAtEOFThrowsIncompleteRead() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let wanted = 2 * Self.data.utf8.count
            let exact = Task { try await reader.readExactly(wanted) }
            try await settle(20)
            reader.feedData(Self.data.utf8)
            reader.feedEOF()
            let error = try await #require(throws: IncompleteReadError.self) { _ = try await exact.value }
            #expect(text(error.partial) == Self.data)
            #expect(error.expected == wanted)
            let rest = try await reader.read()
            #expect(rest.isEmpty)
        }
    }

    @Test func readExactlyThrowsTheStoredException() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("line\n".utf8)
            let chunk = try await reader.readExactly(2)
            #expect(text(chunk) == "li")
            reader.setException(SampleError(tag: "readExactly"))
            await #expect(throws: SampleError(tag: "readExactly")) { _ = try await reader.readExactly(2) }
        }
    }

    // MARK: exceptions

    @Test func exceptionReportsTheStoredError() {
        let reader = StreamReader()
        #expect(reader.exception == nil)
        reader.setException(SampleError(tag: "stored"))
        #expect(reader.exception as? SampleError == SampleError(tag: "stored"))
    }

    @Test func setExceptionWakesAWaitingRead() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let line = Task { try await reader.readLine() }
            try await settle(20)
            reader.setException(SampleError(tag: "waiter"))
            await #expect(throws: SampleError(tag: "waiter")) { _ = try await line.value }
        }
    }

    @Test func setExceptionAfterACancelledReadIsSafe() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let waiting = Task { try await reader.readLine() }
            try await settle(20)
            waiting.cancel()
            await #expect(throws: CancellationError.self) { _ = try await waiting.value }
            reader.setException(SampleError(tag: "after cancel"))
            // The cancelled read left no waiter behind: the next read sees the error,
            // not readInProgress.
            await #expect(throws: SampleError(tag: "after cancel")) { _ = try await reader.readLine() }
        }
    }

    // MARK: async iteration

    @Test(arguments: Placement.allCases)
    func iteratingYieldsLinesUntilEOF(placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let reader = StreamReader()
                reader.feedData("line1\nline2\nline3".utf8)
                reader.feedEOF()
                var lines: [String] = []
                for try await line in reader { lines.append(text(line)) }
                #expect(lines == ["line1\n", "line2\n", "line3"])
            }
        }
    }

    @Test func iteratingWaitsForFedLines() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let collector = Task {
                var lines: [String] = []
                for try await line in reader { lines.append(text(line)) }
                return lines
            }
            for index in 1...3 {
                try await settle(10)
                reader.feedData("line\(index)\n".utf8)
            }
            reader.feedEOF()
            let lines = try await collector.value
            #expect(lines == ["line1\n", "line2\n", "line3\n"])
        }
    }

    @Test func iteratingRethrowsTheStoredException() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("first\n".utf8)
            let collected = Locked<[String]>([])
            let collector = Task {
                for try await line in reader { collected.update { $0.append(text(line)) } }
            }
            let sawFirstLine = try await eventually { collected.value == ["first\n"] }
            #expect(sawFirstLine)
            reader.setException(SampleError(tag: "iteration"))
            await #expect(throws: SampleError(tag: "iteration")) { try await collector.value }
        }
    }

    // MARK: cancellation and concurrent reads

    enum WaitingRead: String, CaseIterable, Sendable {
        case readLine, readAll, readExactly, readUntil, readUntilAnyOf

        /// Starts a read that cannot finish with "abc" buffered and no EOF.
        func start(on reader: StreamReader) -> Task<Bytes, any Error> {
            switch self {
            case .readLine: Task { try await reader.readLine() }
            case .readAll: Task { try await reader.read(-1) }
            case .readExactly: Task { try await reader.readExactly(10) }
            case .readUntil: Task { try await reader.readUntil(utf8("XYZ")) }
            case .readUntilAnyOf: Task { try await reader.readUntil(anyOf: [utf8("XYZ"), utf8("QQ")]) }
            }
        }
    }

    @Test(arguments: WaitingRead.allCases)
    func cancelledReadConsumesNothing(read: WaitingRead) async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("abc".utf8)
            let waiting = read.start(on: reader)
            try await settle(50)
            waiting.cancel()
            await #expect(throws: CancellationError.self) { _ = try await waiting.value }
            reader.feedData("def".utf8)
            let rest = try await remainingText(of: reader)
            #expect(rest == "abcdef")
        }
    }

    /// The task is cancelled before the read: its cancellation handler runs at once, before the
    /// read waits, so the wait itself must see the task's flag.
    @Test func aCancelledTasksReadThatWouldWaitThrowsAtOnce() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("abc".utf8)
            let reading = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await reader.readLine()
            }
            await #expect(throws: CancellationError.self) { _ = try await reading.value }
            reader.feedData("\n".utf8)
            let line = try await reader.readLine()
            #expect(text(line) == "abc\n")
        }
    }

    @Test func cancelledReadOnALoopConsumesNothing() async throws {
        try await withDeadline {
            try await onFreshLoop {
                let reader = StreamReader()
                reader.feedData("partial".utf8)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        await #expect(throws: CancellationError.self) { _ = try await reader.readLine() }
                    }
                    try await settle(50)
                    group.cancelAll()
                    try await group.waitForAll()
                }
                reader.feedData(" line\n".utf8)
                let line = try await reader.readLine()
                #expect(text(line) == "partial line\n")
            }
        }
    }

    @Test func secondConcurrentReadThrowsReadInProgress() async throws {
        try await withDeadline {
            let reader = StreamReader()
            let outcomes = Mailbox<Result<Bytes, any Error>>()
            // Whichever read arrives second must fail at once; nothing is
            // buffered, so the first outcome can only be that failure.
            for _ in 0..<2 {
                Task {
                    do { outcomes.send(.success(try await reader.readLine())) } catch { outcomes.send(.failure(error)) }
                }
            }
            let first = await outcomes.receive()
            #expect(throws: StreamError.readInProgress) { _ = try first.get() }
            reader.feedData("x\n".utf8)
            let second = try await outcomes.receive().get()
            #expect(text(second) == "x\n")
        }
    }
}
