internal import Glibc

/// Writing to a stream, as asyncio's `StreamWriter`.
///
/// `write` never blocks and never throws: bytes are queued and sent as one gathered send per loop
/// turn; `drain()` applies the transport's water marks. Synchronous members may be called from any
/// task. A writer that is no longer referenced closes its connection (asyncio `__del__`).
///
/// Corresponds to asyncio `asyncio.StreamWriter`.
public final class StreamWriter: Sendable {
    /// The transport that owns the socket (asyncio `writer.transport`).
    public let transport: StreamTransport
    private let reader: StreamReader?

    init(transport: StreamTransport, reader: StreamReader?) {
        self.transport = transport
        self.reader = reader
    }

    deinit {
        transport.close()
    }

    /// Queues `data` (copied) for sending (asyncio `write`).
    public func write(_ data: some Collection<UInt8>) {
        if let bytes = data as? Bytes {
            transport.write(bytes)
        } else {
            transport.write(copying: data)
        }
    }

    /// Queues `bytes` for sending without copying them (asyncio `write`).
    public func write(_ bytes: Bytes) {
        transport.write(bytes)
    }

    /// Queues the UTF-8 bytes of `string` (asyncio `write(text.encode())`).
    public func write(_ string: String) {
        transport.write(copying: string.utf8)
    }

    /// Queues every chunk; they go out in one gathered send where possible (asyncio `writelines`).
    ///
    /// - Parameter chunks: Byte collections such as `[[UInt8]]`, `[Bytes]` or `[String.UTF8View]`.
    public func writeLines<Chunks: Sequence>(_ chunks: Chunks) where Chunks.Element: Collection<UInt8> {
        for chunk in chunks { write(chunk) }
    }

    /// Waits until the write buffer is below the low-water mark when it is above the high one.
    ///
    /// - Throws: The connection's error; ``StreamError/closed`` after `close()`, or after data was
    ///   dropped because it was written after `close()`/`writeEOF()`.
    ///
    /// Corresponds to asyncio `await writer.drain()`.
    public func drain() async throws {
        if let error = reader?.exception { throw error }
        switch transport.drainStatus {
        case .ready: return
        case .fail(let error): throw error
        case .wait: try await transport.waitForDrain()
        }
    }

    /// Whether ``writeEOF()`` is supported (asyncio `can_write_eof`).
    public var canWriteEOF: Bool { transport.canWriteEOF }

    /// Half-closes the connection once queued bytes are sent (asyncio `write_eof`).
    public func writeEOF() {
        transport.writeEOF()
    }

    /// Closes the connection after sending what is queued (asyncio `close`).
    public func close() {
        transport.close()
    }

    /// Whether the connection is closed or closing (asyncio `is_closing`).
    public var isClosing: Bool { transport.isClosing }

    /// Waits until the connection is closed.
    ///
    /// - Throws: The error the connection failed with, if it failed; `CancellationError`.
    ///
    /// Corresponds to asyncio `await writer.wait_closed()`.
    public func waitClosed() async throws {
        try await transport.waitClosed()
        if let error = transport.connectionError { throw error }
    }

    /// The peer's address, as captured when the connection was made.
    public var peerAddress: SocketAddress? { transport.peerAddress }
    /// The local address, as captured when the connection was made.
    public var localAddress: SocketAddress? { transport.localAddress }

    /// Transport information by asyncio's names: `"peername"` and `"sockname"` (``SocketAddress``),
    /// `"socket"` (the descriptor, `Int32`); the TLS names are nil on a plain connection.
    ///
    /// Corresponds to asyncio `writer.get_extra_info(name)`.
    public func extraInfo(_ name: String) -> Any? {
        switch name {
        case "peername": return peerAddress
        case "sockname": return localAddress
        case "socket": return transport.fileDescriptor
        case "transport": return transport
        default: return nil
        }
    }

    /// Upgrades the connection to TLS.
    ///
    /// - Throws: ``StreamError/invalidArgument(_:)``: TLS is not part of this build yet.
    ///
    /// Corresponds to asyncio 3.11 `await writer.start_tls(sslcontext)`.
    public func startTLS(
        _ config: TLSConfiguration, serverHostname: String? = nil, handshakeTimeout: Duration? = nil
    ) async throws {
        throw TLSConfiguration.unavailable
    }
}
