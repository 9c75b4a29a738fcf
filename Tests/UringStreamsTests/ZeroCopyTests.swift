import Testing
import UringStreams

/// The data path copies nothing in the common case: what a server reads points into the loop's
/// receive buffers, and writing those `Bytes` back sends from the same memory.
@Suite(.timeLimit(.minutes(1)))
struct ZeroCopyTests {
    @Test func echoingOneThousandMessagesCopiesNothingOnTheServer() async throws {
        try await withDeadline(30) {
            let serverGroup = EventLoopGroup(loopCount: 1)
            let server = try await startServer(host: "127.0.0.1", port: 0, on: serverGroup) { reader, writer in
                while let data = try? await reader.read(65_536), !data.isEmpty {
                    writer.write(data)
                    try? await writer.drain()
                }
                writer.close()
            }
            let port = try #require(server.addresses.first).port
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
            var total = 0
            for i in 0..<1_000 {
                let size = 1_024 + (i * 3_079) % 3_073  // 1 KiB to 4 KiB, varied
                let message = patternBytes(count: size, seed: UInt32(i + 1))
                writer.write(message)
                try await writer.drain()
                let echoed = try await reader.readExactly(size)
                #expect(echoed == message)
                total += size
            }
            writer.close()
            let loop = serverGroup.next()
            let stats = try await withTaskExecutorPreference(loop) { () async throws -> EventLoop.Statistics in
                try await loop.sleep(for: .milliseconds(1))
                return loop.statistics
            }
            #expect(stats.bytesReceived >= total)
            #expect(stats.bytesSent >= total)
            #expect(stats.bytesCopiedOnReceive == 0)
            #expect(stats.bytesCopiedOnSend == 0)
            server.close()
            server.closeClients()
            await server.waitClosed()
            try await serverGroup.shutdown()
        }
    }
}
