import Testing
@_spi(UringInternals) import UringRuntime
import UringStreams

/// What a hostile peer or caller can feed a reader: pathological chunkings, huge limits and water
/// marks, and reads racing each other. The spec's robustness rules: scans linear in the bytes
/// received, memory bounded in chunk records too, no argument traps, reads never corrupt state.
@Suite(.timeLimit(.minutes(2)))
struct HostileInputTests {
    /// A separator whose first byte is everywhere: each of the 50,000 one-byte chunks is a
    /// candidate match. A scan that restarts per candidate takes minutes; a linear one, moments.
    @Test func aMultiByteSeparatorOverOneByteChunksIsFoundInLinearTime() async throws {
        try await withDeadline(30) {
            let reader = try StreamReader(limit: 1 << 20)
            for _ in 0..<50_000 { reader.feedData([UInt8(ascii: "\r")]) }
            reader.feedData(utf8("\r\n\r\nrest"))
            let head = try await reader.readUntil(utf8("\r\n\r\n"))
            #expect(head.count == 50_004)
            #expect(head.suffix(4).elementsEqual(utf8("\r\n\r\n")))
            #expect(try await remainingText(of: reader) == "rest")
        }
    }

    /// readLine waiting while the line trickles in a byte at a time: each wake-up searches only
    /// what arrived since the last one.
    @Test func aLineFedOneByteAtATimeIsReadInLinearTime() async throws {
        try await withDeadline(60) {
            let reader = try StreamReader(limit: 1 << 20)
            let count = 100_000
            let line = Task { try await reader.readLine() }
            for _ in 0..<count {
                reader.feedData([UInt8(ascii: "a")])
                await Task.yield()
            }
            reader.feedData(utf8("\n"))
            #expect(try await line.value.count == count + 1)
        }
    }

    /// A slow-loris peer trickling a line: the waiting readLine wakes for the byte that ends it,
    /// not for each byte before (a task switch per byte would let a crowd of such peers load the
    /// loop that much). Data past the limit and EOF still wake it.
    @Test func aTricklingLineWakesItsReadOnlyWhenItEnds() async throws {
        try await withDeadline(30) {
            let reader = try StreamReader(limit: 64)
            let line = Task { try await reader.readLine() }
            while !reader.waitingRead.isWaiting { await Task.yield() }
            for _ in 0..<32 { reader.feedData([UInt8(ascii: "a")]) }
            #expect(reader.waitingRead.feedWakeups == 0)
            reader.feedData(utf8("b\nc"))
            #expect(try await line.value.count == 34)
            #expect(reader.waitingRead.feedWakeups == 1)

            // Past the limit without a newline: woken to throw, the line dropped.
            let overrun = Task { try await reader.readLine() }
            while !reader.waitingRead.isWaiting { await Task.yield() }
            // "c" is left from before: 63 bytes buffered are within the limit.
            reader.feedData([UInt8](repeating: 0x61, count: 62))
            #expect(reader.waitingRead.feedWakeups == 1)
            reader.feedData([UInt8](repeating: 0x61, count: 2))
            await #expect(throws: LimitOverrunError.self) { try await overrun.value }

            // readExactly wakes once enough arrived; EOF wakes any read.
            let exact = Task { try await reader.readExactly(10) }
            while !reader.waitingRead.isWaiting { await Task.yield() }
            let before = reader.waitingRead.feedWakeups
            for _ in 0..<9 { reader.feedData([UInt8(ascii: "x")]) }
            #expect(reader.waitingRead.feedWakeups == before)
            reader.feedData([UInt8(ascii: "x")])
            #expect(try await exact.value.count == 10)
            let rest = Task { try await reader.read() }
            while !reader.waitingRead.isWaiting { await Task.yield() }
            reader.feedData(utf8("tail"))
            reader.feedEOF()
            #expect(try await rest.value.count == 4)
        }
    }

