import Testing
import UringStreams

/// The receive and send paths under every kernel-feature combination the runtime can pick:
/// incremental buffers and bundles on and off (their fallbacks are what older kernels get), tiny
/// buffer pools that force ENOBUFS and copying, and zero-copy sends with their fallback.
@Suite(.timeLimit(.minutes(2)))
struct DataPathTests {
    struct Setting: Sendable, CustomTestStringConvertible {
        var incremental: Bool
        var bundles: Bool
        var bufferCount: Int
        var bufferSize: Int

        var testDescription: String {
            "inc=\(incremental) bundles=\(bundles) \(bufferCount)x\(bufferSize)"
        }

        var configuration: EventLoop.Configuration {
            var configuration = EventLoop.Configuration()
            configuration.incrementalReceiveBuffers = incremental
            configuration.receiveBundles = bundles
            configuration.receiveBufferCount = bufferCount
            configuration.receiveBufferSize = bufferSize
            return configuration
        }
    }

    static let settings: [Setting] = [
        Setting(incremental: true, bundles: true, bufferCount: 64, bufferSize: 65_536),
        Setting(incremental: true, bundles: false, bufferCount: 64, bufferSize: 65_536),
        Setting(incremental: false, bundles: true, bufferCount: 256, bufferSize: 16_384),
        Setting(incremental: false, bundles: false, bufferCount: 256, bufferSize: 16_384),
        // Few, small buffers: ENOBUFS, re-arms and the copy fallback all happen.
        Setting(incremental: true, bundles: true, bufferCount: 4, bufferSize: 4_096),
        Setting(incremental: false, bundles: false, bufferCount: 4, bufferSize: 4_096),
    ]

