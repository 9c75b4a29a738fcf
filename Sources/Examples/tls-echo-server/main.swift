import ArgumentParser
import Dispatch
import Glibc
import UringStreams

/// An echo server over TLS, for trying TLS by hand and for throughput comparisons:
/// asyncio's `start_server(..., ssl=context)` with
/// `while data := await reader.read(65536): writer.write(data); await writer.drain()`.
/// Prints `listening on PORT` once it accepts.
///
/// Try it with `openssl s_client -connect 127.0.0.1:PORT -CAfile ca.pem -servername localhost`.
@main
struct TLSEchoServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls-echo-server", abstract: "A UringStreams echo server over TLS.")

    @Option(help: "The server's certificate chain (PEM).") var certificate: String
    @Option(help: "Its private key (PEM).") var key: String
    @Option(help: "Require client certificates signed by the CAs in this PEM file.") var clientCA: String?
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port; 0 picks a free one.") var port = 0
    @Option(help: "Event loops (threads) connections are spread over.") var loops = 1

    func run() async throws {
        let tls = TLSConfiguration.server(
            certificateFile: certificate, privateKeyFile: key, clientTrustRoots: clientCA.map { .file($0) })
        let group = EventLoopGroup(loopCount: loops)
        let server = try await startServer(host: host, port: port, tls: tls, on: group) { reader, writer in
            do {
                while true {
                    let data = try await reader.read(65_536)
                    if data.isEmpty { break }
                    writer.write(data)
                    try await writer.drain()
                }
            } catch {
                // A peer that resets or breaks the protocol ends its connection only.
            }
            writer.close()
        }
        print("listening on \(server.addresses.first?.port ?? 0)")
        fflush(nil)
        let signalSources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { server.close() }
            source.resume()
            return source
        }
        try? await server.serveForever()
        signalSources.forEach { $0.cancel() }
    }
}
