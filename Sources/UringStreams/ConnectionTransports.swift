/// The transports of one connected socket, started: the socket's own, and over TLS a TLS transport
/// on it. The streams and the protocol API both build connections with this, as asyncio's streams
/// sit on its transports and protocols.
struct ConnectionTransports {
    let socket: SocketTransport
    let tls: TLSTransport?

    /// The transport the protocol above writes to: the TLS one when there is one.
    var top: any StreamsTransport { tls ?? socket }

    /// Makes the transports of `fileDescriptor` for `owner` and starts them; on `loop`'s thread.
    ///
    /// A plain connection calls `owner.connectionMade` before this returns; over TLS the client's
    /// first flight is sent and `owner` hears `connectionMade` once the handshake has finished
    /// (the caller waits for it with the request's timeout). A server's `slot` hears of the top
    /// transport before it starts, and of the socket's close.
    ///
    /// - Parameters:
    ///   - prepare: Runs with the top transport before anything starts (a reader attaches there).
    /// - Throws: What making the TLS transport throws; the descriptor is closed then.
    static func start(
        loop: EventLoop, fileDescriptor: Int32, owner: any StreamProtocol, tls: TLSRequest?, slot: ConnectionSlot?,
        prepare: (any StreamsTransport) -> Void = { _ in }
    ) throws -> Self {
        loop.assertInEventLoop()
        let socket = SocketTransport(loop: loop, fileDescriptor: fileDescriptor)
        // On failure the socket transport (not started) closes the descriptor as it goes.
        let layer = try tls.map {
            try TLSTransport(
                context: $0.context, inner: socket, serverHostname: $0.serverHostname, upper: owner,
                shutdownTimeout: $0.shutdownTimeout)
        }
        let made = ConnectionTransports(socket: socket, tls: layer)
        prepare(made.top)
        if let slot {
            slot.register(made.top, socket: socket)
            // Unowned: the socket calls back on its own close, so it is alive then.
            socket.onClose { [unowned socket] in slot.closed(socket) }
        }
        if let layer {
            socket.start(protocol: layer)
            layer.start()
        } else {
            socket.start(protocol: owner)
        }
        return made
    }
}
