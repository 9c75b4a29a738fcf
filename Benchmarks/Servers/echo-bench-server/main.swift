import ArgumentParser
import Dispatch
import Glibc
import UringStreams

/// The echo server the benchmark harness measures: asyncio's
/// `while data := await reader.read(65536): writer.write(data); await writer.drain()`,
/// printing nothing per message. Prints `listening on PORT` once it accepts.
/// With `--tls-cert` and `--tls-key` the same handler serves TLS (asyncio's
/// `start_server(..., ssl=context)`), so the TLS scenarios differ from the plain ones only by TLS.
/// `--api protocol` serves with a protocol object instead (asyncio's `create_server` echo
/// protocol, flow-controlled: it pauses reading while the transport asks it to pause writing).
/// `--backend epoll` forces the epoll fallback (the `uringstreams-epoll` row of the comparison).
extension EventLoop.Backend: @retroactive ExpressibleByArgument {}

@main
struct EchoBenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-bench-server", abstract: "A quiet UringStreams echo server for benchmarks.")

    enum API: String, ExpressibleByArgument, CaseIterable {
        case streams, `protocol`
    }

    @Option(help: "The API the echo uses: streams (startServer) or protocol (createServer).")
    var api = API.streams
    @Option(help: "The I/O backend: automatic (io_uring where allowed), io_uring or epoll.")
    var backend = EventLoop.Backend.automatic
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port; 0 picks a free one.") var port = 0
    @Option(help: "Event loops (threads) connections are spread over.") var loops = 1
    @Flag(help: "One listening socket per loop (SO_REUSEPORT): the kernel spreads connections.")
    var reusePort = false
    @Option(help: "The readers' limit (asyncio's default 64 KiB).") var limit = 65_536
    @Option(help: "Bytes each read asks for (asyncio's echo example: 65536).") var readSize = 65_536
    @Option(help: "Write-buffer high-water mark; nil keeps asyncio's 64 KiB.") var writeHigh: Int?
    @Option(help: "Serve TLS with this certificate chain (PEM); needs --tls-key.") var tlsCert: String?
    @Option(help: "The TLS private key (PEM); needs --tls-cert.") var tlsKey: String?

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
    }

    func run() async throws {
        var configuration = EventLoop.Configuration()
        configuration.backend = backend
        let group = EventLoopGroup(loopCount: loops, configuration: configuration)
        let (readSize, writeHigh) = (readSize, writeHigh)
        var tls: TLSConfiguration?
        if let tlsCert, let tlsKey {
            tls = .server(certificateFile: tlsCert, privateKeyFile: tlsKey)
        }
        let server: Server
        switch api {
        case .streams:
            server = try await startServer(
                host: host, port: port, limit: limit, tls: tls, reusePort: reusePort, on: group
            ) {
                reader, writer in
                if let writeHigh { writer.transport.setWriteBufferLimits(high: writeHigh) }
                do {
                    while true {
                        let data = try await reader.read(readSize)
                        if data.isEmpty { break }
                        writer.write(data)
                        try await writer.drain()
                    }
                } catch {
                    // A peer that resets ends its connection; the server keeps serving.
                }
                writer.close()
            }
        case .protocol:
            server = try await createServer(host: host, port: port, tls: tls, reusePort: reusePort, on: group) {
                EchoProtocol(writeHigh: writeHigh)
            }
        }
        print("listening on \(server.addresses.first?.port ?? 0)")
        fflush(nil)
        let signalSources = stopOnSignals(server)
        try? await server.serveForever()
        signalSources.forEach { $0.cancel() }
        // The harness reads these to relate requests to system calls and completions.
        let stats = group.statistics
        let line =
            "{\"submissions\":\(stats.submissions),\"enterCalls\":\(stats.enterCalls),"
            + "\"completions\":\(stats.completions),\"bytesReceived\":\(stats.bytesReceived),"
            + "\"bytesSent\":\(stats.bytesSent),\"bytesCopiedOnReceive\":\(stats.bytesCopiedOnReceive),"
            + "\"bytesCopiedOnSend\":\(stats.bytesCopiedOnSend),\"bufferExhaustions\":\(stats.bufferExhaustions),"
            + "\"receiveRearms\":\(stats.receiveRearms),\"zeroCopySends\":\(stats.zeroCopySends),"
            + "\"zeroCopyFallbacks\":\(stats.zeroCopyFallbacks)}\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}

/// Closes `server` on SIGINT or SIGTERM, so `serveForever()` returns and the process exits 0.
private func stopOnSignals(_ server: Server) -> [any DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { server.close() }
        source.resume()
        return source
    }
}

/// Echoes what arrives; while the transport holds more than its high-water mark it stops reading
/// (the flow control asyncio's echo protocols do by hand).
private final class EchoProtocol: StreamProtocol {
    private let writeHigh: Int?
    private var transport: (any Transport)?

    init(writeHigh: Int?) { self.writeHigh = writeHigh }

    func connectionMade(_ transport: any Transport) {
        if let writeHigh { transport.setWriteBufferLimits(high: writeHigh) }
        self.transport = transport
    }

    func dataReceived(_ data: Bytes) { transport?.write(data) }
    func pauseWriting() { transport?.pauseReading() }
    func resumeWriting() { transport?.resumeReading() }
    func connectionLost(_ error: (any Error)?) { transport = nil }
}
