/// The TLS arguments of one stream function, checked and with its context loaded before any
/// socket is made (as asyncio checks `ssl=`, `server_hostname=` and `ssl_handshake_timeout=` up
/// front).
struct TLSRequest: Sendable {
    let context: TLSContext
    /// The client's name for SNI and verification; nil for servers.
    let serverHostname: String?
    let handshakeTimeout: Duration
    let shutdownTimeout: Duration

    /// asyncio's default `ssl_handshake_timeout`.
    static let defaultHandshakeTimeout = Duration.seconds(60)
    /// asyncio's default `ssl_shutdown_timeout`.
    static let defaultShutdownTimeout = TLSTransport.defaultShutdownTimeout

    /// Checks the arguments; nil when `tls` is nil (plain connection).
    ///
    /// - Parameters:
    ///   - defaultHostname: What `serverHostname` defaults to (the host connected to).
    /// - Throws: ``StreamError/invalidArgument(_:)`` when `serverHostname` or a timeout comes
    ///   without `tls`, a timeout is not positive, or the configuration's files cannot be loaded.
    init?(
        _ tls: TLSConfiguration?, serverHostname: String? = nil, defaultHostname: String? = nil,
        handshakeTimeout: Duration?, shutdownTimeout: Duration? = nil
    ) throws {
        guard let tls else {
            if serverHostname != nil {
                throw StreamError.invalidArgument("serverHostname is only meaningful with tls")
            }
            if handshakeTimeout != nil {
                throw StreamError.invalidArgument("tlsHandshakeTimeout is only meaningful with tls")
            }
            if shutdownTimeout != nil {
                throw StreamError.invalidArgument("tlsShutdownTimeout is only meaningful with tls")
            }
            return nil
        }
        if let handshakeTimeout, handshakeTimeout <= .zero {
            throw StreamError.invalidArgument(
                "tlsHandshakeTimeout should be a positive duration, got \(handshakeTimeout)")
        }
        if let shutdownTimeout, shutdownTimeout <= .zero {
            throw StreamError.invalidArgument(
                "tlsShutdownTimeout should be a positive duration, got \(shutdownTimeout)")
        }
        if tls.role == .server, serverHostname != nil {
            throw StreamError.invalidArgument("serverHostname is only meaningful for a TLS client")
        }
        context = try TLSContext.shared(for: tls)
        self.serverHostname = tls.role == .client ? (serverHostname ?? defaultHostname) : nil
        self.handshakeTimeout = handshakeTimeout ?? Self.defaultHandshakeTimeout
        self.shutdownTimeout = shutdownTimeout ?? Self.defaultShutdownTimeout
    }
}

/// Builds the streams of a connected descriptor on `loop` and, with `tls`, completes the handshake
/// before returning them (asyncio's `open_connection` returns once the handshake is done).
///
/// - Throws: The TLS session's or the handshake's error; the connection is closed then.
func adoptConnection(
    _ fd: Int32, on loop: EventLoop, limit: Int, tls: TLSRequest?
) async throws -> (StreamReader, StreamWriter) {
    let streams = try await onLoop(loop) { try makeStreams(loop: loop, fileDescriptor: fd, limit: limit, tls: tls) }
    if let tls, let layer = streams.1.tls {
        try await layer.waitForHandshake(timeout: tls.handshakeTimeout)
    }
    return streams
}