    @Test(arguments: settings)
    func concurrentEchoesStayIntactAndInOrder(setting: Setting) async throws {
        try await withDeadline(60) {
            let group = EventLoopGroup(loopCount: 1, configuration: setting.configuration)
            let loop = group.next()
            let payloads = (0..<4).map { patternBytes(count: 256 << 10, seed: UInt32(7 + $0)) }
            let stats = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                let server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: echoChunksUntilEOF)
                let port = try #require(server.addresses.first).port
                try await withThrowingTaskGroup(of: Bool.self) { tasks in
                    for (index, payload) in payloads.enumerated() {
                        tasks.addTask {
                            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                            // Odd write sizes put message edges everywhere inside the buffers.
                            async let sending: Void = sendAll(payload, through: writer, chunkSize: 997 + index * 4_099)
                            let echoed = try await reader.readExactly(payload.count)
                            try await sending
                            writer.writeEOF()
                            let tail = try await reader.read()
                            writer.close()
                            return Array(echoed) == payload && tail.isEmpty
                        }
                    }
                    for try await intact in tasks { #expect(intact) }
                }
                server.close()
                await server.waitClosed()
                try await loop.sleep(for: .milliseconds(1))
                return loop.statistics
            }
            // Both directions of every echo went through this loop's receive buffers.
            #expect(stats.bytesReceived >= 2 * payloads.count * (256 << 10))
            if setting.bufferCount == 4 {
                #expect(stats.bufferExhaustions > 0)
                #expect(stats.receiveRearms > 0)
            }
            try await group.shutdown()
        }
    }

    /// A ring of 2 submission and 16 completion entries under 24 connections echoing at once:
    /// submissions wait for room, completions overflow the queue, multishot receives and accepts
    /// end without IORING_CQE_F_MORE and must be armed again. Nothing is lost or reordered.
    @Test func aTinyRingCarriesManyConnections() async throws {
        try await withDeadline(60) {
            var configuration = EventLoop.Configuration()
            configuration.ringEntries = 2
            let group = EventLoopGroup(loopCount: 1, configuration: configuration)
            let loop = group.next()
            try await withTaskExecutorPreference(loop) {
                let server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: echoLinesUntilEOF)
                let port = try #require(server.addresses.first).port
                try await withThrowingTaskGroup(of: Bool.self) { tasks in
                    for connection in 0..<24 {
                        tasks.addTask {
                            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                            var intact = true
                            for line in 0..<50 {
                                let text = "\(connection):\(line)\n"
                                intact = try await roundTrip(text, reader: reader, writer: writer) == text && intact
                            }
                            writer.close()
                            return intact
                        }
                    }
                    for try await intact in tasks { #expect(intact) }
                }
                server.close()
                await server.waitClosed()
            }
            try await group.shutdown()
        }
    }

    @Test func aSlowReaderDoesNotStarveOtherConnectionsOfBuffers() async throws {
        try await withDeadline(60) {
            var configuration = EventLoop.Configuration()
            configuration.receiveBufferCount = 8
            configuration.receiveBufferSize = 4_096
            let group = EventLoopGroup(loopCount: 1, configuration: configuration)
            let loop = group.next()
            let slowMayRead = Mailbox<Bool>()
            let slowReceived = Mailbox<[UInt8]>()
            let bulk = patternBytes(count: 512 << 10, seed: 99)
            try await withTaskExecutorPreference(loop) {
                let server = try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
                    guard let role = try? await reader.readExactly(1) else { return }
                    if role == "S" {
                        // Holds everything the kernel hands it until the fast connection is done.
                        _ = await slowMayRead.receive()
                        let all = (try? await reader.read()) ?? Bytes()
                        slowReceived.send(Array(all))
                        writer.close()
                    } else {
                        await echoChunksUntilEOF(reader, writer)
                    }
                }
                let port = try #require(server.addresses.first).port
                let (_, slowWriter) = try await openConnection(host: "127.0.0.1", port: port)
                slowWriter.write(Array("S".utf8))
                let sender = Task { try await sendAll(bulk, through: slowWriter) }

                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                writer.write(Array("F".utf8))
                for i in 0..<200 {
                    let message = patternBytes(count: 1_000 + i, seed: UInt32(i))
                    writer.write(message)
                    try await writer.drain()
                    let echoed = try await reader.readExactly(message.count)
                    #expect(echoed == message)
                }
                writer.close()

                slowMayRead.send(true)
                try await sender.value
                slowWriter.close()
                let received = await slowReceived.receive()
                #expect(received == bulk)
                server.close()
                await server.waitClosed()
            }
            try await group.shutdown()
        }
    }

    @Test func receivedBytesOutliveTheirConnectionAndLoop() async throws {
        try await withDeadline(30) {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let payload = patternBytes(count: 300_000, seed: 3)
            let kept = try await withTaskExecutorPreference(loop) { () async throws -> [Bytes] in
                let server = try await startServer(host: "127.0.0.1", port: 0) { _, writer in
                    writer.write(payload)
                    try? await writer.drain()
                    writer.close()
                }
                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                var chunks: [Bytes] = []
                while case let chunk = try await reader.read(65_536), !chunk.isEmpty { chunks.append(chunk) }
                writer.close()
                try await writer.waitClosed()
                server.close()
                await server.waitClosed()
                return chunks
            }
            try await group.shutdown()
            // The buffers these point into belonged to a loop that no longer runs.
            #expect(kept.flatMap { Array($0) } == payload)
        }
    }

    enum Peer: String, CaseIterable, Sendable { case tcp, unix }

    @Test(arguments: Peer.allCases)
    func zeroCopySendsKeepDataIntactAndFallBackWhereUnsupported(peer: Peer) async throws {
        try await withDeadline(60) {
            var configuration = EventLoop.Configuration()
            configuration.zeroCopySendThreshold = 16_384
            configuration.zeroCopyLocalSends = true
            let group = EventLoopGroup(loopCount: 1, configuration: configuration)
            let loop = group.next()
            let directory = try TemporaryDirectory()
            let payload = patternBytes(count: 1 << 20, seed: 5)
            let stats = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                let server: Server
                let (reader, writer): (StreamReader, StreamWriter)
                if peer == .unix {
                    server = try await startUnixServer(
                        path: directory.file("zc.sock"), clientConnected: echoChunksUntilEOF)
                    (reader, writer) = try await openUnixConnection(path: directory.file("zc.sock"))
                } else {
                    server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: echoChunksUntilEOF)
                    (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                }
                async let sending: Void = sendAll(payload, through: writer, chunkSize: 256 * 1024)
                let echoed = try await reader.readExactly(payload.count)
                try await sending
                #expect(Array(echoed) == payload)
                writer.close()
                try await writer.waitClosed()
                server.close()
                await server.waitClosed()
                try await loop.sleep(for: .milliseconds(1))
                return loop.statistics
            }
            if stats.backend == .epoll {
                // The epoll backend has no zero-copy sends: everything went plainly, intact.
                #expect(stats.zeroCopySends == 0)
            } else {
                #expect(stats.backend == .ioUring)
                #expect(stats.zeroCopySends > 0)
            }
            if peer == .unix, stats.backend == .ioUring {
                // AF_UNIX refuses SENDMSG_ZC (EOPNOTSUPP): the first try falls back, later sends
                // on that connection go plainly.
                #expect(stats.zeroCopyFallbacks > 0)
            }
            try await group.shutdown()
        }
    }

    @Test func loopbackSendsSkipZeroCopyByDefault() async throws {
        try await withDeadline(30) {
            let group = EventLoopGroup(loopCount: 1, configuration: EventLoop.Configuration())
            let loop = group.next()
            let stats = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                let server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: echoChunksUntilEOF)
                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                let payload = patternBytes(count: 1 << 20)
                async let sending: Void = sendAll(payload, through: writer, chunkSize: 256 * 1024)
                let echoed = try await reader.readExactly(payload.count)
                try await sending
                #expect(Array(echoed) == payload)
                writer.close()
                server.close()
                await server.waitClosed()
                try await loop.sleep(for: .milliseconds(1))
                return loop.statistics
            }
            // The kernel would copy loopback data anyway; a notification per send is pure cost.
            #expect(stats.zeroCopySends == 0)
            try await group.shutdown()
        }
    }
}
