import Glibc
import Testing
@_spi(UringInternals) import UringRuntime

@testable import UringStreams

/// The transports-and-protocols API, as CPython's `test_events.py` checks `create_server` and
/// `create_connection` with its `MyProto`: callbacks come in the one allowed order, on the loop,
/// and each transport call does what asyncio's does.
@Suite struct ProtocolTests {
    // MARK: Echo, order of callbacks

    @Test(arguments: Placement.allCases)
    func createServerAndConnectionEcho(placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let server = try await createServer(host: "127.0.0.1", port: 0) { EchoProtocol() }
                defer { server.close() }
                let (transport, client) = try await createConnection(host: "127.0.0.1", port: server.addresses[0].port)
                {
                    RecordingProtocol()
                }
                #expect(client.events == [.made])
                #expect(transport.peerAddress == server.addresses[0])
                #expect(transport.extraInfo("peername") as? SocketAddress == server.addresses[0])
                transport.write(Bytes("hello "))
                transport.writeLines([utf8("pro"), utf8("tocols")])
                #expect(try await client.received(count: 15) == "hello protocols")
                transport.close()
                #expect(transport.isClosing)
                try await client.waitUntilLost()
                #expect(client.violations.isEmpty, "\(client.violations)")
                #expect(client.lostError == nil)
            }
        }
    }

    /// CPython `test_create_server`: the server's protocol sees made, data, EOF, lost in order.
    @Test func serverProtocolSeesEveryCallbackInOrder() async throws {
        try await withDeadline {
            let made = Mailbox<RecordingProtocol>()
            let server = try await createServer(host: "127.0.0.1", port: 0) {
                let recorder = RecordingProtocol()
                made.send(recorder)
                return recorder
            }
            defer { server.close() }
            let port = server.addresses[0].port
            try await onThread { () throws -> Void in
                let client = try RawSocket.connectTCP(port: port)
                try RawSocket.writeAll(client, utf8("xxx"))
                RawSocket.shutdownWrite(client)
                // eofReceived returns false by default: the server closes, this side sees EOF.
                #expect(try RawSocket.readToEOF(client) == [])
                RawSocket.close(client)
            }
            let serverSide = await made.receive()
            try await serverSide.waitUntilLost()
            #expect(serverSide.events == [.made, .data("xxx"), .eof, .lost(nil)])
            #expect(serverSide.violations.isEmpty, "\(serverSide.violations)")
        }
    }

    /// `eofReceived` returning true keeps the write half: the server answers after the client's
    /// EOF (asyncio's half-close with `write_eof`).
    @Test func eofReceivedReturningTrueKeepsTheWriteHalf() async throws {
        try await withDeadline {
            let server = try await createServer(host: "127.0.0.1", port: 0) { CountingAfterEOFProtocol() }
            defer { server.close() }
            let (transport, client) = try await createConnection(host: "127.0.0.1", port: server.addresses[0].port) {
                RecordingProtocol(keepOpenOnEOF: true)
            }
            #expect(transport.canWriteEOF)
            transport.write(Bytes("12345"))
            transport.writeEOF()
            #expect(try await client.received(count: 8) == "count=5\n")
            // Both halves are shut, yet the transport stays open until closed, as asyncio's does
            // when `eof_received` returned true.
            #expect(try await eventually { client.events.last == .eof })
            try await settle(50)
            #expect(!transport.isClosing)
            transport.close()
            try await client.waitUntilLost()
            #expect(client.events.suffix(2) == [.eof, .lost(nil)])
            #expect(client.violations.isEmpty, "\(client.violations)")
        }
    }

    @Test func factoryRunsOnTheConnectionsLoopAndCallbacksToo() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 2)
            let server = try await createServer(host: "127.0.0.1", port: 0, on: group) { RecordingProtocol() }
            let (transport, client) = try await createConnection(host: "127.0.0.1", port: server.addresses[0].port) {
                RecordingProtocol()
            }
            transport.write(Bytes("x"))
            transport.close()
            try await client.waitUntilLost()
            // RecordingProtocol notes a callback off its transport's loop as a violation.
            #expect(client.violations.isEmpty, "\(client.violations)")
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }

    // MARK: Flow control

    /// `pauseWriting` above the high-water mark, `resumeWriting` once the queue is down to the low
    /// one (CPython `test_write_buffer_limits` / `_maybe_pause_protocol`).
    @Test func pauseAndResumeWritingFollowTheWaterMarks() async throws {
        try await withDeadline(20) {
            let (mine, theirs) = try RawSocket.pair()
            defer { RawSocket.close(theirs) }
            // A small socket buffer so that the queue fills quickly.
            try? SocketDescriptorOptions.setSendBuffer(mine, bytes: 4096)
            let (transport, client) = try await createConnection(fileDescriptor: mine) { RecordingProtocol() }
            transport.setWriteBufferLimits(high: 64 * 1024, low: 16 * 1024)
            #expect(transport.writeBufferLimits == (low: 16 * 1024, high: 64 * 1024))
            let chunk = Bytes(patternBytes(count: 32 * 1024))
            for _ in 0..<16 { transport.write(chunk) }
            #expect(try await eventually { client.events.contains(.pausedWriting) })
            #expect(transport.writeBufferSize > 16 * 1024)
            // The peer reads everything: the queue drains, the protocol may write again.
            let total = 16 * 32 * 1024
            let read = try await onThread {
                try RawSocket.readExactly(theirs, count: total, timeoutMilliseconds: 10_000)
            }
            #expect(read.count == total)
            #expect(try await eventually { client.events.contains(.resumedWriting) })
            #expect(transport.writeBufferSize == 0)
            transport.abort()
            try await client.waitUntilLost()
            #expect(client.violations.isEmpty, "\(client.violations)")
        }
    }

    /// Nothing reaches `dataReceived` while reading is paused; it all comes after resuming, in
    /// order (CPython `test_pause_reading` / `test_resume_reading`).
    @Test func pauseReadingHoldsDataUntilResumed() async throws {
        try await withDeadline {
            let (mine, theirs) = try RawSocket.pair()
            defer { RawSocket.close(theirs) }
            let (transport, client) = try await createConnection(fileDescriptor: mine) { RecordingProtocol() }
            #expect(transport.isReading)
            transport.pauseReading()
            #expect(!transport.isReading)
            try RawSocket.writeAll(theirs, utf8("while paused"))
            try await settle()
            #expect(client.text == "")
            transport.resumeReading()
            #expect(transport.isReading)
            #expect(try await client.received(count: 12) == "while paused")
            transport.close()
            try await client.waitUntilLost()
        }
    }

    // MARK: Closing

    @Test func abortDropsQueuedDataAndReportsNoError() async throws {
        try await withDeadline {
            let (mine, theirs) = try RawSocket.pair()
            defer { RawSocket.close(theirs) }
            let (transport, client) = try await createConnection(fileDescriptor: mine) { RecordingProtocol() }
            transport.abort()
            #expect(transport.isClosing)
            transport.write(Bytes("dropped"))
            try await client.waitUntilLost()
            #expect(client.lostError == nil, "asyncio: abort() calls connection_lost(None)")
            #expect(try await onThread { try RawSocket.readToEOF(theirs) } == [])
        }
    }

    @Test func aResetReachesConnectionLostAsAnError() async throws {
        try await withDeadline {
            let server = try await createServer(host: "127.0.0.1", port: 0) { EchoProtocol() }
            defer { server.close() }
            let made = Mailbox<RecordingProtocol>()
            let listener = try RawSocket.tcpLoopback(listening: true)
            defer { RawSocket.close(listener.descriptor) }
            let (_, client) = try await createConnection(host: "127.0.0.1", port: listener.port) {
                let recorder = RecordingProtocol()
                made.send(recorder)
                return recorder
            }
            _ = await made.receive()
            try await onThread {
                let peer = accept(listener.descriptor, nil, nil)
                guard peer >= 0 else { throw SystemCallFailed(call: "accept", errno: errno) }
                RawSocket.setResetOnClose(peer)
                RawSocket.close(peer)
            }
            try await client.waitUntilLost()
            #expect(client.lostError as? StreamError == .connectionReset)
        }
    }

    @Test func serverCloseClientsAndAbortClientsReachProtocolConnections() async throws {
        try await withDeadline {
            let server = try await createServer(host: "127.0.0.1", port: 0) { EchoProtocol() }
            let port = server.addresses[0].port
            let (_, first) = try await createConnection(host: "127.0.0.1", port: port) { RecordingProtocol() }
            let (transport, second) = try await createConnection(host: "127.0.0.1", port: port) { RecordingProtocol() }
            transport.write(Bytes("ping"))
            #expect(try await second.received(count: 4) == "ping")
            server.close()
            server.closeClients()
            try await first.waitUntilLost()
            try await second.waitUntilLost()
            await server.waitClosed()
            #expect(first.events.contains(.eof) || first.lostError != nil)
        }
    }

    @Test func aRefusedConnectionNeverMakesAProtocol() async throws {
        try await withDeadline {
            let made = Locked(0)
            try await RawSocket.withRefusingPort { port in
                await #expect(throws: StreamError.connectionRefused) {
                    _ = try await createConnection(host: "127.0.0.1", port: port) {
                        made.update { $0 += 1 }
                        return RecordingProtocol()
                    }
                }
            }
            #expect(made.value == 0)
        }
    }

    // MARK: Unix sockets and descriptors

    @Test func unixServerAndConnection() async throws {
        try await withDeadline {
            let directory = try TemporaryDirectory()
            let path = directory.path + "/protocols.sock"
            let server = try await createUnixServer(path: path) { EchoProtocol() }
            #expect(fileExists(path))
            let (transport, client) = try await createUnixConnection(path: path) { RecordingProtocol() }
            transport.write(Bytes("over unix"))
            #expect(try await client.received(count: 9) == "over unix")
            transport.close()
            try await client.waitUntilLost()
            server.close()
            await server.waitClosed()
            #expect(!fileExists(path))
        }
    }

    @Test func createServerOnAHandedOverSocket() async throws {
        try await withDeadline {
            let bound = try RawSocket.tcpLoopback(listening: false)
            let server = try await createServer(fileDescriptor: bound.descriptor) { EchoProtocol() }
            defer { server.close() }
            #expect(server.addresses[0].port == bound.port)
            let (transport, client) = try await createConnection(host: "127.0.0.1", port: bound.port) {
                RecordingProtocol()
            }
            transport.write(Bytes("fd"))
            #expect(try await client.received(count: 2) == "fd")
            transport.close()
        }
    }

    @Test func aDescriptorThatIsNoStreamSocketIsRefused() async throws {
        let pipeEnds = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        defer { pipeEnds.deallocate() }
        #expect(pipe(pipeEnds) == 0)
        defer {
            RawSocket.close(pipeEnds[0])
            RawSocket.close(pipeEnds[1])
        }
        let descriptor = pipeEnds[0]
        await #expect(throws: StreamError.self) {
            _ = try await createConnection(fileDescriptor: descriptor) { RecordingProtocol() }
        }
    }

    // MARK: Buffered protocols

    /// A buffered protocol reads each received buffer in place; a megabyte arrives whole and in
    /// order.
    @Test func aBufferedProtocolSeesEveryByteInOrder() async throws {
        try await withDeadline {
            let payload = patternBytes(count: 1 << 20)
            let server = try await createServer(host: "127.0.0.1", port: 0) { EchoProtocol() }
            defer { server.close() }
            let (transport, client) = try await createConnection(host: "127.0.0.1", port: server.addresses[0].port) {
                CollectingBufferedProtocol()
            }
            transport.write(payload)
            #expect(try await eventually(timeout: .seconds(8)) { client.count >= payload.count })
            #expect(client.bytes == payload)
            #expect(client.dataReceivedCalls == 0, "dataReceived is not called for a buffered protocol")
            transport.close()
        }
    }

    // MARK: TLS

    @Test(.needsOpenSSL)
    func tlsServerAndConnectionPresentTheTLSTransport() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { EchoProtocol() }
            defer { server.close() }
            let (transport, client) = try await createConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost"
            ) { RecordingProtocol() }
            #expect(client.events == [.made], "connectionMade once the handshake has finished")
            #expect(transport is TLSTransport)
            #expect(!transport.canWriteEOF)
            #expect(transport.extraInfo("cipher") is TLSCipher)
            #expect(transport.extraInfo("peercert") is TLSCertificate)
            transport.write(Bytes("secret"))
            #expect(try await client.received(count: 6) == "secret")
            transport.close()
            try await client.waitUntilLost()
            #expect(client.lostError == nil)
            #expect(client.violations.isEmpty, "\(client.violations)")
        }
    }

    /// A client that does not trust the server's CA: `createConnection` throws, and neither side's
    /// protocol hears anything (asyncio calls `connection_made` only after the handshake).
    @Test(.needsOpenSSL)
    func aFailedHandshakeLeavesBothProtocolsUntouched() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let serverSide = Mailbox<RecordingProtocol>()
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) {
                let recorder = RecordingProtocol()
                serverSide.send(recorder)
                return recorder
            }
            defer { server.close() }
            let clientSide = Locked<RecordingProtocol?>(nil)
            await #expect(throws: StreamError.self) {
                _ = try await createConnection(
                    host: "127.0.0.1", port: server.addresses[0].port,
                    tls: .client(trustRoots: .file(fixtures.otherCAFile)), serverHostname: "localhost"
                ) {
                    let recorder = RecordingProtocol()
                    clientSide.set(recorder)
                    return recorder
                }
            }
            #expect(clientSide.value?.events == [])
            let recorder = await serverSide.receive()
            try await settle(200)
            #expect(recorder.events == [])
        }
    }
}

