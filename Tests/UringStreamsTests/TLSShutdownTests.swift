import Testing
import UringStreams

/// Closing a TLS connection as asyncio's sslproto does: close_notify both ways, bounded by the
/// shutdown timeout (asyncio `ssl_shutdown_timeout`).
@Suite(.timeLimit(.minutes(1)), .needsOpenSSL)
struct TLSShutdownTests {
    /// A peer that neither reads nor answers close_notify: close() gives up after the shutdown
    /// timeout, aborting the connection, and waitClosed says so.
    @Test func closeAbortsWhenThePeerNeverAnswers() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let handlerMayEnd = Mailbox<Bool>()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { _, writer in
                // Holds the connection open, reading nothing, until the test is done.
                _ = await handlerMayEnd.receive()
                writer.transport.abort()
            }
            let port = try #require(server.addresses.first).port
            let (_, writer) = try await openConnection(
                host: "127.0.0.1", port: port, tls: fixtures.client, tlsShutdownTimeout: .milliseconds(300))
            // More than the kernel buffers hold, so the queue cannot drain either.
            writer.write(patternBytes(count: 16 << 20))
            let start = ContinuousClock.now
            writer.close()
            await #expect(throws: StreamError.timedOut) { try await writer.waitClosed() }
            #expect(ContinuousClock.now - start < .seconds(10))
            handlerMayEnd.send(true)
            server.close()
            await server.waitClosed()
        }
    }

    /// Both ends close: each sends close_notify and the other's answer ends the wait at once, long
    /// before the (default, 30 s) timeout.
    @Test func closeCompletesOnThePeersCloseNotify() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            let port = try #require(server.addresses.first).port
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port, tls: fixtures.client)
            #expect(try await roundTrip("bye\n", reader: reader, writer: writer) == "bye\n")
            let start = ContinuousClock.now
            writer.close()
            try await writer.waitClosed()
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(try await reader.read().isEmpty)
            server.close()
            await server.waitClosed()
        }
    }

    @Test func aShutdownTimeoutNeedsTLSAndMustBePositive() async throws {
        await #expect(throws: StreamError.invalidArgument("tlsShutdownTimeout is only meaningful with tls")) {
            _ = try await openConnection(host: "127.0.0.1", port: 1, tlsShutdownTimeout: .seconds(1))
        }
        let fixtures = try await TLSFixtures.make()
        await #expect(throws: StreamError.self) {
            _ = try await openConnection(
                host: "127.0.0.1", port: 1, tls: fixtures.client, tlsShutdownTimeout: .zero)
        }
    }
}
