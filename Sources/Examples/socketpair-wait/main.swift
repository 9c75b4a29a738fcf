// The "Register an open socket to wait for data using streams" example of the
// Python asyncio streams documentation. Prints, like the original:
//
//     Received: abc
import ArgumentParser
import UringStreams

#if canImport(Glibc)
    import Glibc
#endif

struct SocketpairWaitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socketpair-wait",
        abstract: "Wait for data on one end of a socket pair through a StreamReader.")

    func run() async throws {
        // Create a pair of connected sockets.
        var sockets: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sockets) == 0 else {
            throw SystemCallFailure(operation: "socketpair", errno: errno)
        }
        let (rsock, wsock) = (sockets[0], sockets[1])
        defer { close(wsock) }

        // Register the open socket to wait for data.
        let (reader, writer) = try await openConnection(fileDescriptor: rsock)

        // Simulate the reception of data from the network. The original
        // schedules the send with loop.call_soon; here another task sends,
        // so the read may well be waiting when the bytes arrive.
        let sender = Task {
            let sent = Array("abc".utf8).withUnsafeBytes { send(wsock, $0.baseAddress, $0.count, 0) }
            if sent != 3 {
                // Wakes the read below, which would otherwise wait forever.
                reader.setException(SystemCallFailure(operation: "send", errno: sent < 0 ? errno : EIO))
            }
        }

        // Wait for data
        let data = try await reader.read(100)
        await sender.value

        // Got data, we are done: close the socket
        print("Received:", String(decoding: data, as: UTF8.self))
        writer.close()
        try await writer.waitClosed()
    }
}

struct SystemCallFailure: Error, CustomStringConvertible {
    var operation: String
    var errno: Int32
    var description: String { "\(operation) failed: \(String(cString: strerror(errno)))" }
}

// Top-level code resolves `SocketpairWaitCommand.main()` to ParsableCommand's synchronous
// main, which refuses an async command; a generic context picks the async one.
func runAsync<Command: AsyncParsableCommand>(_: Command.Type) async { await Command.main() }
await runAsync(SocketpairWaitCommand.self)
