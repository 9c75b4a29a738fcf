internal import Glibc
import Synchronization

/// Writing to a stream, as asyncio's `StreamWriter`.
///
/// `write` never blocks and never throws: bytes are queued and sent as one gathered send per loop
/// turn; `drain()` applies the transport's water marks. Synchronous members may be called from any
/// task. A writer that is no longer referenced closes its connection (asyncio `__del__`).
///
/// Over TLS, written bytes are encrypted at once and the transport queues the records: the water
/// marks, `writeBufferSize` and `transport` concern the encrypted bytes on the socket.
///
/// Corresponds to asyncio `asyncio.StreamWriter`.
public final class StreamWriter: Sendable {
    /// The socket's transport.
    let socket: SocketTransport
    private let reader: StreamReader?
    /// Routes received data; startTLS puts a TLS transport in its path.
    private let readerProtocol: StreamReaderProtocol?
    /// The TLS layer, set once (at connection or by startTLS) and never removed: an atomic load
    /// (inlined) is all a plain connection's write pays for it.
    private let tlsLayer = SetOnceReference<TLSTransport>()

    init(socket: SocketTransport, reader: StreamReader?, readerProtocol: StreamReaderProtocol? = nil) {
        self.socket = socket
        self.reader = reader
        self.readerProtocol = readerProtocol
    }

    deinit {
        if let tls = tlsLayer.load() { tls.close() } else { socket.close() }
    }

    /// The transport (asyncio `writer.transport`): the socket's, or over TLS the TLS transport on
    /// it (asyncio's `_SSLProtocolTransport`).
    public var transport: any Transport { tlsLayer.load() ?? socket }

    /// The connection's TLS layer, once it has one.
    var tls: TLSTransport? { tlsLayer.load() }

    /// Makes `layer` the connection's TLS layer for writing; once.
    func install(_ layer: TLSTransport) {
        let stored = tlsLayer.storeIfNil(layer)
        precondition(stored === layer, "a connection gets one TLS layer")
    }

    /// Queues `data` (copied) for sending (asyncio `write`).
    public func write(_ data: some Collection<UInt8>) {
        if let bytes = data as? Bytes {
            write(bytes)
        } else if let tls = tlsLayer.load() {
            tls.write(data)
        } else {
            socket.write(copying: data)
        }
    }

    /// Queues `bytes` for sending without copying them (asyncio `write`).
    public func write(_ bytes: Bytes) {
        if let tls = tlsLayer.load() {
            tls.write(bytes)
        } else {
            socket.write(bytes)
        }
    }

    /// Queues the UTF-8 bytes of `string` (asyncio `write(text.encode())`).
    public func write(_ string: String) {
        if let tls = tlsLayer.load() {
            tls.write(string.utf8)
        } else {
            socket.write(copying: string.utf8)
        }
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
    nonisolated(nonsending) public func drain() async throws {
        if let error = reader?.exception { throw error }
        // Asked of `socket` directly when there is no TLS layer: making the existential first
        // cost a retain and a release per drain.
        let tls = tlsLayer.load()
        switch tls?.drainStatus ?? socket.drainStatus {
        case .ready: return
        case .fail(let error): throw error
        case .wait:
            if let tls { try await tls.waitForDrain() } else { try await socket.waitForDrain() }
        }
    }

    /// Whether ``writeEOF()`` is supported (asyncio `can_write_eof`): false over TLS, which has no
    /// half-close a peer must honour.
    public var canWriteEOF: Bool { transport.canWriteEOF }

    /// Half-closes the connection once queued bytes are sent (asyncio `write_eof`).
    ///
    /// Over TLS (where asyncio raises `NotImplementedError`) it sends close_notify after what is
    /// queued and keeps the connection open for reading; many peers answer by closing.
    public func writeEOF() {
        transport.writeEOF()
    }

    /// Closes the connection after sending what is queued (asyncio `close`).
    ///
    /// As in asyncio, a plain connection whose peer stops reading never finishes closing while
    /// data is queued: ``StreamTransport/abort()`` (or ``Server/abortClients()``) ends it at once.
    /// Over TLS it sends close_notify and waits for the peer's, then closes; when that takes longer
    /// than the connection's TLS shutdown timeout (default 30 s) it aborts, and ``waitClosed()``
    /// throws ``StreamError/timedOut``.
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
        let transport: any StreamsTransport = tlsLayer.load() ?? socket
        try await transport.waitClosed()
        if let error = transport.connectionError { throw error }
    }

