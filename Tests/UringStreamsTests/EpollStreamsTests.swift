import Glibc
import Testing
import UringStreams

/// The streams API on a group forced onto the epoll backend, in the default (io_uring) test run;
/// `URINGSTREAMS_BACKEND=epoll swift test` runs every other suite on it too.
@Suite(.timeLimit(.minutes(1)))
struct EpollStreamsTests {
    enum Peer: CaseIterable { case tcp, unix }

    private func epollGroup() -> EventLoopGroup {
        var configuration = EventLoop.Configuration()
        configuration.backend = .epoll
        return EventLoopGroup(loopCount: 1, configuration: configuration)
    }

    @Test(arguments: Peer.allCases)
    func aMegabyteEchoesIntactOverEpoll(peer: Peer) async throws {
        try await withDeadline(30) {
            let group = epollGroup()
            let loop = group.next()
            #expect(loop.backend == .epoll)
            let directory = try TemporaryDirectory()
            let payload = patternBytes(count: 1 << 20, seed: 11)
            let statistics = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                let server: Server
                let (reader, writer): (StreamReader, StreamWriter)
                if peer == .unix {
                    server = try await startUnixServer(
                        path: directory.file("e.sock"), clientConnected: echoChunksUntilEOF)
                    (reader, writer) = try await openUnixConnection(path: directory.file("e.sock"))
                } else {
                    server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: echoChunksUntilEOF)
                    (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                }
                async let sending: Void = sendAll(payload, through: writer, chunkSize: 256 * 1024)
                let echoed = try await reader.readExactly(payload.count)
                try await sending
                #expect(Array(echoed) == payload)
                writer.writeEOF()
                #expect(try await reader.read().isEmpty)
                writer.close()
                try await writer.waitClosed()
                server.close()
                await server.waitClosed()
                return loop.statistics
            }
            #expect(statistics.backend == .epoll)
            #expect(statistics.bytesReceived >= 2 << 20)
            #expect(statistics.zeroCopySends == 0)
            try await group.shutdown()
        }
    }

    @Test func refusedConnectionsAndTimeoutsBehaveAsOnIoUring() async throws {
        try await withDeadline {
            let group = epollGroup()
            let loop = group.next()
            try await withTaskExecutorPreference(loop) {
                // A port nobody listens on: bind one, note it, close it.
                let probe = try await startServer(host: "127.0.0.1", port: 0) { _, writer in writer.close() }
                let port = probe.addresses[0].port
                probe.close()
                await probe.waitClosed()
                await #expect(throws: StreamError.self) { try await openConnection(host: "127.0.0.1", port: port) }

                let start = ContinuousClock.now
                try await loop.sleep(for: .milliseconds(20))
                #expect(ContinuousClock.now - start >= .milliseconds(20))

                // The handler holds the connection open, silent, until the client closes.
                let server = try await startServer(host: "127.0.0.1", port: 0) { reader, _ in
                    _ = try? await reader.read()
                }
                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                await #expect(throws: StreamError.timedOut) {
                    try await withTimeout(.milliseconds(30)) { try await reader.readLine() }
                }
                writer.close()
                try await writer.waitClosed()
                server.close()
                await server.waitClosed()
            }
            try await group.shutdown()
        }
    }
}
