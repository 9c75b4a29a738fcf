import Glibc
import Testing

@_spi(UringInternals) import UringRuntime
@testable import UringStreams

/// Protocols over TLS, as CPython's `test_sslproto.py` checks `SSLProtocol`: the application's
/// protocol sees `connection_made` only once the handshake is done and nothing at all when it
/// fails, callbacks keep their order through the TLS layer, and a closed transport neither
/// delivers nor sends.
@Suite(.needsOpenSSL, .timeLimit(.minutes(1)))
struct TLSProtocolTests {
    /// The functional cases of `test_sslproto.py` (`test_start_tls_client_*`/`server_*`): both ends
    /// protocols, data each way, an orderly close seen in order on both.
    @Test func protocolsOnBothEndsSeeEveryCallbackInOrder() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let made = Mailbox<RecordingProtocol>()
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) {
                let recorder = RecordingProtocol()
                made.send(recorder)
                return recorder
            }
            defer { server.close() }
            let (transport, client) = try await createConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost"
            ) { RecordingProtocol() }
            #expect(client.events == [.made])
            transport.write(Bytes("ping"))
            let serverSide = await made.receive()
            #expect(try await serverSide.received(count: 4) == "ping")
            let serverTransport = try #require(serverSide.transport)
            serverTransport.write(Bytes("pong"))
            #expect(try await client.received(count: 4) == "pong")
            // The server closes: close_notify, then the socket. The client sees EOF (its protocol
            // returns false: it closes too) and both see an orderly loss.
            serverTransport.close()
            try await serverSide.waitUntilLost()
            try await client.waitUntilLost()
            #expect(serverSide.events == [.made, .data("ping"), .lost(nil)])
            #expect(client.events == [.made, .data("pong"), .eof, .lost(nil)])
            #expect(serverSide.violations.isEmpty && client.violations.isEmpty)
        }
    }

    /// `SSLProtocol._on_handshake_complete`: the application's `connection_made` comes after the
    /// handshake, so the TLS details are there when it is called.
    @Test func connectionMadeComesAfterTheHandshake() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let cipherAtMade = Mailbox<Bool>()
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) {
                CipherCheckingProtocol(report: cipherAtMade)
            }
            defer { server.close() }
            let (transport, _) = try await createConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost"
            ) { RecordingProtocol() }
            defer { transport.close() }
            #expect(await cipherAtMade.receive())
            #expect(transport.extraInfo("cipher") != nil)
        }
    }

    /// `test_eof_received_waiter` / `test_connection_lost`: the peer goes away during the
    /// handshake. The connection fails, and the application's protocol is never told anything: no
    /// `connection_made`, so no `connection_lost` either.
    @Test func aPeerLeavingDuringTheHandshakeFailsTheConnectionSilently() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (listener, port) = try RawSocket.tcpLoopback(listening: true)
            defer { RawSocket.close(listener) }
            // Accepts, reads the ClientHello, closes.
            let peer = Task {
                try await onThread { () throws -> Void in
                    let connection = accept(listener, nil, nil)
                    guard connection >= 0 else { throw SystemCallFailed(call: "accept", errno: errno) }
                    _ = try RawSocket.read(connection)
                    RawSocket.close(connection)
                }
            }
            let protocols = Locked<[RecordingProtocol]>([])
            await #expect(throws: (any Error).self) {
                _ = try await createConnection(
                    host: "127.0.0.1", port: port, tls: fixtures.client, serverHostname: "localhost"
                ) {
                    let recorder = RecordingProtocol()
                    protocols.update { $0.append(recorder) }
                    return recorder
                }
            }
            try await peer.value
            try await settle(50)
            #expect(protocols.value.allSatisfy { $0.events.isEmpty })
        }
    }

    /// `test_handshake_timeout`: a server that accepts and never answers; the handshake times out
    /// and the application's protocol hears nothing.
    @Test func aHandshakeTimeoutFailsTheConnectionSilently() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (listener, port) = try RawSocket.tcpLoopback(listening: true)
            defer { RawSocket.close(listener) }
            let protocols = Locked<[RecordingProtocol]>([])
            await #expect(throws: StreamError.timedOut) {
                _ = try await createConnection(
                    host: "127.0.0.1", port: port, tls: fixtures.client, serverHostname: "localhost",
                    tlsHandshakeTimeout: .milliseconds(200)
                ) {
                    let recorder = RecordingProtocol()
                    protocols.update { $0.append(recorder) }
                    return recorder
                }
            }
            try await settle(50)
            #expect(protocols.value.allSatisfy { $0.events.isEmpty })
        }
    }

    /// `test_write_after_closing` and `test_data_received_after_closing`: once closed, the
    /// transport takes no more writes (nothing is queued or sent) and delivers nothing more to
    /// its protocol, even when the peer answers.
    @Test func aClosedTransportNeitherSendsNorDelivers() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let made = Mailbox<RecordingProtocol>()
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) {
                let recorder = RecordingProtocol()
                made.send(recorder)
                return recorder
            }
            defer { server.close() }
            let (transport, client) = try await createConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost"
            ) { RecordingProtocol() }
            let serverSide = await made.receive()
            transport.write(Bytes("bye"))
            transport.close()
            // Over TLS the size counts ciphertext queued too (asyncio's does): compare, not 3. The
            // loop may send some of it meanwhile, so it can only shrink.
            let queued = transport.writeBufferSize
            transport.write(Bytes("after close"))
            #expect(transport.isClosing)
            #expect(transport.writeBufferSize <= queued)
            #expect(try await serverSide.received(count: 3) == "bye")
            // The server answers; the closed client must not deliver it.
            serverSide.transport?.write(Bytes("late"))
            try await client.waitUntilLost()
            try await serverSide.waitUntilLost()
            #expect(!client.events.contains { if case .data = $0 { true } else { false } })
            #expect(serverSide.text == "bye")
        }
    }

    /// `test_buf_feed_data` (asyncio's `BufferedProtocol` over TLS): a buffered protocol gets the
    /// decrypted bytes through `bytesReceived`, never through `dataReceived`, as over plain TCP.
    @Test func aBufferedProtocolReadsDecryptedBytesInPlace() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let payload = patternBytes(count: 100_000)
            let server = try await createServer(host: "127.0.0.1", port: 0, tls: fixtures.server) {
                SendingProtocol(payload)
            }
            defer { server.close() }
            let (transport, client) = try await createConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost"
            ) { InPlaceCollector() }
            defer { transport.close() }
            #expect(try await eventually { client.count == payload.count })
            #expect(client.bytes == payload)
            #expect(client.dataReceivedCalls == 0)
        }
    }
}

/// Reports whether the TLS cipher was known when `connectionMade` came.
private final class CipherCheckingProtocol: StreamProtocol, Sendable {
    let report: Mailbox<Bool>
    init(report: Mailbox<Bool>) { self.report = report }
    func connectionMade(_ transport: any Transport) { report.send(transport.extraInfo("cipher") != nil) }
    func dataReceived(_ data: Bytes) {}
}

/// Sends its payload once connected.
private final class SendingProtocol: StreamProtocol, Sendable {
    let payload: [UInt8]
    init(_ payload: [UInt8]) { self.payload = payload }
    func connectionMade(_ transport: any Transport) { transport.write(Bytes(payload)) }
    func dataReceived(_ data: Bytes) {}
}

/// A buffered protocol that counts any call of `dataReceived`, which must not come.
private final class InPlaceCollector: BufferedStreamProtocol, Sendable {
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
        data.withUnsafeBytes { bytesReceived($0) }
    }
}
