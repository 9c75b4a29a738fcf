import Glibc
import Testing
@_spi(UringInternals) import UringRuntime
import UringStreams

/// Flow control holds memory bounded whatever the peer does (the spec's robustness rules): a peer
/// that sends without waiting for the echo, many tiny chunks, huge limits and water marks.
@Suite(.timeLimit(.minutes(2)))
struct FlowControlTests {
    /// asyncio's echo (`read(65536)`, `write`, `drain()`) against a client whose writes never wait
    /// for the echo: what the server holds (received and not yet sent) stays within the reader's
    /// 2 × limit, the write high-water mark and what the kernel had in flight, and everything
    /// taken in is echoed back intact.
    @Test func aClientThatSendsWithoutReadingKeepsTheServerBounded() async throws {
        try await withDeadline(90) {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let server = try await withTaskExecutorPreference(loop) {
                try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
                    do {
                        while true {
                            let data = try await reader.read(65_536)
                            if data.isEmpty { break }
                            writer.write(data)
                            try await writer.drain()
                        }
                    } catch {}
                    writer.close()
                }
            }
            let port = try #require(server.addresses.first).port
            let start = ContinuousClock.now
            let flooding = Locked(true)
            async let outcome = onThread {
                try FloodPeer.run(port: port) { flooding.value }
            }
            var mostHeld = 0
            while ContinuousClock.now - start < .seconds(3) {
                let stats = loop.statistics
                mostHeld = max(mostHeld, stats.bytesReceived - stats.bytesSent)
                try await Task.sleep(for: .milliseconds(10))
            }
            flooding.set(false)
            let result = try await outcome
            #expect(result.sent > 8 << 20, "the flood sent only \(result.sent) bytes")
            #expect(result.intact)
            #expect(result.echoed == result.sent, "echoed \(result.echoed) of \(result.sent) bytes")
            // 2 × limit in the reader, the 64 KiB high-water mark plus one read in the writer, and
            // what one capped receive takes after reading paused: about 450 KiB measured. Kernels
            // before 6.17 cannot cap a multishot receive and may hand over a whole socket buffer.
            let bound = (4 << 20) + (KernelVersion.current < KernelVersion(6, 17) ? socketReceiveBufferMaximum : 0)
            #expect(mostHeld < bound, "the server held \(mostHeld) bytes received and not sent")
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }
}
