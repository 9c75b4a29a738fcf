internal import Glibc
import Logging

/// Starts a TCP server; `clientConnected` runs for every connection with its reader and writer.
///
/// - Parameters:
///   - host: The address or name to listen on, one socket per address it resolves to; nil (or "")
///     listens on every interface, one socket for IPv4 and one (`IPV6_V6ONLY`) for IPv6.
///   - port: The port; 0 picks a free one for each socket (see ``Server/addresses``).
///   - limit: Each reader's buffer limit; must be positive.
///   - family: Restricts the addresses to one family (`.inet` or `.inet6`).
///   - backlog: The listen backlog: connections the kernel queues before they are accepted.
///   - tls: TLS settings (a `.server` configuration): `clientConnected` runs once a connection's
///     handshake has finished; connections whose handshake fails are closed without it.
///   - reuseAddress: `SO_REUSEADDR`; default true, as asyncio on POSIX.
///   - reusePort: `SO_REUSEPORT`: lets several sockets (servers, processes) bind the same port;
///     the kernel spreads connections over them. Default false.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s (asyncio `ssl_shutdown_timeout`).
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its reader and writer then throw ``StreamError/timedOut``. Checked by
///     a sweep on each loop every quarter of the timeout, so a connection ends between 1 and 1.25
///     times the timeout after its last activity. asyncio has no such option (SwiftNIO's
///     `IdleStateHandler`, Vapor's `idleTimeout`).
///   - startServing: Whether to accept at once; else call ``Server/startServing()``.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on; nil means the caller's loop, or the shared group.
///   - clientConnected: Runs as a task on the connection's loop.
/// - Returns: The server.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, port, family, idle timeout or TLS argument
///   (including certificate or key files that cannot be loaded); the resolver's error for an
///   unknown host; a bind error naming the address (`EADDRINUSE` as
///   ``StreamError/system(errno:operation:)``).
///
/// Corresponds to asyncio `await asyncio.start_server(client_connected_cb, host, port, ...)`.
public func startServer(
    host: String?, port: Int, limit: Int = 65_536, family: AddressFamily = .unspecified, backlog: Int = 100,
    tls: TLSConfiguration? = nil, reuseAddress: Bool? = nil, reusePort: Bool? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil,
    startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil,
    clientConnected: @escaping @Sendable (StreamReader, StreamWriter) async -> Void
) async throws -> Server {
    try validate(limit: limit)
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        host: host, port: port, family: family, backlog: backlog, reuseAddress: reuseAddress, reusePort: reusePort,
        startServing: startServing, group: group, logger: logger,
        starter: .streams(limit: limit, tls: tls, clientConnected: clientConnected, idleTimeout: idleTimeout))
}

/// Serves an already bound socket (listening or not), taking ownership of it.
///
/// - Parameters:
///   - fileDescriptor: A bound `SOCK_STREAM` socket.
///   - limit: Each reader's buffer limit; must be positive.
///   - backlog: The listen backlog, when the socket is not listening yet.
///   - tls: TLS settings (a `.server` configuration), as for the `host:port:` variant.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s (asyncio `ssl_shutdown_timeout`).
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its reader and writer then throw ``StreamError/timedOut``. Checked by
///     a sweep on each loop every quarter of the timeout, so a connection ends between 1 and 1.25
///     times the timeout after its last activity. asyncio has no such option (SwiftNIO's
///     `IdleStateHandler`, Vapor's `idleTimeout`).
///   - startServing: Whether to accept at once.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on.
///   - clientConnected: Runs as a task on the connection's loop.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, TLS argument, or a descriptor
///   that is not a stream socket.
///
/// Corresponds to asyncio `await asyncio.start_server(client_connected_cb, sock=sock, ssl=...)`.
public func startServer(
    fileDescriptor: Int32, limit: Int = 65_536, backlog: Int = 100, tls: TLSConfiguration? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil,
    startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil,
    clientConnected: @escaping @Sendable (StreamReader, StreamWriter) async -> Void
) async throws -> Server {
    try validate(limit: limit)
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        fileDescriptor: fileDescriptor, backlog: backlog, startServing: startServing, group: group, logger: logger,
        starter: .streams(limit: limit, tls: tls, clientConnected: clientConnected, idleTimeout: idleTimeout))
}

/// Starts a Unix socket server at `path`; a stale socket file there is removed first.
///
/// - Parameters:
///   - path: The socket's path; a leading NUL names the abstract namespace.
///   - limit: Each reader's buffer limit; must be positive.
///   - backlog: The listen backlog.
///   - tls: TLS settings (a `.server` configuration), as for ``startServer(host:port:limit:family:backlog:tls:reuseAddress:reusePort:tlsHandshakeTimeout:tlsShutdownTimeout:idleTimeout:startServing:logger:on:clientConnected:)``.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s (asyncio `ssl_shutdown_timeout`).
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its reader and writer then throw ``StreamError/timedOut``. Checked by
///     a sweep on each loop every quarter of the timeout, so a connection ends between 1 and 1.25
///     times the timeout after its last activity. asyncio has no such option (SwiftNIO's
///     `IdleStateHandler`, Vapor's `idleTimeout`).
///   - startServing: Whether to accept at once.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on; nil means the caller's loop, or the shared group.
///   - clientConnected: Runs as a task on the connection's loop.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad limit, path or TLS argument; a bind error
///   (e.g. `EADDRINUSE` when a non-socket file is in the way).
///
/// Corresponds to asyncio `await asyncio.start_unix_server(client_connected_cb, path)`.
public func startUnixServer(
    path: String, limit: Int = 65_536, backlog: Int = 100, tls: TLSConfiguration? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil,
    startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil, clientConnected: @escaping @Sendable (StreamReader, StreamWriter) async -> Void
) async throws -> Server {
    try validate(limit: limit)
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        unixPath: path, backlog: backlog, startServing: startServing, group: group, logger: logger,
        starter: .streams(limit: limit, tls: tls, clientConnected: clientConnected, idleTimeout: idleTimeout))
}

