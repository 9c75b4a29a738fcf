/// Connects to `host`:`port` and serves the connection with a protocol object.
///
/// Addresses are tried as ``openConnection(host:port:limit:tls:family:localAddress:serverHostname:tlsHandshakeTimeout:tlsShutdownTimeout:happyEyeballsDelay:interleave:)``
/// tries them. The protocol is made on the connection's loop (the caller's, when it runs on one)
/// and hears ``StreamProtocol/connectionMade(_:)`` before this returns (over TLS once the
/// handshake has finished); its callbacks run on that loop.
///
/// The protocol is handed back to the caller as well, so it must be `Sendable`: a class whose
/// state only its callbacks touch is safe to read from the loop's tasks; anything read from other
/// threads needs a lock (for example `Mutex`).
///
/// - Parameters:
///   - host: A name or numeric address; nil connects to the local host.
///   - port: The TCP port.
///   - tls: TLS settings (a `.client` configuration); the handshake finishes before this returns.
///   - family: Restricts resolution to one address family.
///   - localAddress: An address to bind the socket to before connecting.
///   - serverHostname: The TLS server name for SNI and verification (TLS only); default `host`.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing waits for the peer's close_notify (TLS only); default
///     30 s.
///   - happyEyeballsDelay: Overlaps the attempts (RFC 8305), as for `openConnection`.
///   - interleave: How many addresses of the first family go before the families alternate.
///   - protocolFactory: Makes the connection's protocol, on the connection's loop.
/// - Returns: The connection's transport (the TLS transport over TLS) and its protocol.
/// - Throws: What `openConnection` throws for the same arguments; a failed TLS handshake closes
///   the connection, and the protocol hears nothing of it.
///
/// Corresponds to asyncio `await loop.create_connection(protocol_factory, host, port, ...)`,
/// which also returns `(transport, protocol)`.
public func createConnection<P: StreamProtocol & Sendable>(
    host: String?, port: Int, tls: TLSConfiguration? = nil, family: AddressFamily = .unspecified,
    localAddress: SocketAddress? = nil, serverHostname: String? = nil, tlsHandshakeTimeout: Duration? = nil,
    tlsShutdownTimeout: Duration? = nil, happyEyeballsDelay: Duration? = nil, interleave: Int? = nil,
    protocolFactory: @escaping @Sendable () -> P
) async throws -> (transport: any Transport, protocol: P) {
    let tls = try TLSRequest(
        tls, serverHostname: serverHostname, defaultHostname: host, handshakeTimeout: tlsHandshakeTimeout,
        shutdownTimeout: tlsShutdownTimeout)
    let (fd, loop) = try await connectedSocket(
        host: host, port: port, family: family, localAddress: localAddress, happyEyeballsDelay: happyEyeballsDelay,
        interleave: interleave)
    return try await adoptConnection(fd, on: loop, tls: tls, protocolFactory: protocolFactory)
}

/// Connects to the Unix socket at `path` and serves the connection with a protocol object.
///
/// - Parameters:
///   - path: The socket's path; a leading NUL names the abstract namespace.
///   - tls: TLS settings (a `.client` configuration).
///   - serverHostname: The TLS server name (TLS only); required when the client verifies.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing waits for the peer's close_notify (TLS only); default
///     30 s.
///   - protocolFactory: Makes the connection's protocol, on the connection's loop.
/// - Returns: The connection's transport and its protocol.
/// - Throws: What `openUnixConnection` throws for the same arguments.
///
/// Corresponds to asyncio `await loop.create_unix_connection(protocol_factory, path)`.
public func createUnixConnection<P: StreamProtocol & Sendable>(
    path: String, tls: TLSConfiguration? = nil, serverHostname: String? = nil, tlsHandshakeTimeout: Duration? = nil,
    tlsShutdownTimeout: Duration? = nil, protocolFactory: @escaping @Sendable () -> P
) async throws -> (transport: any Transport, protocol: P) {
    let tls = try TLSRequest(
        tls, serverHostname: serverHostname, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    let (fd, loop) = try await connectedSocket(unixPath: path)
    return try await adoptConnection(fd, on: loop, tls: tls, protocolFactory: protocolFactory)
}

/// Serves an already connected stream socket with a protocol object, taking ownership of it.
///
/// - Parameters:
///   - fileDescriptor: A connected `SOCK_STREAM` socket (TCP or Unix); the transport closes it.
///   - protocolFactory: Makes the connection's protocol, on the connection's loop.
/// - Returns: The connection's transport and its protocol.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a descriptor that is not a stream socket.
///
/// Corresponds to asyncio `await loop.create_connection(protocol_factory, sock=sock)`.
public func createConnection<P: StreamProtocol & Sendable>(
    fileDescriptor: Int32, protocolFactory: @escaping @Sendable () -> P
) async throws -> (transport: any Transport, protocol: P) {
    try adoptableSocket(fileDescriptor)
    return try await adoptConnection(
        fileDescriptor, on: try await callerLoop(), tls: nil, protocolFactory: protocolFactory)
}

/// Starts the transports of a connected descriptor on `loop` for a new protocol and, with `tls`,
/// waits for the handshake.
private func adoptConnection<P: StreamProtocol & Sendable>(
    _ fd: Int32, on loop: EventLoop, tls: TLSRequest?, protocolFactory: @escaping @Sendable () -> P
) async throws -> (transport: any Transport, protocol: P) {
    let (made, owner) = try await onLoop(loop) { () throws -> (SendableTransports, P) in
        let owner = protocolFactory()
        let made = try ConnectionTransports.start(loop: loop, fileDescriptor: fd, owner: owner, tls: tls, slot: nil)
        return (SendableTransports(made), owner)
    }
    if let tls, let layer = made.transports.tls {
        try await layer.waitForHandshake(timeout: tls.handshakeTimeout)
    }
    return (made.transports.top, owner)
}

/// Carries the started transports off the loop: both are `Sendable` classes.
private struct SendableTransports: Sendable {
    let transports: ConnectionTransports
    init(_ transports: ConnectionTransports) { self.transports = transports }
}
