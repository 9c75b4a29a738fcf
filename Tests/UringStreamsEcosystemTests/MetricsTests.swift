import MetricsTestKit
import Testing
import UringStreams
import UringStreamsMetrics

/// The metrics bridge reports what the loops counted, with each loop as a dimension.
@Suite(.timeLimit(.minutes(1)))
struct MetricsTests {
    /// Echoing N bytes through a one-loop server shows N bytes received and sent on that loop,
    /// one accepted connection, and after the close none open.
    @Test func echoedBytesAndConnectionsReachTheBackend() async throws {
        try await withTestDeadline {
            let metrics = TestMetrics()
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.loops[0]
            let server = try await startServer(host: "127.0.0.1", port: 0, on: group) { reader, writer in
                while let chunk = try? await reader.read(65_536), !chunk.isEmpty {
                    writer.write(chunk)
                    try? await writer.drain()
                }
                writer.close()
            }
            let reporter = EventLoopMetricsReporter(group: group, interval: .milliseconds(50), factory: metrics)
            let reporting = Task { await reporter.run() }

            // The client lives on the shared group, so the server's loop counts only the server.
            let count = 100_000
            let payload = [UInt8](repeating: 0x61, count: count)
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
            writer.write(payload)
            var echoed = 0
            while echoed < count {
                let chunk = try await reader.read(65_536)
                #expect(!chunk.isEmpty)
                echoed += chunk.count
            }
            writer.close()
            try await writer.waitClosed()
            server.close()
            await server.waitClosed()

            let dimensions = [("loop", "\(loop.id)")]
            // Sampled on the loop every 50 ms: wait for the sample that saw the close.
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline,
                (try? metrics.expectCounter("uringstreams_connections_closed", dimensions).totalValue) != 1
            {
                try await Task.sleep(for: .milliseconds(20))
            }
            reporting.cancel()
            await reporting.value

            #expect(try metrics.expectCounter("uringstreams_bytes_received", dimensions).totalValue == Int64(count))
            #expect(try metrics.expectCounter("uringstreams_bytes_sent", dimensions).totalValue == Int64(count))
            #expect(try metrics.expectCounter("uringstreams_connections_accepted", dimensions).totalValue == 1)
            #expect(try metrics.expectCounter("uringstreams_connections_closed", dimensions).totalValue == 1)
            #expect(try metrics.expectCounter("uringstreams_accept_errors", dimensions).totalValue == 0)
            #expect(try metrics.expectCounter("uringstreams_tls_handshake_failures", dimensions).totalValue == 0)
            #expect(try metrics.expectGauge("uringstreams_open_connections", dimensions).lastValue == 0)
            try await group.shutdown()
        }
    }
}
