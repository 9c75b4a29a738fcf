// Starts a UringStreams echo server in this process on 127.0.0.1 (a free
// port), checks one round trip against it, then measures ping-pong echo: each
// connection keeps one message in flight, checks every echo byte for byte, and
// records its round-trip time in an HdrHistogram.
import ArgumentParser
import Histogram
import UringStreams

#if canImport(Glibc)
    import Glibc
#endif

struct LoopbackBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loopback-bench",
        abstract: "Echo over loopback with UringStreams: one verified round trip, then requests/s and latency.")

    @Option(help: ArgumentHelp("Connections in one load run; repeat the option for several runs.", valueName: "count"))
    var connections: [Int] = [1, 16]

    @Option(help: ArgumentHelp("Bytes in each message.", valueName: "bytes"))
    var size = 64

    @Option(help: ArgumentHelp("Seconds each load run is measured.", valueName: "seconds"))
    var duration = 5.0

    @Option(help: ArgumentHelp("Seconds of traffic before each measurement, not counted.", valueName: "seconds"))
    var warmup = 0.5

    func validate() throws {
        guard !connections.isEmpty, connections.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--connections must be at least 1")
        }
        guard size >= 1 else { throw ValidationError("--size must be at least 1") }
        guard duration > 0, duration.isFinite else { throw ValidationError("--duration must be positive") }
        guard warmup >= 0, warmup.isFinite else { throw ValidationError("--warmup must not be negative") }
    }

    func run() async throws {
        let server = try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
            await echoUntilEndOfStream(reader: reader, writer: writer)
        }
        guard let address = server.addresses.first else {
            throw BenchFailure("the echo server reports no address")
        }

        print("Echo round trip with the in-process server on \(address.host) port \(address.port):")
        try await checkRoundTrip(host: address.host, port: address.port, message: "Hello World!")

        print()
        print("Ping-pong echo: \(size)-byte messages, one in flight per connection, every echo verified;")
        let warmupText = formatted(warmup, decimals: 1)
        print("each run: \(warmupText) s warm-up, then \(formatted(duration, decimals: 1)) s measured.")
        print()
        print(LoadResult.tableHeader)
        for connectionCount in connections {
            let result = try await runLoad(
                host: address.host, port: address.port, connections: connectionCount,
                size: size, warmup: warmup, duration: duration)
            print(result.tableRow)
        }

        server.close()
        await server.waitClosed()
    }
}

/// One message there and back, as the tcp-echo-client example does it.
func checkRoundTrip(host: String, port: Int, message: String) async throws {
    let (reader, writer) = try await openConnection(host: host, port: port)
    writer.write(message)
    try await writer.drain()
    let echoed = String(decoding: try await reader.readExactly(message.utf8.count), as: UTF8.self)
    guard echoed == message else { throw BenchFailure("the echo of \(message) came back as \(echoed)") }
    print("Sent and received: \(message)")
    writer.close()
    try await writer.waitClosed()
}

/// Round-trip times in nanoseconds, to three significant digits (HdrHistogram: recording is an
/// array increment, so the measuring loop allocates nothing however long it runs), up to a minute.
typealias LatencyHistogram = Histogram<UInt64>

