import Logging

/// Starts a TCP server whose connections are served by protocol objects, one per connection.
///
/// For every accepted connection `protocolFactory` makes a protocol on the connection's loop, which
/// then hears the transport's callbacks there: ``StreamProtocol/connectionMade(_:)`` (over TLS
/// once the handshake has finished; a connection whose handshake fails is closed without it),
/// ``StreamProtocol/dataReceived(_:)``, ``StreamProtocol/eofReceived()`` and
/// ``StreamProtocol/connectionLost(_:)``. No task runs per connection.
///
/// - Parameters:
///   - host: The address or name to listen on, one socket per address it resolves to; nil (or "")
///     listens on every interface.
///   - port: The port; 0 picks a free one for each socket (see ``Server/addresses``).
///   - family: Restricts the addresses to one family (`.inet` or `.inet6`).
///   - backlog: The listen backlog.
///   - tls: TLS settings (a `.server` configuration).
///   - reuseAddress: `SO_REUSEADDR`; default true, as asyncio on POSIX.
///   - reusePort: `SO_REUSEPORT`; default false. On a group of several loops each loop listens with
///     sockets of its own, as for `startServer`.
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s.
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its protocol hears `connectionLost` with ``StreamError/timedOut``.
///     As for ``startServer(host:port:limit:family:backlog:tls:reuseAddress:reusePort:tlsHandshakeTimeout:tlsShutdownTimeout:idleTimeout:startServing:logger:on:clientConnected:)``.
///   - startServing: Whether to accept at once; else call ``Server/startServing()``.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on; nil means the caller's loop, or the shared group.
///   - protocolFactory: Makes each connection's protocol, on that connection's loop.
/// - Returns: The server.
/// - Throws: As ``startServer(host:port:limit:family:backlog:tls:reuseAddress:reusePort:tlsHandshakeTimeout:tlsShutdownTimeout:idleTimeout:startServing:logger:on:clientConnected:)``.
///
/// Corresponds to asyncio `await loop.create_server(protocol_factory, host, port, ...)`.
public func createServer(
    host: String?, port: Int, family: AddressFamily = .unspecified, backlog: Int = 100,
    tls: TLSConfiguration? = nil, reuseAddress: Bool? = nil, reusePort: Bool? = nil,
    tlsHandshakeTimeout: Duration? = nil, tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil,
    startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil, protocolFactory: @escaping @Sendable () -> any StreamProtocol
) async throws -> Server {
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        host: host, port: port, family: family, backlog: backlog, reuseAddress: reuseAddress, reusePort: reusePort,
        startServing: startServing, group: group, logger: logger,
        starter: .protocols(tls: tls, factory: protocolFactory, idleTimeout: idleTimeout))
}

/// Serves an already bound socket (listening or not) with protocol objects, taking ownership of
/// it.
///
/// - Parameters:
///   - fileDescriptor: A bound `SOCK_STREAM` socket.
///   - backlog: The listen backlog, when the socket is not listening yet.
///   - tls: TLS settings (a `.server` configuration).
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s.
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its protocol hears `connectionLost` with ``StreamError/timedOut``.
///     As for ``startServer(host:port:limit:family:backlog:tls:reuseAddress:reusePort:tlsHandshakeTimeout:tlsShutdownTimeout:idleTimeout:startServing:logger:on:clientConnected:)``.
///   - startServing: Whether to accept at once.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on.
///   - protocolFactory: Makes each connection's protocol, on that connection's loop.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad idle timeout, TLS argument or a descriptor that is
///   not a stream socket.
///
/// Corresponds to asyncio `await loop.create_server(protocol_factory, sock=sock, ...)`.
public func createServer(
    fileDescriptor: Int32, backlog: Int = 100, tls: TLSConfiguration? = nil, tlsHandshakeTimeout: Duration? = nil,
    tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil, startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil,
    protocolFactory: @escaping @Sendable () -> any StreamProtocol
) async throws -> Server {
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        fileDescriptor: fileDescriptor, backlog: backlog, startServing: startServing, group: group, logger: logger,
        starter: .protocols(tls: tls, factory: protocolFactory, idleTimeout: idleTimeout))
}

/// Starts a Unix socket server at `path` whose connections are served by protocol objects; a
/// stale socket file there is removed first.
///
/// - Parameters:
///   - path: The socket's path; a leading NUL names the abstract namespace.
///   - backlog: The listen backlog.
///   - tls: TLS settings (a `.server` configuration).
///   - tlsHandshakeTimeout: The TLS handshake deadline (TLS only); default 60 s.
///   - tlsShutdownTimeout: How long closing a connection waits for the peer's close_notify (TLS
///     only) before it aborts; default 30 s.
///   - idleTimeout: Aborts a connection that has received and sent nothing for this long (nil,
///     the default: never); its protocol hears `connectionLost` with ``StreamError/timedOut``.
///     As for ``startServer(host:port:limit:family:backlog:tls:reuseAddress:reusePort:tlsHandshakeTimeout:tlsShutdownTimeout:idleTimeout:startServing:logger:on:clientConnected:)``.
///   - startServing: Whether to accept at once.
///   - logger: Where failed accepts and TLS handshakes are logged (asyncio logs both); nil
///     means the loop's ``EventLoop/logger``, disabled unless its group was given one.
///   - group: The loops connections live on; nil means the caller's loop, or the shared group.
///   - protocolFactory: Makes each connection's protocol, on that connection's loop.
/// - Throws: ``StreamError/invalidArgument(_:)`` for a bad path, idle timeout or TLS argument; a bind error.
///
/// Corresponds to asyncio `await loop.create_unix_server(protocol_factory, path)`.
public func createUnixServer(
    path: String, backlog: Int = 100, tls: TLSConfiguration? = nil, tlsHandshakeTimeout: Duration? = nil,
    tlsShutdownTimeout: Duration? = nil, idleTimeout: Duration? = nil, startServing: Bool = true, logger: Logger? = nil,
    on group: EventLoopGroup? = nil,
    protocolFactory: @escaping @Sendable () -> any StreamProtocol
) async throws -> Server {
    try validate(idleTimeout: idleTimeout)
    let tls = try serverTLS(tls, handshakeTimeout: tlsHandshakeTimeout, shutdownTimeout: tlsShutdownTimeout)
    return try await makeServer(
        unixPath: path, backlog: backlog, startServing: startServing, group: group, logger: logger,
        starter: .protocols(tls: tls, factory: protocolFactory, idleTimeout: idleTimeout))
}

extension ConnectionStarter {
    /// The protocol API's server: a protocol from `factory` per connection, on its loop. Over
    /// TLS a timer bounds the handshake (the connection aborts when it passes); the protocol hears
    /// nothing of a connection whose handshake failed, as in asyncio.
    static func protocols(
        tls: TLSRequest?, factory: @escaping @Sendable () -> any StreamProtocol, idleTimeout: Duration? = nil
    ) -> Self {
        ConnectionStarter(idleTimeout: idleTimeout) { fd, loop, slot in
            let made: ConnectionTransports
            do {
                made = try ConnectionTransports.start(
                    loop: loop, fileDescriptor: fd, owner: factory(), tls: tls, slot: slot)
            } catch {
                // The TLS transport could not be made (out of memory): the descriptor is closed
                // already; asyncio, too, drops a connection whose SSL set-up fails.
                return
            }
            guard let layer = made.tls, let timeout = tls?.handshakeTimeout else { return }
            Task(executorPreference: loop) {
                do {
                    try await layer.waitForHandshake(timeout: timeout)
                } catch {
                    slot.handshakeFailed(error)
                }
            }
        }
    }
}