// MARK: - Protocols the tests use

/// Writes back what it receives.
private final class EchoProtocol: StreamProtocol {
    private var transport: (any Transport)?
    func connectionMade(_ transport: any Transport) { self.transport = transport }
    func dataReceived(_ data: Bytes) { transport?.write(data) }
}

/// Counts what it receives and, after EOF, answers with the count, keeping its write half open
/// for that (`eofReceived` returns true), then closes.
private final class CountingAfterEOFProtocol: StreamProtocol {
    private var transport: (any Transport)?
    private var count = 0
    func connectionMade(_ transport: any Transport) { self.transport = transport }
    func dataReceived(_ data: Bytes) { count += data.count }
    func eofReceived() -> Bool {
        transport?.write("count=\(count)\n".utf8)
        transport?.close()
        return true
    }
}

/// Records its callbacks, and as CPython's `MyProto` notes any that comes out of order (or off the
/// loop) as a violation.
final class RecordingProtocol: StreamProtocol, Sendable {
    enum Event: Equatable, Sendable {
        case made, data(String), eof, lost(String?), pausedWriting, resumedWriting
    }

    private enum Phase: Sendable { case initial, connected, eof, closed }

    private struct State: Sendable {
        var phase = Phase.initial
        var events: [Event] = []
        var text = ""
        var violations: [String] = []
        var lostError: String?
        var loop: EventLoop?
    }

