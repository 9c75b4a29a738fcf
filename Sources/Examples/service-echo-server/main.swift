// tcp-echo-server's asyncio echo server, run the Swift server way: the server is a Service in a
// ServiceGroup (swift-service-lifecycle), whose graceful shutdown on SIGTERM or SIGINT stops
// accepting, closes every client, aborts what is left after a grace period, and returns once
// every handler has. The output matches the Python original line for line:
//
//     Serving on ('127.0.0.1', 8888)
//     Received 'Hello World!' from ('127.0.0.1', 54321)
//     Send: 'Hello World!'
//     Close the connection
//
// Runtime events (failed accepts, failed TLS handshakes, a rejected URINGSTREAMS_* value) and
// the service group's own go to standard error through one swift-log logger.
import ArgumentParser
import Logging
import PythonRepr
import ServiceLifecycle
import UringStreams
import UringStreamsServiceLifecycle

#if canImport(Glibc)
    // Glibc's `stdout` is a mutable C global; we only hand it to setvbuf once, before any other
    // thread prints.
    @preconcurrency import Glibc
#endif

struct ServiceEchoServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service-echo-server",
        abstract: "Serve TCP echo as a ServiceLifecycle service until SIGTERM or SIGINT.",
        discussion: "Port 0 binds a free port; the 'Serving on' line tells which.")

    @Argument(help: "The address to bind; an empty string binds every interface.")
    var host = "127.0.0.1"

    @Argument(help: "The port to bind.")
    var port = 8888

    @Option(help: "Seconds a graceful shutdown lets clients finish before aborting them.")
    var gracePeriod = 5.0

    @Option(help: "The lowest log level written to standard error (trace ... critical).")
    var logLevel = "notice"

    func run() async throws {
        // A reader on a pipe (a test, a supervisor) must see each line as it is printed.
        setvbuf(stdout, nil, _IOLBF, 0)
        let logger = {
            var logger = Logger(label: "service-echo-server") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .notice
            return logger
        }()

        // A group of its own with the logger, not the shared group (whose logger is disabled):
        // what the loops say goes to standard error too, the once-per-process notice that
        // io_uring is blocked and epoll stands in, and a rejected URINGSTREAMS_* value among it.
        let group = EventLoopGroup(loopCount: EventLoopGroup.defaultLoopCount, logger: logger)

        // startServing: false: accepting starts in the service's run(), so every handler is a
        // child task of the service and its shutdown reaches them.
        let server = try await startServer(
            host: host.isEmpty ? nil : host, port: port, startServing: false, logger: logger, on: group
        ) { reader, writer in
            await echoOnce(reader: reader, writer: writer, logger: logger)
        }
        print("Serving on \(server.addresses.map(pythonSocketName).joined(separator: ", "))")

        let service = ServerService(server: server, gracePeriod: .milliseconds(Int(gracePeriod * 1000)))
        let serviceGroup = ServiceGroup(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await serviceGroup.run()
        try await group.shutdown()
    }
}

/// asyncio's `handle_echo(reader, writer)`: read up to 100 bytes, echo them, close.
func echoOnce(reader: StreamReader, writer: StreamWriter, logger: Logger) async {
    do {
        let data = try await reader.read(100)
        let message = pythonRepr(String(decoding: data, as: UTF8.self))
        print("Received \(message) from \(writer.peerAddress.map(pythonSocketName) ?? "None")")
        print("Send: \(message)")
        writer.write(data)
        try await writer.drain()
        print("Close the connection")
        writer.close()
        try await writer.waitClosed()
    } catch {
        // asyncio logs a failing client_connected_cb and keeps serving.
        writer.close()
        logger.error("Unhandled exception in client_connected_cb", metadata: ["error": "\(error)"])
    }
}

/// Python's `str()` of what `socket.getsockname()` returns for the address.
func pythonSocketName(_ address: SocketAddress) -> String {
    switch address.family {
    case .inet6: "(\(pythonRepr(address.host)), \(address.port), 0, \(address.scopeID))"
    case .unix: pythonRepr(address.path ?? "")
    default: "(\(pythonRepr(address.host)), \(address.port))"
    }
}

// Top-level code resolves `main()` to ParsableCommand's synchronous main, which refuses an async
// command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(ServiceEchoServerCommand.self)