    /// 200,000 one-byte chunks cost little more than their bytes: the records of tiny chunks
    /// must not multiply the memory flow control bounds.
    @Test func tinyChunksCostLittleMoreThanTheirBytes() async throws {
        try await withDeadline(30) {
            let reader = try StreamReader(limit: 1 << 20)
            // 200,000 feeds are a long stretch without a suspension point: on a thread of their
            // own, not on one of the cooperative pool's few threads, which every test shares.
            try await onThread {
                for i in 0..<200_000 { reader.feedData([UInt8(truncatingIfNeeded: i)]) }
                reader.feedEOF()
            }
            let (bytes, cost) = reader.bufferedMemory
            #expect(bytes == 200_000)
            #expect(cost < bytes + bytes / 8, "200,000 one-byte chunks cost \(cost) bytes")
            let all = try await reader.read()
            let expected = [UInt8](unsafeUninitializedCapacity: 200_000) { buffer, initialized in
                for i in 0..<200_000 { buffer[i] = UInt8(truncatingIfNeeded: i) }
                initialized = 200_000
            }
            #expect(sameBytes(all, expected))
        }
    }

    /// Any limit up to Int.max works (2 × limit saturates instead of trapping).
    @Test(arguments: [Int.max, Int.max / 2 + 1, 1 << 62])
    func hugeLimitsWork(limit: Int) async throws {
        try await withDeadline {
            let reader = try StreamReader(limit: limit)
            reader.feedData(utf8("one\ntwo"))
            #expect(text(try await reader.readLine()) == "one\n")
            #expect(text(try await reader.readUntil(utf8("o"))) == "two")
            reader.feedData(utf8("abc"))
            #expect(text(try await reader.readExactly(2)) == "ab")
            reader.feedEOF()
            #expect(text(try await reader.read()) == "c")
        }
    }

    @Test func hugeLimitsWorkOnAConnection() async throws {
        try await withDeadline {
            let server = try await startServer(host: "127.0.0.1", port: 0, limit: .max) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            let port = try #require(server.addresses.first).port
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port, limit: .max)
            #expect(try await roundTrip("huge\n", reader: reader, writer: writer) == "huge\n")
            writer.close()
            server.close()
            await server.waitClosed()
        }
    }

    /// Water marks near Int.max are accepted (4 × low saturates) and keep their meaning.
    @Test func hugeWaterMarksWork() async throws {
        try await withDeadline {
            let (left, right) = try RawSocket.pair()
            defer { RawSocket.close(right) }
            let (_, writer) = try await openConnection(fileDescriptor: left)
            writer.transport.setWriteBufferLimits(low: Int.max / 2)
            #expect(writer.transport.writeBufferLimits == (low: Int.max / 2, high: Int.max))
            writer.transport.setWriteBufferLimits(high: Int.max, low: Int.max)
            #expect(writer.transport.writeBufferLimits == (low: Int.max, high: Int.max))
            writer.write(utf8("x"))
            try await writer.drain()
            writer.close()
        }
    }

    /// Two tasks reading one reader as lines are fed: every read either gets a line or, when the
    /// other one is waiting, readInProgress; no line is lost, torn or duplicated, and nothing that
    /// looks like EOF comes before the end.
    @Test func racingReadersNeverCorruptTheStream() async throws {
        try await withDeadline(60) {
            let reader = StreamReader()
            let lines = 5_000
            let collected = Locked<[Int]>([])
            let sawFalseEOF = Locked(false)
            @Sendable func drain() async {
                while true {
                    do {
                        let line = try await reader.readLine()
                        if line.isEmpty { return }
                        guard line.last == UInt8(ascii: "\n"), let number = Int(text(line.dropLast())) else {
                            sawFalseEOF.set(true)
                            return
                        }
                        collected.update { $0.append(number) }
                    } catch StreamError.readInProgress {
                        await Task.yield()
                    } catch {
                        sawFalseEOF.set(true)
                        return
                    }
                }
            }
            async let first: Void = drain()
            async let second: Void = drain()
            for number in 0..<lines {
                reader.feedData(utf8("\(number)\n"))
                if number % 7 == 0 { await Task.yield() }
            }
            reader.feedEOF()
            _ = await (first, second)
            #expect(!sawFalseEOF.value)
            #expect(collected.value.sorted() == Array(0..<lines))
        }
    }
}
