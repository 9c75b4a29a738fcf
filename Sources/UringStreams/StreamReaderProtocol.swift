/// Feeds what a transport receives into a `StreamReader` (asyncio `StreamReaderProtocol`), through
/// a TLS session once one is installed.
final class StreamReaderProtocol: StreamTransportDelegate, @unchecked Sendable {
    // Sendable (the writer keeps it for startTLS): `tls` is set and read only on the transport's
    // loop thread, where every delegate callback runs too.

    let reader: StreamReader
    private let onConnectionLost: (() -> Void)?
    /// The TLS layer, when the connection is (or has become) TLS: received bytes are ciphertext.
    var tls: TLSSession?

    init(reader: StreamReader, onConnectionLost: (() -> Void)? = nil) {
        self.reader = reader
        self.onConnectionLost = onConnectionLost
    }

    func transport(_ transport: StreamTransport, received bytes: Bytes) {
        if let tls {
            tls.received(bytes)
        } else {
            reader.feed(bytes)
        }
    }

    func transportReceivedEOF(_ transport: StreamTransport) {
        if let tls {
            tls.receivedEOF()
        } else {
            reader.feedEOF()
        }
    }

    func transport(_ transport: StreamTransport, connectionLost error: (any Error)?) {
        tls?.connectionLost(error)
        if let error {
            // A TLS failure already stored its own, more telling error (it then closed the socket).
            if tls?.error == nil { reader.setException(error) }
        } else {
            reader.feedEOF()
        }
        onConnectionLost?()
    }
}

/// Builds the reader and writer of a connected socket; on `loop`'s thread.
///
/// With `tls`, received data goes through a new TLS session from the first byte and the client's
/// first flight is sent; the caller then waits for the handshake (``StreamWriter/tlsSession``).
///
/// - Throws: What making the TLS session throws (the descriptor is closed then).
func makeStreams(
    loop: EventLoop, fileDescriptor: Int32, limit: Int, tls: TLSRequest? = nil,
    onConnectionLost: (() -> Void)? = nil
) throws -> (StreamReader, StreamWriter) {
    let transport = StreamTransport(loop: loop, fileDescriptor: fileDescriptor)
    let reader = StreamReader(validLimit: limit)
    reader.attach(transport)
    let readerProtocol = StreamReaderProtocol(reader: reader, onConnectionLost: onConnectionLost)
    var session: TLSSession?
    if let tls {
        // On failure the transport (not started yet) closes the descriptor as it goes.
        session = try TLSSession(
            context: tls.context, transport: transport, reader: reader, serverHostname: tls.serverHostname,
            shutdownTimeout: tls.shutdownTimeout)
        readerProtocol.tls = session
    }
    transport.start(delegate: readerProtocol)
    let writer = StreamWriter(transport: transport, reader: reader, readerProtocol: readerProtocol)
    if let session {
        writer.install(session)
        session.start()
    }
    return (reader, writer)
}
