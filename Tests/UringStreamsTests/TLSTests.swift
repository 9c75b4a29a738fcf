// TLS over the streams API against peers nobody here wrote (Python's ssl and asyncio, the openssl
// command) and against itself, with certificates made at test time (see Support/TLSSupport.swift).
// Each case is in the spirit of CPython's test_asyncio/test_sslproto.py and test_streams.py
// (test_open_connection_no_loop_ssl, test_start_tls), with OpenSSL's own verification errors.

import Glibc
import Testing

@_spi(UringInternals) import UringRuntime
@testable import UringStreams

// Serialized: each case starts peer processes and some move 16 MiB through OpenSSL; run side by
// side they would starve the timing-sensitive cases of the other suites on a small machine.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct TLSTests {
    // MARK: Handshakes both ways

    @Test(
        .needsOpenSSLAndPython,
        arguments: Placement.allCases)
    func clientTalksToPythonAsyncioServer(placement: Placement) async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer()
            defer { python.stop() }
            let config = TLSConfiguration.client(trustRoots: .file(fixtures.caFile), alpn: ["h2", "http/1.1"])
            try await placement.run {
                let (reader, writer) = try await openConnection(host: "localhost", port: port, tls: config)
                #expect(try await roundTrip("over TLS\n", reader: reader, writer: writer) == "over TLS\n")
                let info = try #require(writer.extraInfo("ssl_object") as? TLSConnectionInfo)
                #expect(info.protocolVersion == "TLSv1.3")
                #expect(info.alpnProtocol == "http/1.1")
                #expect(info.serverHostname == "localhost")
                #expect(info.isServer == false)
                let cipher = try #require(writer.extraInfo("cipher") as? TLSCipher)
                #expect(cipher.protocolVersion == "TLSv1.3" && cipher.secretBits >= 128 && !cipher.name.isEmpty)
                let certificate = try #require(writer.extraInfo("peercert") as? TLSCertificate)
                #expect(certificate.subject.contains("CN=localhost"))
                #expect(certificate.issuer.contains("CN=UringStreams ca"))
                #expect(certificate.subjectAlternativeNames.contains("DNS:localhost"))
                #expect(certificate.der.first == 0x30)  // a DER SEQUENCE
                #expect(writer.extraInfo("sslcontext") as? TLSConfiguration == config)
                #expect(writer.extraInfo("compression") == nil)
                #expect(writer.canWriteEOF == false)
                writer.close()
                try await writer.waitClosed()
            }
        }
    }

    @Test(.needsOpenSSL)
    func clientTalksToOpenSSLServer() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let port = try RawSocket.unusedPort()
            let server = try ChildProcess(
                [
                    "openssl", "s_server", "-accept", "127.0.0.1:\(port)", "-cert", fixtures.serverCertificate,
                    "-key", fixtures.serverKey, "-www", "-tls1_2", "-naccept", "1",
                ], in: fixtures.directory)
            defer { server.stop() }
            _ = try await onThread { try server.readLine { $0.contains("ACCEPT") } }
            // An IP address: verified against the certificate's IP entry, no SNI sent.
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: port, tls: fixtures.client)
            #expect((writer.extraInfo("ssl_object") as? TLSConnectionInfo)?.protocolVersion == "TLSv1.2")
            writer.write("GET / HTTP/1.0\r\n\r\n")
            let status = text(try await reader.readLine())
            #expect(status.hasPrefix("HTTP/1.0 200 ok"))
            let rest = text(try await reader.read())
            #expect(rest.contains("TLSv1.2"))
            writer.close()
            try await writer.waitClosed()
        }
    }

    @Test(
        .needsOpenSSLAndPython)
    func pythonClientTalksToServer() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { reader, writer in
                guard let line = try? await reader.readLine() else { return }
                writer.write("echo: ")
                writer.write(line)
                writer.close()
            }
            defer { server.close() }
            let port = server.addresses[0].port
            let lines = try await onThread { try fixtures.pythonClient(port: port) }
            #expect(lines == ["TLSv1.3", "echo: hello from python", "clean-eof"])
        }
    }

    @Test(.needsOpenSSL)
    func opensslClientTalksToServer() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            // Served from a socket bound here: the fileDescriptor: variant takes tls: too.
            let (listener, _) = try RawSocket.tcpLoopback(listening: false)
            let server = try await startServer(fileDescriptor: listener, tls: fixtures.server) { reader, writer in
                guard let line = try? await reader.readLine() else { return }
                writer.write("echo: ")
                writer.write(line)
                writer.close()
            }
            defer { server.close() }
            let client = try ChildProcess(
                [
                    "openssl", "s_client", "-connect", "127.0.0.1:\(server.addresses[0].port)", "-CAfile",
                    fixtures.caFile, "-servername", "localhost", "-verify_hostname", "localhost",
                    "-verify_return_error", "-quiet", "-ign_eof",
                ], in: fixtures.directory)
            defer { client.stop() }
            try client.write("hello from s_client\n")
            try client.closeInput()
            let echoed = try await onThread { try client.readLine(where: { $0.hasPrefix("echo:") }) }
            #expect(echoed == "echo: hello from s_client", "s_client said: \(client.errorText)")
            #expect(try await onThread { client.waitForExit() } == 0)
        }
    }

    @Test(
        .needsOpenSSL,
        arguments: SocketKind.allCases, Placement.allCases)
    func clientTalksToServer(kind: SocketKind, placement: Placement) async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let serverConfig = TLSConfiguration.server(
                certificateFile: fixtures.serverCertificate, privateKeyFile: fixtures.serverKey, alpn: ["http/1.1"])
            let serverALPN = Locked<String?>(nil)
            let handler: @Sendable (StreamReader, StreamWriter) async -> Void = { reader, writer in
                serverALPN.set((writer.extraInfo("ssl_object") as? TLSConnectionInfo)?.alpnProtocol)
                await echoLinesUntilEOF(reader, writer)
            }
            let clientConfig = TLSConfiguration.client(trustRoots: .file(fixtures.caFile), alpn: ["h2", "http/1.1"])
            // On a private loop both ends' handshakes run on one thread.
            try await placement.run {
                let server: Server
                let reader: StreamReader
                let writer: StreamWriter
                switch kind {
                case .tcp:
                    server = try await startServer(
                        host: "127.0.0.1", port: 0, tls: serverConfig, clientConnected: handler)
                    (reader, writer) = try await openConnection(
                        host: "127.0.0.1", port: server.addresses[0].port, tls: clientConfig,
                        serverHostname: "localhost")
                case .unix:
                    let path = fixtures.directory.file("tls-\(placement).sock")
                    server = try await startUnixServer(path: path, tls: serverConfig, clientConnected: handler)
                    (reader, writer) = try await openUnixConnection(
                        path: path, tls: clientConfig, serverHostname: "localhost")
                }
                for index in 0..<10 {
                    #expect(
                        try await roundTrip("line \(index)\n", reader: reader, writer: writer) == "line \(index)\n")
                }
                #expect((writer.extraInfo("ssl_object") as? TLSConnectionInfo)?.alpnProtocol == "http/1.1")
                #expect(serverALPN.value == "http/1.1")
                writer.close()
                try await writer.waitClosed()
                server.close()
                await server.waitClosed()
            }
        }
    }

    @Test(.needsOpenSSL)
    func noCommonALPNProtocolGoesOnWithout() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let serverConfig = TLSConfiguration.server(
                certificateFile: fixtures.serverCertificate, privateKeyFile: fixtures.serverKey, alpn: ["h2"])
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: serverConfig) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            defer { server.close() }
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: server.addresses[0].port,
                tls: .client(trustRoots: .file(fixtures.caFile), alpn: ["http/1.1"]), serverHostname: "localhost")
            let info = try #require(writer.extraInfo("ssl_object") as? TLSConnectionInfo)
            #expect(info.alpnProtocol == nil)
            #expect(try await roundTrip("no ALPN\n", reader: reader, writer: writer) == "no ALPN\n")
            writer.close()
        }
    }

    @Test(.needsOpenSSL)
    func cancellingAHandshakeAbortsItPromptly() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let accepted = Locked(false)
            let silent = try BlockingServer { connection in
                accepted.set(true)
                _ = try? RawSocket.readToEOF(connection, timeoutMilliseconds: 10_000)
            }
            defer { silent.stop() }
            let attempt = Task {
                try await openConnection(
                    host: "127.0.0.1", port: silent.port, tls: fixtures.client, serverHostname: "localhost")
            }
            #expect(try await eventually { accepted.value })
            try await settle()
            let clock = ContinuousClock()
            let cancelled = clock.now
            attempt.cancel()
            await #expect(throws: CancellationError.self) { _ = try await attempt.value }
            #expect(clock.now - cancelled < .seconds(5))
        }
    }

    // MARK: Verification

    @Test(
        .needsOpenSSLAndPython)
    func serverSignedByAnotherCAIsRejected() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer()
            defer { python.stop() }
            let error = await #expect(throws: StreamError.self) {
                _ = try await openConnection(
                    host: "localhost", port: port, tls: .client(trustRoots: .file(fixtures.otherCAFile)))
            }
            #expect(
                isCertificateRejection(error, containing: "unable to get local issuer certificate"),
                "\(String(describing: error))")
            // Verification off accepts the same server.
            let (reader, writer) = try await openConnection(
                host: "localhost", port: port, tls: .client(trustRoots: .file(fixtures.otherCAFile), verifyPeer: false))
            #expect(try await roundTrip("unverified\n", reader: reader, writer: writer) == "unverified\n")
            writer.close()
        }
    }

    @Test(
        .needsOpenSSLAndPython)
    func wrongHostNameIsRejected() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer()
            defer { python.stop() }
            let error = await #expect(throws: StreamError.self) {
                _ = try await openConnection(
                    host: "127.0.0.1", port: port, tls: fixtures.client, serverHostname: "wrong.example")
            }
            #expect(isCertificateRejection(error, containing: "hostname mismatch"), "\(String(describing: error))")
        }
    }

    @Test(
        .needsOpenSSLAndPython)
    func expiredCertificateIsRejected() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer(certificate: fixtures.expiredCertificate)
            defer { python.stop() }
            let error = await #expect(throws: StreamError.self) {
                _ = try await openConnection(host: "localhost", port: port, tls: fixtures.client)
            }
            #expect(
                isCertificateRejection(error, containing: "certificate has expired"), "\(String(describing: error))")
        }
    }

    @Test(
        .needsOpenSSLAndPython)
    func pythonServerRequiringClientCertificates() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer(requireClientCertificates: true)
            defer { python.stop() }
            let withCertificate = TLSConfiguration.client(
                trustRoots: .file(fixtures.caFile), certificateFile: fixtures.clientCertificate,
                privateKeyFile: fixtures.clientKey)
            let (reader, writer) = try await openConnection(host: "localhost", port: port, tls: withCertificate)
            #expect(
                try await roundTrip("with a certificate\n", reader: reader, writer: writer) == "with a certificate\n")
            writer.close()
            // Without one, TLS 1.3 lets the client finish its handshake first. asyncio then drops
            // the connection without sending its alert, so the client sees the end of the stream,
            // or a reset when its record reached the closed socket; never the echo.
            do {
                let (reader, writer) = try await openConnection(host: "localhost", port: port, tls: fixtures.client)
                writer.write("no certificate\n")
                let answer = try await reader.readLine()
                #expect(answer.isEmpty)
                #expect(reader.atEOF)
            } catch {
                let expected =
                    isCertificateRejection(error, containing: "certificate")
                    || error as? StreamError == .connectionReset
                #expect(expected, "\(error)")
            }
            #expect(python.errorText.isEmpty, "the handler ran: \(python.errorText)")
        }
    }

    @Test(
        .needsOpenSSLAndPython)
    func serverRequiringClientCertificates() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let handled = Locked(0)
            let peerSubject = Locked<String?>(nil)
            let config = TLSConfiguration.server(
                certificateFile: fixtures.serverCertificate, privateKeyFile: fixtures.serverKey,
                clientTrustRoots: .file(fixtures.caFile))
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: config) { reader, writer in
                handled.update { $0 += 1 }
                peerSubject.set((writer.extraInfo("peercert") as? TLSCertificate)?.subject)
                guard let line = try? await reader.readLine() else { return }
                writer.write("echo: ")
                writer.write(line)
                writer.close()
            }
            defer { server.close() }
            let port = server.addresses[0].port
            let accepted = try await onThread { try fixtures.pythonClient(port: port, withCertificate: true) }
            #expect(accepted == ["TLSv1.3", "echo: hello from python", "clean-eof"])
            #expect(peerSubject.value == "CN=test client")
            let refused = try await onThread { try fixtures.pythonClient(port: port) }
            #expect(refused.contains { $0.contains("CERTIFICATE_REQUIRED") || $0.hasPrefix("failed:") }, "\(refused)")
            #expect(!refused.contains("echo: hello from python"))
            try await settle()
            #expect(handled.value == 1)
        }
    }

    @Test(.needsOpenSSL)
    func systemTrustRootsHonourSSLCertFile() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            defer { server.close() }
            // OpenSSL reads the variable when the context loads its default paths; the ALPN entry
            // only makes this configuration a value no other test uses, so its context is new.
            setenv("SSL_CERT_FILE", fixtures.caFile, 1)
            defer { unsetenv("SSL_CERT_FILE") }
            let config = TLSConfiguration.client(trustRoots: .system, alpn: ["x-ssl-cert-file-test"])
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: config, serverHostname: "localhost")
            #expect(
                try await roundTrip("trusted via SSL_CERT_FILE\n", reader: reader, writer: writer)
                    == "trusted via SSL_CERT_FILE\n")
            writer.close()
        }
    }

    // MARK: startTLS

    @Test(
        .needsOpenSSLAndPythonStartTLS)
    func startTLSWithPythonAfterAPlaintextLine() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer(mode: "starttls")
            defer { python.stop() }
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
            #expect(writer.extraInfo("cipher") == nil)
            #expect(try await roundTrip("STARTTLS\n", reader: reader, writer: writer) == "OK\n")
            try await writer.startTLS(fixtures.client, serverHostname: "localhost")
            #expect((writer.extraInfo("cipher") as? TLSCipher)?.protocolVersion == "TLSv1.3")
            #expect(try await roundTrip("upgraded\n", reader: reader, writer: writer) == "secure:upgraded\n")
            writer.close()
            try await writer.waitClosed()
        }
    }

    @Test(.needsOpenSSL)
    func startTLSOnBothEnds() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let serverConfig = fixtures.server
            let server = try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
                do {
                    guard try await reader.readLine() == "STARTTLS\n" else { return }
                    writer.write("OK\n")
                    try await writer.startTLS(serverConfig)
                    await echoLinesUntilEOF(reader, writer)
                } catch {
                    writer.close()
                }
            }
            defer { server.close() }
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
            #expect(try await roundTrip("STARTTLS\n", reader: reader, writer: writer) == "OK\n")
            // A verifying client must name the server.
            await #expect(throws: StreamError.self) { try await writer.startTLS(fixtures.client) }
            try await writer.startTLS(fixtures.client, serverHostname: "localhost")
            await #expect(throws: StreamError.invalidArgument("the connection already uses TLS")) {
                try await writer.startTLS(fixtures.client, serverHostname: "localhost")
            }
            #expect(try await roundTrip("secure now\n", reader: reader, writer: writer) == "secure now\n")
            writer.close()
            try await writer.waitClosed()
        }
    }

    // MARK: Volume and flow control

    @Test(
        .needsOpenSSLAndPython)
    func sixteenMebibytesEchoedByPythonArriveIntact() async throws {
        try await withDeadline(45) {
            let fixtures = try await TLSFixtures.make()
            let (python, port) = try await fixtures.pythonServer()
            defer { python.stop() }
            let payload = patternBytes(count: 16 * 1024 * 1024)
            let (reader, writer) = try await openConnection(host: "localhost", port: port, tls: fixtures.client)
            async let echoed = reader.readExactly(payload.count)
            var start = 0
            while start < payload.count {
                let end = min(start + 65_536, payload.count)
                writer.write(payload[start..<end])
                try await writer.drain()
                // Encrypted output stays within the water marks plus one chunk's records.
                #expect(writer.transport.writeBufferSize <= 64 * 1024 + 70_000)
                start = end
            }
            let received = try await echoed
            #expect(received.count == payload.count)
            #expect(received == payload)
            writer.close()
            try await writer.waitClosed()
        }
    }

    @Test(.needsOpenSSL)
    func sixteenMebibytesEchoedByOurServerWithASmallLimit() async throws {
        try await withDeadline(45) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, limit: 4096, tls: fixtures.server) {
                reader, writer in
                await echoChunksUntilEOF(reader, writer)
            }
            defer { server.close() }
            let payload = patternBytes(count: 16 * 1024 * 1024, seed: 7)
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: server.addresses[0].port, limit: 4096, tls: fixtures.client,
                serverHostname: "localhost")
            async let echoed = reader.readExactly(payload.count)
            var start = 0
            while start < payload.count {
                let end = min(start + 65_536, payload.count)
                writer.write(payload[start..<end])
                try await writer.drain()
                start = end
            }
            let received = try await echoed
            #expect(received == payload)
            writer.close()
            try await writer.waitClosed()
        }
    }

    @Test(.needsOpenSSL)
    func readerLimitPausesTheSocketForDecryptedData() async throws {
        try await withDeadline(30) {
            let fixtures = try await TLSFixtures.make()
            let payload = patternBytes(count: 1024 * 1024, seed: 3)
            let serverWriter = Mailbox<StreamWriter>()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { _, writer in
                writer.write(payload)
                serverWriter.send(writer)
                try? await writer.drain()
                writer.close()
            }
            defer { server.close() }
            let port = server.addresses[0].port
            try await onFreshLoop {
                let (reader, writer) = try await openConnection(
                    host: "127.0.0.1", port: port, limit: 4096, tls: fixtures.client, serverHostname: "localhost")
                _ = await serverWriter.receive()
                // Nobody reads: above 2 × limit of decrypted data the reader pauses the socket,
                // and it stays paused (the TLS layer does not keep reading on its own).
                #expect(try await eventually { !writer.transport.isReading })
                try await settle(300)
                #expect(!writer.transport.isReading)
                let received = try await reader.readExactly(payload.count)
                #expect(received == payload)
                #expect(try await reader.read().isEmpty)
                writer.close()
            }
        }
    }

    @Test(.needsOpenSSL)
    func writeEOFSendsCloseNotifyAndKeepsReading() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            defer { server.close() }
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost")
            #expect(writer.canWriteEOF == false)
            writer.write("last line\n")
            writer.writeEOF()
            writer.write("dropped\n")
            await #expect(throws: StreamError.closed) { try await writer.drain() }
            // The server saw the end of our data (close_notify), echoed what came before, closed.
            #expect(text(try await reader.read()) == "last line\n")
            #expect(reader.atEOF)
            writer.close()
            try await writer.waitClosed()
        }
    }

    // MARK: Peers that misbehave

    /// Where a server stalls: before its first byte, or in the middle of its first record.
    enum Stall: String, CaseIterable, Sendable {
        case silent, midRecord
    }

    @Test(
        .needsOpenSSL,
        arguments: Stall.allCases)
    func handshakeTimesOutWhenTheServerStalls(stall: Stall) async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let stalling = try BlockingServer { connection in
                if stall == .midRecord {
                    // Wait for the ClientHello, then send the start of a handshake record
                    // (type 22, TLS 1.2, 80 bytes long) and nothing more.
                    _ = try? RawSocket.read(connection)
                    try? RawSocket.writeAll(connection, [22, 3, 3, 0, 80, 2, 0, 0])
                }
                _ = try? RawSocket.readToEOF(connection, timeoutMilliseconds: 10_000)
            }
            defer { stalling.stop() }
            let clock = ContinuousClock()
            let started = clock.now
            await #expect(throws: StreamError.timedOut) {
                _ = try await openConnection(
                    host: "127.0.0.1", port: stalling.port, tls: fixtures.client, serverHostname: "localhost",
                    tlsHandshakeTimeout: .milliseconds(300))
            }
            let elapsed = clock.now - started
            // Well under asyncio's default of 60 s, with room for a loaded machine.
            #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(10))
        }
    }

    @Test(.needsOpenSSL)
    func serverDropsAClientThatNeverSpeaks() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let handled = Locked(false)
            let server = try await startServer(
                host: "127.0.0.1", port: 0, tls: fixtures.server, tlsHandshakeTimeout: .milliseconds(300)
            ) { _, _ in handled.set(true) }
            defer { server.close() }
            let port = server.addresses[0].port
            let rest = try await onThread { () throws -> [UInt8] in
                let connection = try RawSocket.connectTCP(port: port)
                defer { RawSocket.close(connection) }
                return try RawSocket.readToEOF(connection, timeoutMilliseconds: 5_000)
            }
            #expect(rest.isEmpty)
            #expect(handled.value == false)
        }
    }

    @Test(.needsOpenSSL)
    func garbageFromTheServerFailsTheHandshake() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let garbage = try BlockingServer { connection in
                try? RawSocket.writeAll(
                    connection, utf8("HTTP/1.1 400 Bad Request\r\n\r\n") + patternBytes(count: 5000))
                _ = try? RawSocket.readToEOF(connection, timeoutMilliseconds: 5_000)
            }
            defer { garbage.stop() }
            let error = await #expect(throws: StreamError.self) {
                _ = try await openConnection(
                    host: "127.0.0.1", port: garbage.port, tls: fixtures.client, serverHostname: "localhost")
            }
            #expect(isHandshakeFailure(error), "\(String(describing: error))")
        }
    }

    @Test(.needsOpenSSL)
    func garbageFromAClientIsAnsweredWithAnAlertAndAClose() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let handled = Locked(false)
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { _, _ in
                handled.set(true)
            }
            defer { server.close() }
            let port = server.addresses[0].port
            let answer = try await onThread { () throws -> [UInt8] in
                let connection = try RawSocket.connectTCP(port: port)
                defer { RawSocket.close(connection) }
                try RawSocket.writeAll(connection, utf8("GET / HTTP/1.0\r\n\r\n") + patternBytes(count: 3000))
                return try RawSocket.readToEOF(connection, timeoutMilliseconds: 5_000)
            }
            // Nothing but a TLS alert record (content type 21) comes back before the close.
            #expect(answer.isEmpty || answer.first == 21)
            #expect(handled.value == false)
        }
    }

    @Test(.needsOpenSSL)
    func garbageAfterTheHandshakeFailsTheStream() async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let server = try await startServer(host: "127.0.0.1", port: 0, tls: fixtures.server) { reader, writer in
                writer.write("hello\n")
                // Once the client has read it (a stored error would hide buffered data from reads):
                // straight to the socket, below the TLS transport, bytes that are no TLS record.
                _ = try? await reader.readLine()
                writer.socket.write(Bytes(patternBytes(count: 300)))
                _ = try? await reader.read()
            }
            defer { server.close() }
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: server.addresses[0].port, tls: fixtures.client, serverHostname: "localhost")
            #expect(try await reader.readLine() == "hello\n")
            writer.write("thanks\n")
            let error = await #expect(throws: StreamError.self) { _ = try await reader.read() }
            #expect(isHandshakeFailure(error), "\(String(describing: error))")
            // Stored: drain and waitClosed report it too.
            await #expect(throws: StreamError.self) { try await writer.drain() }
            await #expect(throws: StreamError.self) { try await writer.waitClosed() }
        }
    }

    // MARK: Arguments

    @Test func tlsArgumentsAreChecked() async throws {
        try await withDeadline {
            let port = try RawSocket.unusedPort()
            await #expect(throws: StreamError.invalidArgument("serverHostname is only meaningful with tls")) {
                _ = try await openConnection(host: "127.0.0.1", port: port, serverHostname: "localhost")
            }
            await #expect(throws: StreamError.invalidArgument("tlsHandshakeTimeout is only meaningful with tls")) {
                _ = try await openConnection(host: "127.0.0.1", port: port, tlsHandshakeTimeout: .seconds(1))
            }
            await #expect(throws: StreamError.self) {
                _ = try await openConnection(
                    host: "127.0.0.1", port: port, tls: .client(), tlsHandshakeTimeout: .zero)
            }
            let missing = TLSConfiguration.server(
                certificateFile: "/nonexistent/cert.pem", privateKeyFile: "/nonexistent/key.pem")
            let error = await #expect(throws: StreamError.self) {
                _ = try await startServer(host: "127.0.0.1", port: 0, tls: missing) { _, _ in }
            }
            #expect(isInvalidArgument(error) && "\(String(describing: error))".contains("/nonexistent/cert.pem"))
            await #expect(throws: StreamError.self) {
                _ = try await startServer(host: "127.0.0.1", port: 0, tls: .client()) { _, _ in }
            }
            // A path names no host: a verifying client needs serverHostname.
            await #expect(throws: StreamError.self) {
                _ = try await openUnixConnection(path: "/nonexistent.sock", tls: .client())
            }
        }
    }
}