    private let state = Locked(State())
    private let keepOpenOnEOF: Bool

    init(keepOpenOnEOF: Bool = false) { self.keepOpenOnEOF = keepOpenOnEOF }

    var events: [Event] { state.value.events }
    var text: String { state.value.text }
    var violations: [String] { state.value.violations }
    var lostError: (any Error)? { lostErrorValue.value }
    private let lostErrorValue = Locked<(any Error & Sendable)?>(nil)

    private func note(_ event: Event, allowedIn phases: [Phase], then next: Phase? = nil) {
        state.update { state in
            if !phases.contains(state.phase) { state.violations.append("\(event) in \(state.phase)") }
            if let loop = state.loop, !loop.inEventLoop { state.violations.append("\(event) off the loop") }
            if let next { state.phase = next }
            // Consecutive data merge: how bytes are cut into calls is the kernel's business.
            if case .data(let more) = event, case .data(let before)? = state.events.last {
                state.events[state.events.count - 1] = .data(before + more)
            } else {
                state.events.append(event)
            }
            if case .data(let more) = event { state.text += more }
        }
    }

    /// The transport `connectionMade` gave, to write from the test.
    var transport: (any Transport)? { madeTransport.value }
    private let madeTransport = Locked<(any Transport)?>(nil)

    func connectionMade(_ transport: any Transport) {
        madeTransport.set(transport)
        state.update { $0.loop = transport.loop }
        note(.made, allowedIn: [.initial], then: .connected)
    }

