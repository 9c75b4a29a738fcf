// The "TCP echo server using streams" example of the Python asyncio streams
// documentation. Its output matches the Python original line for line:
//
//     Serving on ('127.0.0.1', 8888)
//     Received 'Hello World!' from ('127.0.0.1', 54321)
//     Send: 'Hello World!'
//     Close the connection
//
// Unlike the Python original, which dies with a KeyboardInterrupt traceback,
// SIGINT and SIGTERM close the server and the process exits with status 0.
import ArgumentParser
import Dispatch
import PythonRepr
import UringStreams

#if canImport(Glibc)
    // Glibc's `stdout` is a mutable C global; we only hand it to setvbuf
    // once, before any other thread prints.
    @preconcurrency import Glibc
#endif

struct TCPEchoServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcp-echo-server",
        abstract: "Serve TCP echo until SIGINT or SIGTERM.",
        discussion: "Port 0 binds a free port; the 'Serving on' line tells which.")

    @Argument(help: "The address to bind; an empty string binds every interface.")
    var host = "127.0.0.1"

    @Argument(help: "The port to bind.")
    var port = 8888

    func run() async throws {
        // A reader on a pipe (a test, a supervisor) must see each line as
        // it is printed, not when a block buffer fills.
        setvbuf(stdout, nil, _IOLBF, 0)

        let server = try await startServer(host: host.isEmpty ? nil : host, port: port) { reader, writer in
            await handleEcho(reader: reader, writer: writer)
        }

        let addrs = server.addresses.map(pythonSocketName).joined(separator: ", ")
        print("Serving on \(addrs)")

        let signalSources = closeOnSignals([SIGINT, SIGTERM], server: server)
        try await server.withServing {
            try await server.serveForever()
        }
        for source in signalSources { source.cancel() }
    }
}

/// asyncio's `handle_echo(reader, writer)`: read up to 100 bytes, echo them, close.
@Sendable func handleEcho(reader: StreamReader, writer: StreamWriter) async {
    do {
        let data = try await reader.read(100)
        let message = String(decoding: data, as: UTF8.self)
        let addr = writer.peerAddress.map(pythonSocketName) ?? "None"

        print("Received \(pythonRepr(message)) from \(addr)")

        print("Send: \(pythonRepr(message))")
        writer.write(data)
        try await writer.drain()

        print("Close the connection")
        writer.close()
        try await writer.waitClosed()
    } catch {
        // asyncio logs a failing client_connected_cb and keeps serving.
        writer.close()
        printToStandardError("Unhandled exception in client_connected_cb: \(error)")
    }
}

/// Python's `str()` of what `socket.getsockname()` returns for the address.
func pythonSocketName(_ address: SocketAddress) -> String {
    switch address.family {
    case .inet6:
        // (host, port, flowinfo, scope_id); the flow label is never set here.
        return "(\(pythonRepr(address.host)), \(address.port), 0, \(address.scopeID))"
    case .unix:
        return pythonRepr(address.path ?? "")
    default:
        return "(\(pythonRepr(address.host)), \(address.port))"
    }
}

/// Turns each signal into `server.close()`, which makes `serveForever()`
/// return, and `closeClients()`, without which the wait for connections to
/// end would last as long as the idlest client stays connected. The caller
/// keeps the sources alive while serving.
func closeOnSignals(_ signals: [Int32], server: Server) -> [any DispatchSourceSignal] {
    signals.map { signalNumber in
        // The default action would kill the process before the source runs.
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler {
            server.close()
            server.closeClients()
        }
        source.resume()
        return source
    }
}

func printToStandardError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in
        _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count)
    }
}

// Top-level code resolves `TCPEchoServerCommand.main()` to ParsableCommand's synchronous
// main, which refuses an async command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(TCPEchoServerCommand.self)