    /// The peer's address, as captured when the connection was made.
    public var peerAddress: SocketAddress? { socket.peerAddress }
    /// The local address, as captured when the connection was made.
    public var localAddress: SocketAddress? { socket.localAddress }

    /// Transport information by asyncio's names: `"peername"` and `"sockname"` (``SocketAddress``),
    /// `"socket"` (the descriptor, `Int32`), `"transport"`; over TLS also `"sslcontext"`
    /// (``TLSConfiguration``), `"peercert"` (``TLSCertificate``, nil when the peer sent none),
    /// `"cipher"` (``TLSCipher``), `"compression"` (always nil: compression is off, as in Python),
    /// `"ssl_object"` (``TLSConnectionInfo``). The TLS names are nil on a plain connection and
    /// until the handshake has finished.
    ///
    /// Corresponds to asyncio `writer.get_extra_info(name)`.
    public func extraInfo(_ name: String) -> Any? {
        if name == "transport" { return transport }
        return transport.extraInfo(name)
    }

    /// Upgrades the plain connection to TLS: waits for queued bytes to drain, then makes the
    /// handshake as `config.role` says. What the reader had already received stays in it as
    /// plaintext; everything received from now on is TLS.
    ///
    /// - Parameters:
    ///   - config: The TLS settings; a `.client` configuration makes this end the client.
    ///   - serverHostname: For a client: the name for SNI and verification (required when it
    ///     verifies the server).
    ///   - handshakeTimeout: Default 60 s.
    ///   - shutdownTimeout: How long ``close()`` waits for the peer's close_notify and for queued
    ///     data to go out before it aborts the connection; default 30 s.
    /// - Throws: ``StreamError/invalidArgument(_:)`` when the connection is TLS already, or the
    ///   arguments or files are bad; ``StreamError/timedOut``; ``StreamError/tlsHandshakeFailed(_:)``,
    ///   ``StreamError/tlsCertificateRejected(_:)``; a stored connection error. A failed handshake
    ///   closes the connection.
    ///
    /// Corresponds to asyncio 3.11 `await writer.start_tls(sslcontext, server_hostname=...,
    /// ssl_handshake_timeout=..., ssl_shutdown_timeout=...)`.
    public func startTLS(
        _ config: TLSConfiguration, serverHostname: String? = nil, handshakeTimeout: Duration? = nil,
        shutdownTimeout: Duration? = nil
    ) async throws {
        guard tlsLayer.load() == nil else { throw StreamError.invalidArgument("the connection already uses TLS") }
        guard let reader, let readerProtocol else {
            throw StreamError.invalidArgument("startTLS needs a connection made by this library")
        }
        let request = try TLSRequest(
            config, serverHostname: serverHostname,
            handshakeTimeout: handshakeTimeout ?? TLSRequest.defaultHandshakeTimeout, shutdownTimeout: shutdownTimeout)!
        try await drain()
        let socket = self.socket
        let layer = try await onLoop(socket.loop) { () throws -> TLSTransport in
            // Checked again here, where startTLS calls are serialised: two may have passed the
            // first check while draining.
            guard self.tlsLayer.load() == nil else {
                throw StreamError.invalidArgument("the connection already uses TLS")
            }
            let layer = try TLSTransport(
                context: request.context, inner: socket, serverHostname: request.serverHostname,
                upper: readerProtocol, shutdownTimeout: request.shutdownTimeout)
            reader.attach(layer)
            socket.setProtocol(layer)
            self.install(layer)
            layer.start()
            return layer
        }
        try await layer.waitForHandshake(timeout: request.handshakeTimeout)
    }
}
