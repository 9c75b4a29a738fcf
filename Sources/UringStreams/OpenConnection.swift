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
///   - tls: TLS settings; not available in this build (throws).
///   - family: Restricts resolution to one address family (`.inet` or `.inet6`).
///   - localAddress: An address to bind the socket to before connecting; addresses of another
///     family are skipped.
///   - serverHostname: The TLS server name (TLS only).
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only).
///   - happyEyeballsDelay: Starts the next attempt this long after the previous one (or as soon
///     as it fails) instead of after it failed; the first to connect wins and the others are
///     cancelled and closed (RFC 8305; 250 ms is the RFC's recommendation).
///   - interleave: How many addresses of the first family go before the families alternate;
///     default 1 with `happyEyeballsDelay`, else the resolver's order; 0 keeps that order.
/// - Returns: The reader and writer of the new connection.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, port, family, delay, interleave
///   or TLS; the resolver's error for an unknown host; when every attempt failed, their common
///   error (``StreamError/connectionRefused`` and so on), or ``ConnectionAttemptsError`` when
///   they failed differently.
///
/// Corresponds to asyncio `await asyncio.open_connection(host, port, ...)`.
public func openConnection(
    host: String?, port: Int, limit: Int = 65_536, tls: TLSConfiguration? = nil,
    family: AddressFamily = .unspecified, localAddress: SocketAddress? = nil, serverHostname: String? = nil,
    tlsHandshakeTimeout: Duration? = nil, happyEyeballsDelay: Duration? = nil, interleave: Int? = nil
) async throws -> (StreamReader, StreamWriter) {
    try validate(limit: limit)
    if tls != nil { throw TLSConfiguration.unavailable }
    let loop = try callerLoop()
    let fd = try await onLoop(loop) { () async throws -> Int32 in
        let addresses = try await Resolver.resolve(host: host, port: port, family: family, passive: false)
        return try await loop.connect(
            toAnyOf: addresses, from: localAddress, happyEyeballsDelay: happyEyeballsDelay, interleave: interleave)
    }
    return await adopt(fd, on: loop, limit: limit)
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
    let family = try SocketDescriptor.streamSocketFamily(of: fileDescriptor)
    if family == AF_INET || family == AF_INET6 {
        try? SocketDescriptor.setOption(fileDescriptor, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }
    return await adopt(fileDescriptor, on: try callerLoop(), limit: limit)
}

/// Connects to the Unix socket at `path`.
///
/// - Parameters:
///   - path: The socket's path; a leading NUL names the abstract namespace.
///   - limit: The reader's buffer limit; must be positive.
///   - tls: TLS settings; not available in this build (throws).
///   - serverHostname: The TLS server name (TLS only).
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only).
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, path or TLS; the connect error
///   (e.g. ``StreamError/connectionRefused``, or `ENOENT` as ``StreamError/system(errno:operation:)``).
///
/// Corresponds to asyncio `await asyncio.open_unix_connection(path)`.
public func openUnixConnection(
    path: String, limit: Int = 65_536, tls: TLSConfiguration? = nil, serverHostname: String? = nil,
    tlsHandshakeTimeout: Duration? = nil
) async throws -> (StreamReader, StreamWriter) {
    try validate(limit: limit)
    if tls != nil { throw TLSConfiguration.unavailable }
    let address = try SocketAddress(unixPath: path)
    let loop = try callerLoop()
    let fd = try await onLoop(loop) { try await loop.connect(to: address) }
    return await adopt(fd, on: loop, limit: limit)
}

/// Builds the streams of a connected descriptor on `loop`.
private func adopt(_ fd: Int32, on loop: EventLoop, limit: Int) async -> (StreamReader, StreamWriter) {
    if loop.inEventLoop { return makeStreams(loop: loop, fileDescriptor: fd, limit: limit) }
    return await withTaskExecutorPreference(loop) { makeStreams(loop: loop, fileDescriptor: fd, limit: limit) }
}