func makeLatencyHistogram() -> LatencyHistogram {
    Histogram(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
}

/// The server side: echo whatever arrives until the client closes.
@Sendable func echoUntilEndOfStream(reader: StreamReader, writer: StreamWriter) async {
    do {
        while true {
            let data = try await reader.read(65_536)
            if data.isEmpty {
                break
            }
            writer.write(data)
            try await writer.drain()
        }
        writer.close()
        try await writer.waitClosed()
    } catch {
        // The client side checks every echo and reports what went wrong;
        // here the connection only has to go away.
        writer.close()
    }
}

struct LoadResult {
    var connections: Int
    var seconds: Double
    var latencies = makeLatencyHistogram()
    var enterCallsPerRequest: Double = 0

    static let tableHeader = [
        "connections", "requests", "requests/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "enters/req",
    ].map { rightAligned($0, width: 12) }.joined()

    var tableRow: String {
        let microseconds = { (nanoseconds: UInt64) in formatted(Double(nanoseconds) / 1_000, decimals: 1) }
        return [
            "\(connections)",
            "\(latencies.totalCount)",
            formatted(Double(latencies.totalCount) / seconds, decimals: 0),
            microseconds(latencies.valueAtPercentile(50)),
            microseconds(latencies.valueAtPercentile(99)),
            microseconds(latencies.valueAtPercentile(99.9)),
            microseconds(latencies.max),
            formatted(enterCallsPerRequest, decimals: 2),
        ].map { rightAligned($0, width: 12) }.joined()
    }
}

/// One load run. All connections share one measuring window, fixed up front,
/// so that connecting and warming up happen before it opens.
func runLoad(host: String, port: Int, connections: Int, size: Int, warmup: Double, duration: Double)
    async throws -> LoadResult
{
    let group = EventLoopGroup.shared
    let measureStart = monotonicNanoseconds() + UInt64(warmup * 1e9)
    let window = PingPongWindow(start: measureStart, end: measureStart + UInt64(duration * 1e9))

    var result = LoadResult(connections: connections, seconds: duration)
    var enterCallsAtStart = 0.0
    try await withThrowingTaskGroup(of: LatencyHistogram.self) { tasks in
        for connection in 0..<connections {
            // Client tasks run on the loops themselves, as a real
            // UringStreams program would, so no thread hop sits in the timing.
            tasks.addTask(executorPreference: group.next()) {
                try await pingPong(host: host, port: port, size: size, connection: connection, window: window)
            }
        }
        await sleepUntil(monotonicNanoseconds: measureStart)
        enterCallsAtStart = Double(group.statistics.enterCalls)
        for try await latencies in tasks {
            result.latencies.add(latencies)
        }
    }
    let enterCalls = Double(group.statistics.enterCalls) - enterCallsAtStart
    result.enterCallsPerRequest = result.latencies.totalCount > 0 ? enterCalls / Double(result.latencies.totalCount) : 0
    return result
}

struct PingPongWindow: Sendable {
    var start: UInt64
    var end: UInt64
}

/// One connection: send a message, wait for its echo, check it, repeat until the window closes.
func pingPong(host: String, port: Int, size: Int, connection: Int, window: PingPongWindow)
    async throws -> LatencyHistogram
{
    let (reader, writer) = try await openConnection(host: host, port: port)
    // A pattern of its own per connection, and a sequence number in each
    // message, so an echo from the wrong connection or an old message fails.
    var message = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ connection) }
    var latencies = makeLatencyHistogram()
    var sequence: UInt64 = 0

    while true {
        let start = monotonicNanoseconds()
        if start >= window.end {
            break
        }
        sequence &+= 1
        message.withUnsafeMutableBytes { bytes in
            withUnsafeBytes(of: sequence.littleEndian) { stamp in
                bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: stamp.prefix(bytes.count)))
            }
        }

        writer.write(message)
        try await writer.drain()
        let echo = try await reader.readExactly(size)
        let end = monotonicNanoseconds()

        let matches = echo.withUnsafeBytes { echoed in
            message.withUnsafeBytes { sent in
                echoed.count == sent.count && memcmp(echoed.baseAddress!, sent.baseAddress!, sent.count) == 0
            }
        }
        guard matches else {
            throw BenchFailure("connection \(connection): echo of message \(sequence) differs from what was sent")
        }
        if start >= window.start {
            latencies.record(end - start)
        }
    }

    writer.close()
    try await writer.waitClosed()
    return latencies
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func sleepUntil(monotonicNanoseconds deadline: UInt64) async {
    let now = monotonicNanoseconds()
    if deadline > now {
        try? await Task.sleep(for: .nanoseconds(deadline - now))
    }
}

/// `value` with exactly `decimals` digits after the point (no Foundation here for String(format:)).
func formatted(_ value: Double, decimals: Int) -> String {
    let scale = (0..<decimals).reduce(1) { product, _ in product * 10 }
    let scaled = (value * Double(scale)).rounded()
    guard scaled.isFinite, abs(scaled) < 1e15 else {
        return "\(value)"
    }
    let units = Int(scaled)
    let sign = units < 0 ? "-" : ""
    let whole = "\(abs(units) / scale)"
    guard decimals > 0 else {
        return sign + whole
    }
    let fraction = "\(abs(units) % scale)"
    return sign + whole + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
}

func rightAligned(_ text: String, width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}

// Top-level code resolves `LoopbackBenchCommand.main()` to ParsableCommand's synchronous
// main, which refuses an async command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(LoopbackBenchCommand.self)
