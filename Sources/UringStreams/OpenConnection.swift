internal import Glibc

/// Connects to `host`:`port` and returns the connection's reader and writer.
///
/// Each address the name resolves to is tried in turn until one connects; with a
/// `happyEyeballsDelay` the attempts overlap (RFC 8305) and the first to connect wins.
///
/// - Parameters:
///   - host: A name or numeric address; nil connects to the local host.
///   - port: The TCP port.
///   - limit: The reader's buffer limit (default 64 KiB); must be positive.
///   - tls: TLS settings (a `.client` configuration); the handshake finishes before this returns.
///   - family: Restricts resolution to one address family (`.inet` or `.inet6`).
///   - localAddress: An address to bind the socket to before connecting; addresses of another
///     family are skipped.
///   - serverHostname: The TLS server name for SNI and verification (TLS only); default `host`.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing waits for the peer's close_notify (TLS only) before it
///     aborts; default 30 s (asyncio `ssl_shutdown_timeout`).
///   - happyEyeballsDelay: Starts the next attempt this long after the previous one (or as soon
///     as it fails) instead of after it failed; the first to connect wins and the others are
///     cancelled and closed (RFC 8305; 250 ms is the RFC's recommendation).
///   - interleave: How many addresses of the first family go before the families alternate;
///     default 1 with `happyEyeballsDelay`, else the resolver's order; 0 keeps that order.
/// - Returns: The reader and writer of the new connection.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, port, family, delay, interleave
///   or TLS argument; the resolver's error for an unknown host; when every attempt failed, their
///   common error (``StreamError/connectionRefused`` and so on), or ``ConnectionAttemptsError``
///   when they failed differently; ``StreamError/tlsHandshakeFailed(_:)``,
///   ``StreamError/tlsCertificateRejected(_:)``, or ``StreamError/timedOut`` when the TLS
///   handshake does not finish in time.
///
/// Corresponds to asyncio `await asyncio.open_connection(host, port, ...)`.
public func openConnection(
    host: String?, port: Int, limit: Int = 65_536, tls: TLSConfiguration? = nil,
    family: AddressFamily = .unspecified, localAddress: SocketAddress? = nil, serverHostname: String? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil, happyEyeballsDelay: Duration? = nil,
    interleave: Int? = nil
) async throws -> (StreamReader, StreamWriter) {
    try validate(limit: limit)
    let tls = try TLSRequest(
        tls, serverHostname: serverHostname, defaultHostname: host, handshakeTimeout: tlsHandshakeTimeout,
        shutdownTimeout: tlsShutdownTimeout)
    let (fd, loop) = try await connectedSocket(
        host: host, port: port, family: family, localAddress: localAddress, happyEyeballsDelay: happyEyeballsDelay,
        interleave: interleave)
    return try await adoptConnection(fd, on: loop, limit: limit, tls: tls)
}

/// A socket connected to `host`:`port` from the caller's loop, and that loop.
func connectedSocket(
    host: String?, port: Int, family: AddressFamily, localAddress: SocketAddress?, happyEyeballsDelay: Duration?,
    interleave: Int?
) async throws -> (Int32, EventLoop) {
    let loop = try await callerLoop()
    let fd = try await onLoop(loop) { () async throws -> Int32 in
        let addresses = try await Resolver.resolve(host: host, port: port, family: family, passive: false)
        return try await loop.connect(
            toAnyOf: addresses, from: localAddress, happyEyeballsDelay: happyEyeballsDelay, interleave: interleave)
    }
    return (fd, loop)
}

/// A socket connected to the Unix socket at `path` from the caller's loop, and that loop.
func connectedSocket(unixPath path: String) async throws -> (Int32, EventLoop) {
    let address = try SocketAddress(unixPath: path)
    let loop = try await callerLoop()
    return (try await onLoop(loop) { try await loop.connect(to: address) }, loop)
}

/// Checks a descriptor handed over to be a stream socket and sets `TCP_NODELAY` on TCP ones (as
/// asyncio does on every TCP transport).
func adoptableSocket(_ fileDescriptor: Int32) throws {
    let family = try SocketDescriptor.streamSocketFamily(of: fileDescriptor)
    if family == AF_INET || family == AF_INET6 {
        try? SocketDescriptor.setOption(fileDescriptor, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }
}

/// Wraps an already connected stream socket in a reader and writer, taking ownership of it.
///
/// - Parameters:
///   - fileDescriptor: A connected `SOCK_STREAM` socket (TCP or Unix); closed with the writer.
///   - limit: The reader's buffer limit; must be positive.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit or a descriptor that is not a stream
///   socket.
///
/// Corresponds to asyncio `await asyncio.open_connection(sock=sock)`.
public func openConnection(fileDescriptor: Int32, limit: Int = 65_536) async throws -> (StreamReader, StreamWriter) {
    try validate(limit: limit)
    try adoptableSocket(fileDescriptor)
    return try await adoptConnection(fileDescriptor, on: try await callerLoop(), limit: limit, tls: nil)
}

/// Connects to the Unix socket at `path`.
///
/// - Parameters:
///   - path: The socket's path; a leading NUL names the abstract namespace.
///   - limit: The reader's buffer limit; must be positive.
///   - tls: TLS settings (a `.client` configuration); the handshake finishes before this returns.
///   - serverHostname: The TLS server name (TLS only); required when the client verifies, since a
///     path names no host (as asyncio).
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing waits for the peer's close_notify (TLS only) before it
///     aborts; default 30 s (asyncio `ssl_shutdown_timeout`).
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, path or TLS argument; the connect
///   error (e.g. ``StreamError/connectionRefused``, or `ENOENT` as
///   ``StreamError/system(errno:operation:)``); the TLS handshake's error, as `openConnection`.
///
/// Corresponds to asyncio `await asyncio.open_unix_connection(path)`.
public func openUnixConnection(
    path: String, limit: Int = 65_536, tls: TLSConfiguration? = nil, serverHostname: String? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil
) async throws -> (StreamReader, StreamWriter) {
    try validate(limit: limit)
    let tls = try TLSRequest(
        tls, serverHostname: serverHostname, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    let (fd, loop) = try await connectedSocket(unixPath: path)
    return try await adoptConnection(fd, on: loop, limit: limit, tls: tls)
}
