import Glibc
import Synchronization
import Testing
import UringStreams

/// `withTimeout` on both paths (a task on a loop: the loop's timeout operation; an ordinary task:
/// `Task.sleep`), and the servers' `idleTimeout`.
@Suite(.timeLimit(.minutes(1)))
struct TimeoutTests {
    @Test(arguments: Placement.allCases)
    func readLineThatTimesOutLeavesTheBufferedBytes(_ placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let (ours, peer) = try RawSocket.pair()
                defer { RawSocket.close(peer) }
                let (reader, writer) = try await openConnection(fileDescriptor: ours)
                defer { writer.transport.abort() }
                try RawSocket.writeAll(peer, utf8("no newline yet"))
                let started = ContinuousClock.now
                await #expect(throws: StreamError.timedOut) {
                    _ = try await withTimeout(.milliseconds(100)) { try await reader.readLine() }
                }
                #expect(ContinuousClock.now - started >= .milliseconds(100))
                // The cancelled read consumed nothing: the line completes with what was buffered.
                try RawSocket.writeAll(peer, utf8(", now\n"))
                let line = try await withTimeout(.seconds(5)) { try await reader.readLine() }
                #expect(text(line) == "no newline yet, now\n")
            }
        }
    }

    @Test(arguments: Placement.allCases)
    func anOperationThatFinishesInTimeReturnsItsValue(_ placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let (ours, peer) = try RawSocket.pair()
                defer { RawSocket.close(peer) }
                let (reader, writer) = try await openConnection(fileDescriptor: ours)
                defer { writer.transport.abort() }
                try RawSocket.writeAll(peer, utf8("ready\n"))
                let line = try await withTimeout(.seconds(5)) { try await reader.readLine() }
                #expect(text(line) == "ready\n")
            }
        }
    }

    @Test func onALoopTheOperationAndTheTimerStayOnIt() async throws {
        try await withDeadline {
            try await onFreshLoop {
                let loop = try #require(EventLoop.current)
                let sleepsBefore = loop.statistics.submissions
                let sawLoop = try await withTimeout(.seconds(5)) { EventLoop.current === loop }
                #expect(sawLoop)
                await #expect(throws: StreamError.timedOut) {
                    try await withTimeout(.milliseconds(20)) { try await Task.sleep(for: .seconds(30)) }
                }
                // The deadline went through the loop's ring (a timeout operation), not a clock of
                // the cooperative pool.
                #expect(loop.statistics.submissions > sleepsBefore)
            }
        }
    }

    @Test func offTheLoopsTheTimerIsTaskSleep() async throws {
        try await withDeadline {
            #expect(EventLoop.current == nil)
            let started = ContinuousClock.now
            await #expect(throws: StreamError.timedOut) {
                try await withTimeout(.milliseconds(50)) { try await Task.sleep(for: .seconds(30)) }
            }
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test(arguments: Placement.allCases)
    func theCallersCancellationIsNotATimeout(_ placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let waiting = Task {
                    try await withTimeout(.seconds(30)) { try await Task.sleep(for: .seconds(30)) }
                }
                try await settle(20)
                waiting.cancel()
                await #expect(throws: CancellationError.self) { try await waiting.value }
            }
        }
    }

    @Test func theOperationsOwnErrorPassesThrough() async throws {
        struct Failure: Error, Equatable {}
        try await withDeadline {
            await #expect(throws: Failure()) { try await withTimeout(.seconds(5)) { throw Failure() } }
            return ()
        }
    }

    @Test func aCancelledDrainLeavesTheWriteBuffer() async throws {
        try await withDeadline {
            let (ours, peer) = try RawSocket.pair()
            defer { RawSocket.close(peer) }
            let (_, writer) = try await openConnection(fileDescriptor: ours)
            writer.transport.setWriteBufferLimits(high: 1)
            // The peer reads nothing: more than the socket buffers hold stays queued.
            writer.write(patternBytes(count: 8 << 20))
            await #expect(throws: StreamError.timedOut) {
                try await withTimeout(.milliseconds(50)) { try await writer.drain() }
            }
            #expect(writer.transport.writeBufferSize > 0)
            #expect(!writer.isClosing)
            writer.transport.abort()
        }
    }

    // MARK: Idle timeout

    @Test func anIdleConnectionIsAbortedAndItsHandlerSeesTimedOut() async throws {
        try await withDeadline {
            let handlerError = HandlerError()
            // 2 s: in the full parallel suite on 2 CPUs a ping's round trip has stalled past 1 s.
            let server = try await startServer(host: "127.0.0.1", port: 0, idleTimeout: .seconds(2)) {
                reader, writer in
                do {
                    while true {
                        let line = try await reader.readLine()
                        if line.isEmpty { break }
                        writer.write(line)
                    }
                } catch {
                    handlerError.value.withLock { $0 = error as? StreamError }
                }
            }
            let port = try #require(server.addresses.first).port
            // Activity every 100 ms keeps it open past the timeout (with room for a loaded machine's
            // stalls between two pings)... The connect and the pings run on one thread of their
            // own: from a task, a busy cooperative pool could hold a ping back past the timeout
            // (the first one too, were the task to resume late after connecting), and the server
            // would then rightly see an idle connection.
            let (peer, started, echoTimes) = try await onThread {
                () throws -> (Int32, ContinuousClock.Instant, [ContinuousClock.Instant]) in
                let peer = try RawSocket.connectTCP(port: port)
                let started = ContinuousClock.now
                var times: [ContinuousClock.Instant] = []
                do {
                    for _ in 0..<22 {
                        try RawSocket.writeAll(peer, utf8("ping\n"))
                        let echoed = try RawSocket.readExactly(peer, count: 5)
                        guard text(echoed) == "ping\n" else { break }
                        times.append(.now)
                        usleep(100_000)
                    }
                } catch {
                    RawSocket.close(peer)
                    throw error
                }
                return (peer, started, times)
            }
            defer { RawSocket.close(peer) }
            #expect(echoTimes.count == 22, "echoes at \(echoTimes.map { $0 - started })")
            let lastEcho = echoTimes.last ?? started
            #expect(ContinuousClock.now - started > .seconds(2))
            // ...then silence ends it, no sooner than the timeout after the last echo: the peer
            // sees the connection go, the handler timedOut.
            #expect(try await onThread { try connectionEnds(peer) })
            let quiet = ContinuousClock.now - lastEcho
            #expect(quiet >= .milliseconds(1_900) && quiet < .seconds(8))
            #expect(try await eventually { handlerError.value.withLock { $0 } == .timedOut })
            server.close()
            await server.waitClosed()
        }
    }

    @Test func withoutAnIdleTimeoutAQuietConnectionStays() async throws {
        try await withDeadline {
            let server = try await startServer(host: "127.0.0.1", port: 0) { reader, _ in
                _ = try? await reader.read()
            }
            let port = try #require(server.addresses.first).port
            let peer = try await onThread { try RawSocket.connectTCP(port: port) }
            defer { RawSocket.close(peer) }
            let read = try await onThread { try RawSocket.read(peer, timeoutMilliseconds: 300) }
            #expect(read == nil)
            server.close()
            server.abortClients()
            await server.waitClosed()
        }
    }

    @Test func aProtocolServersIdleConnectionIsLostWithTimedOut() async throws {
        try await withDeadline {
            let recording = RecordingProtocol()
            let server = try await createServer(host: "127.0.0.1", port: 0, idleTimeout: .milliseconds(100)) {
                recording
            }
            let port = try #require(server.addresses.first).port
            let peer = try await onThread { try RawSocket.connectTCP(port: port) }
            defer { RawSocket.close(peer) }
            #expect(try await onThread { try connectionEnds(peer) })
            try await recording.waitUntilLost()
            #expect(recording.lostError as? StreamError == .timedOut)
            #expect(recording.violations.isEmpty)
            server.close()
            await server.waitClosed()
        }
    }

    @Test func aNonPositiveIdleTimeoutIsRejected() async throws {
        await #expect(throws: StreamError.invalidArgument("idleTimeout must be positive")) {
            _ = try await startServer(host: "127.0.0.1", port: 0, idleTimeout: .zero) { _, _ in }
        }
        await #expect(throws: StreamError.invalidArgument("idleTimeout must be positive")) {
            _ = try await createServer(host: "127.0.0.1", port: 0, idleTimeout: .seconds(-1)) { RecordingProtocol() }
        }
    }

    @Test func idleTimeoutOnAUnixServerOnAPrivateLoop() async throws {
        try await withDeadline {
            try await onFreshLoop {
                let directory = try TemporaryDirectory()
                let path = directory.file("idle.sock")
                let server = try await startUnixServer(path: path, idleTimeout: .milliseconds(100)) { reader, _ in
                    _ = try? await reader.read()
                }
                let peer = try await onThread { try RawSocket.connectUnix(path: path) }
                defer { RawSocket.close(peer) }
                #expect(try await onThread { try connectionEnds(peer) })
                server.close()
                await server.waitClosed()
            }
        }
    }
}

/// What a handler caught.
private final class HandlerError: Sendable {
    let value = Mutex<StreamError?>(nil)
}

/// Whether the server ended the connection with nothing more sent: EOF, or a reset (an abort may
/// send either, depending on what the kernel still held); throws when it stays open for 5 s.
private func connectionEnds(_ peer: Int32) throws -> Bool {
    do {
        return try RawSocket.readToEOF(peer).isEmpty
    } catch let error as SystemCallFailed where error.errno == ECONNRESET {
        return true
    }
}
