import Benchmark
import Synchronization
import UringStreams

/// Loopback echo through an UringStreams server on its own loop, with the client on a second
/// loop: round trips, bulk transfer and connection churn. The connection is made before the
/// measurement starts, so `mallocCountTotal` shows what the messages themselves cost (nothing).
let benchmarks: @Sendable () -> Void = {
    // `swift package benchmark thresholds check` fails on a regression past these tolerances
    // against Thresholds/: allocations must stay put (a cost per message would add thousands);
    // time is noisy on shared machines, so only large slowdowns count.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .syscalls, .contextSwitches],
        maxDuration: .seconds(3), maxIterations: 1_000,
        thresholds: [
            .mallocCountTotal: .init(absolute: [.p50: 10, .p90: 20]),
            .wallClock: .init(relative: [.p50: 50.0]),
        ])

    // The same round trips against the protocol API's echo server (createServer): its side of
    // each message must cost nothing either.
    for (prefix, api) in [("", EchoFixture.API.streams), ("protocol-", .protocol)] {
        for count in [1_000, 10_000] {
            Benchmark("\(prefix)echo-64B-x\(count)") { benchmark in
                let echo = try await EchoFixture.shared(api)
                let message = Bytes([UInt8](repeating: 7, count: 64))
                benchmark.startMeasurement()
                try await withTaskExecutorPreference(echo.clientLoop) {
                    for _ in 0..<count {
                        echo.writer.write(message)
                        try await echo.writer.drain()
                        blackHole(try await echo.reader.readExactly(64))
                    }
                }
                benchmark.stopMeasurement()
            }
        }
    }

    Benchmark("bulk-1MiB-roundTrip") { benchmark in
        let echo = try await EchoFixture.shared()
        let chunk = Bytes([UInt8](repeating: 1, count: 64 * 1024))
        benchmark.startMeasurement()
        try await withTaskExecutorPreference(echo.clientLoop) {
            async let sent: Void = {
                for _ in 0..<16 {
                    echo.writer.write(chunk)
                    try await echo.writer.drain()
                }
            }()
            blackHole(try await echo.reader.readExactly(1 << 20))
            try await sent
        }
        benchmark.stopMeasurement()
    }

    Benchmark("connectAndClose-x10") { benchmark in
        let echo = try await EchoFixture.shared()
        benchmark.startMeasurement()
        try await withTaskExecutorPreference(echo.clientLoop) {
            for _ in 0..<10 {
                let (_, writer) = try await openConnection(host: "127.0.0.1", port: echo.port)
                writer.close()
                try await writer.waitClosed()
            }
        }
        benchmark.stopMeasurement()
    }
}

/// An echo server and one client connection, made on first use and kept for every sample.
final class EchoFixture: Sendable {
    /// Which API the server echoes with.
    enum API: Sendable, Hashable { case streams, `protocol` }

    let serverGroup = EventLoopGroup(loopCount: 1)
    let clientGroup = EventLoopGroup(loopCount: 1)
    let server: Server
    let port: Int
    let reader: StreamReader
    let writer: StreamWriter
    var clientLoop: EventLoop { clientGroup.next() }

    private static let instances = Mutex<[API: EchoFixture]>([:])

    static func shared(_ api: API = .streams) async throws -> EchoFixture {
        if let made = instances.withLock({ $0[api] }) { return made }
        let made = try await EchoFixture(api)
        instances.withLock { $0[api] = made }
        return made
    }

    private init(_ api: API) async throws {
        switch api {
        case .streams:
            server = try await startServer(host: "127.0.0.1", port: 0, on: serverGroup) { reader, writer in
                // asyncio's echo handler.
                while let data = try? await reader.read(65_536), !data.isEmpty {
                    writer.write(data)
                    try? await writer.drain()
                }
                writer.close()
            }
        case .protocol:
            server = try await createServer(host: "127.0.0.1", port: 0, on: serverGroup) { EchoProtocol() }
        }
        port = server.addresses.first?.port ?? 0
        let loop = clientGroup.next()
        let port = self.port
        (reader, writer) = try await withTaskExecutorPreference(loop) {
            try await openConnection(host: "127.0.0.1", port: port)
        }
    }
}

/// asyncio's echo protocol: writes back what arrives.
private final class EchoProtocol: StreamProtocol {
    private var transport: (any Transport)?
    func connectionMade(_ transport: any Transport) { self.transport = transport }
    func dataReceived(_ data: Bytes) { transport?.write(data) }
}