    func dataReceived(_ data: Bytes) {
        note(.data(String(decoding: Array(data), as: UTF8.self)), allowedIn: [.connected])
    }

    func eofReceived() -> Bool {
        note(.eof, allowedIn: [.connected], then: .eof)
        return keepOpenOnEOF
    }

    func connectionLost(_ error: (any Error)?) {
        lostErrorValue.set(error.map { $0 as? StreamError ?? StreamError.invalidArgument("\($0)") })
        note(.lost(error.map { "\($0)" }), allowedIn: [.connected, .eof], then: .closed)
    }

    func pauseWriting() { note(.pausedWriting, allowedIn: [.connected, .eof]) }
    func resumeWriting() { note(.resumedWriting, allowedIn: [.connected, .eof]) }

    /// Waits until `count` bytes have arrived and returns them as text.
    func received(count: Int) async throws -> String {
        _ = try await eventually { self.text.utf8.count >= count }
        return text
    }

    func waitUntilLost() async throws {
        let lost = try await eventually {
            if case .lost? = self.events.last { return true } else { return false }
        }
        if !lost { throw DeadlineExceeded(seconds: 5) }
    }
}

/// Collects what arrives through `bytesReceived`.
private final class CollectingBufferedProtocol: BufferedStreamProtocol, Sendable {
    private let collected = Locked<[UInt8]>([])
    private let calls = Locked(0)
    var bytes: [UInt8] { collected.value }
    var count: Int { collected.value.count }
    var dataReceivedCalls: Int { calls.value }

    func bytesReceived(_ buffer: UnsafeRawBufferPointer) {
        collected.update { $0.append(contentsOf: buffer) }
    }

    func dataReceived(_ data: Bytes) {
        calls.update { $0 += 1 }
    }
}

/// Socket options the flow-control test sets.
enum SocketDescriptorOptions {
    static func setSendBuffer(_ descriptor: Int32, bytes: Int32) throws {
        var value = bytes
        guard setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SystemCallFailed(call: "setsockopt(SO_SNDBUF)", errno: errno)
        }
    }
}