func validate(idleTimeout: Duration?) throws {
    if let idleTimeout, idleTimeout <= .zero {
        throw StreamError.invalidArgument("idleTimeout must be positive")
    }
}

/// A server's TLS arguments, checked; the configuration must be a server's.
func serverTLS(_ tls: TLSConfiguration?, handshakeTimeout: Duration?, shutdownTimeout: Duration?) throws
    -> TLSRequest?
{
    if let tls, tls.role != .server {
        throw StreamError.invalidArgument("a server needs a TLSConfiguration.server(...) configuration")
    }
    return try TLSRequest(tls, handshakeTimeout: handshakeTimeout, shutdownTimeout: shutdownTimeout)
}

/// The path and inode of a bound Unix socket, so closing the server removes only its own file.
private func unixSocketIdentity(of fd: Int32) -> (path: String, inode: UInt)? {
    guard let path = SocketDescriptor.localAddress(of: fd)?.path, !path.isEmpty, !path.hasPrefix("\0") else {
        return nil
    }
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return (path, UInt(info.st_ino))
}

/// A server listening on what `host` resolves to (every interface when nil or empty).
func makeServer(
    host: String?, port: Int, family: AddressFamily, backlog: Int, reuseAddress: Bool?, reusePort: Bool?,
    startServing: Bool, group: EventLoopGroup?, logger: Logger?,
    starter: ConnectionStarter
) async throws -> Server {
    let host = host?.isEmpty == true ? nil : host
    let addresses = try await Resolver.resolve(host: host, port: port, family: family, passive: true)
    let descriptors = try SocketDescriptor.bindForListening(
        addresses, reuseAddress: reuseAddress ?? true, reusePort: reusePort ?? false)
    return try await makeServer(
        descriptors: descriptors, backlog: backlog, unixSocket: nil, startServing: startServing, group: group,
        logger: logger,
        starter: starter)
}

/// A server on a bound socket the caller hands over.
func makeServer(
    fileDescriptor: Int32, backlog: Int, startServing: Bool, group: EventLoopGroup?, logger: Logger?,
    starter: ConnectionStarter
) async throws -> Server {
    let family = try SocketDescriptor.streamSocketFamily(of: fileDescriptor)
    return try await makeServer(
        descriptors: [fileDescriptor], backlog: backlog,
        unixSocket: family == AF_UNIX ? unixSocketIdentity(of: fileDescriptor) : nil, startServing: startServing,
        group: group, logger: logger, starter: starter)
}

/// A server on a new Unix socket at `path`; a stale socket file there is removed first.
func makeServer(
    unixPath path: String, backlog: Int, startServing: Bool, group: EventLoopGroup?, logger: Logger?,
    starter: ConnectionStarter
) async throws -> Server {
    let address = try SocketAddress(unixPath: path)
    if !path.hasPrefix("\0") {
        // asyncio removes a stale socket file (left by a crashed server), never any other file.
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
    }
    let fd = try SocketDescriptor.make(family: .unix)
    do {
        try SocketDescriptor.bind(fd, to: address)
    } catch {
        close(fd)
        throw error
    }
    return try await makeServer(
        descriptors: [fd], backlog: backlog, unixSocket: unixSocketIdentity(of: fd), startServing: startServing,
        group: group, logger: logger, starter: starter)
}

func makeServer(
    descriptors: [Int32], backlog: Int, unixSocket: (path: String, inode: UInt)?, startServing: Bool,
    group: EventLoopGroup?, logger: Logger?,
    starter: ConnectionStarter
) async throws -> Server {
    let listenerLoop: EventLoop
    let connectionLoops: [EventLoop]
    if let group {
        listenerLoop = group.nextAvailable()
        connectionLoops = group.loops
    } else if let current = EventLoop.current {
        listenerLoop = current
        connectionLoops = [current]
    } else {
        listenerLoop = EventLoopGroup.shared.nextAvailable()
        connectionLoops = EventLoopGroup.shared.loops
    }
    do {
        try await listenerLoop.ensureRing()
    } catch {
        for fd in descriptors { close(fd) }
        throw error
    }
    let server = Server(
        descriptors: descriptors, listenerLoop: listenerLoop, connectionLoops: connectionLoops, backlog: backlog,
        unixSocket: unixSocket, logger: logger ?? listenerLoop.logger, starter: starter)
    if startServing {
        do {
            try await server.startServing()
        } catch {
            server.close()
            throw error
        }
    }
    return server
}
