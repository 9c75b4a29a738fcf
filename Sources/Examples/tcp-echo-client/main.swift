// The "TCP echo client using streams" example of the Python asyncio streams
// documentation. Its output matches the Python original line for line:
//
//     Send: 'Hello World!'
//     Received: 'Hello World!'
//     Close the connection
import ArgumentParser

struct TCPEchoClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcp-echo-client",
        abstract: "Send a message to a TCP echo server and print what comes back.")

    @Argument(help: "The server's host name or address.")
    var host = "127.0.0.1"

    @Argument(help: "The server's port.")
    var port = 8888

    @Argument(help: "The message to send.")
    var message = "Hello World!"

    func run() async throws {
        try await tcpEchoClient(host: host, port: port, message: message)
    }
}

// Top-level code resolves `TCPEchoClientCommand.main()` to ParsableCommand's synchronous
// main, which refuses an async command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(TCPEchoClientCommand.self)
