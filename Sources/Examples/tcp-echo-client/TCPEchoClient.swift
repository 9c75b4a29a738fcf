import PythonRepr
import UringStreams

/// asyncio's `tcp_echo_client(message)` from the streams documentation,
/// line for line: connect, send, read up to 100 bytes back, close.
func tcpEchoClient(host: String, port: Int, message: String) async throws {
    let (reader, writer) = try await openConnection(host: host, port: port)

    print("Send: \(pythonRepr(message))")
    writer.write(message)
    try await writer.drain()

    let data = try await reader.read(100)
    print("Received: \(pythonRepr(String(decoding: data, as: UTF8.self)))")

    print("Close the connection")
    writer.close()
    try await writer.waitClosed()
}
