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
///     the kernel spreads connections over them. Default false. On a group of several loops it
///     also gives each loop listening sockets of its own, so the kernel hands each connection
///     straight to one loop and no loop accepts for the others (without it, one loop accepts and
///     passes connections round robin). With port 0 the first loop's sockets get the free ports
///     and the other loops' sockets bind the same ones.
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
/// - Returns: The server; its ``Server/addresses`` lists each address once, also when every loop
///   listens on it with a socket of its own.
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
    let loops = serverLoops(group)
    if reusePort == true, loops.connections.count > 1 {
        return try await makePerLoopServer(
            addresses: addresses, loops: loops.connections, backlog: backlog, reuseAddress: reuseAddress ?? true,
            startServing: startServing, logger: logger, starter: starter)
    }
    let descriptors = try SocketDescriptor.bindForListening(
        addresses, reuseAddress: reuseAddress ?? true, reusePort: reusePort ?? false)
    return try await makeServer(
        descriptors: descriptors, backlog: backlog, unixSocket: nil, startServing: startServing, group: group,
        logger: logger,
        starter: starter)
}

/// A `reusePort` server on several loops: every loop that can do I/O gets its own copy of the
/// listening sockets and serves what it accepts itself, so the kernel's `SO_REUSEPORT` spreading
/// replaces the cross-thread hand-off of one accepting loop.
private func makePerLoopServer(
    addresses: [SocketAddress], loops: [EventLoop], backlog: Int, reuseAddress: Bool, startServing: Bool,
    logger: Logger?, starter: ConnectionStarter
) async throws -> Server {
    var usable: [EventLoop] = []
    var firstError: (any Error)?
    for loop in loops {
        do {
            try await loop.ensureRing()
            usable.append(loop)
        } catch {
            firstError = firstError ?? error
        }
    }
    guard let first = usable.first else { throw firstError ?? StreamError.serverClosed }
    var descriptors = try SocketDescriptor.bindForListening(addresses, reuseAddress: reuseAddress, reusePort: true)
    var listenerLoops = Array(repeating: first, count: descriptors.count)
    // The first set's bound addresses carry the ports the kernel picked for port 0; the other
    // loops bind exactly those, so every copy shares its port.
    let bound = descriptors.compactMap { SocketDescriptor.localAddress(of: $0) }
    let published = descriptors.count
    do {
        guard bound.count == descriptors.count else {
            throw StreamError.system(errno: errno, operation: "getsockname")
        }
        for loop in usable.dropFirst() {
            let copies = try SocketDescriptor.bindForListening(bound, reuseAddress: reuseAddress, reusePort: true)
            descriptors += copies
            listenerLoops += Array(repeating: loop, count: copies.count)
        }
    } catch {
        for fd in descriptors { close(fd) }
        throw error
    }
    let server = Server(
        descriptors: descriptors, listenerLoops: listenerLoops, acceptsPerLoop: true, publishedCount: published,
        connectionLoops: usable, backlog: backlog, unixSocket: nil, logger: logger ?? usable[0].logger,
        starter: starter)
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

/// The loop that accepts for a server and the loops its connections live on: the group's, else
/// the caller's own loop, else the shared group's.
private func serverLoops(_ group: EventLoopGroup?) -> (listener: EventLoop, connections: [EventLoop]) {
    if let group { return (group.nextAvailable(), group.loops) }
    if let current = EventLoop.current { return (current, [current]) }
    return (EventLoopGroup.shared.nextAvailable(), EventLoopGroup.shared.loops)
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
    let (listenerLoop, connectionLoops) = serverLoops(group)
    do {
        try await listenerLoop.ensureRing()
    } catch {
        for fd in descriptors { close(fd) }
        throw error
    }
    let server = Server(
        descriptors: descriptors, listenerLoops: Array(repeating: listenerLoop, count: descriptors.count),
        acceptsPerLoop: false, publishedCount: descriptors.count, connectionLoops: connectionLoops,
        backlog: backlog, unixSocket: unixSocket, logger: logger ?? listenerLoop.logger, starter: starter)
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
