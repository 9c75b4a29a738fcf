internal import Glibc

/// The protocol behind every stream: it feeds what its transport receives into a `StreamReader`
/// (asyncio's `StreamReaderProtocol`, "a trivial helper class to adapt between Protocol and
/// StreamReader"). Its transport is the socket's, or a TLS transport above it.
final class StreamReaderProtocol: StreamProtocol, Sendable {
    let reader: StreamReader

    init(reader: StreamReader) {
        self.reader = reader
    }

    func dataReceived(_ data: Bytes) {
        reader.feed(data)
    }

    /// Keeps the write half open, as asyncio on a plain connection: the writer may still send.
    /// asyncio closes a TLS connection here; UringStreams keeps TLS 1.3's half-close, the mirror
    /// of what `writeEOF()` sends (docs/tls.md).
    func eofReceived() -> Bool {
        reader.feedEOF()
        return true
    }

    func connectionLost(_ error: (any Error)?) {
        if let error {
            reader.setException(error)
        } else {
            reader.feedEOF()
        }
    }
}

/// Builds the reader and writer of a connected socket; on `loop`'s thread.
///
/// With `tls`, a TLS transport goes between the socket and the reader from the first byte and the
/// client's first flight is sent; the caller then waits for the handshake (``StreamWriter/tls``).
/// A server's `slot` hears of the connection's top transport before it starts, and of its close.
///
/// - Throws: What making the TLS transport throws (the descriptor is closed then).
func makeStreams(
    loop: EventLoop, fileDescriptor: Int32, limit: Int, tls: TLSRequest? = nil, slot: ConnectionSlot? = nil
) throws -> (StreamReader, StreamWriter) {
    let reader = StreamReader(validLimit: limit)
    let readerProtocol = StreamReaderProtocol(reader: reader)
    let transports = try ConnectionTransports.start(
        loop: loop, fileDescriptor: fileDescriptor, owner: readerProtocol, tls: tls, slot: slot,
        prepare: { reader.attach($0) })
    let writer = StreamWriter(socket: transports.socket, reader: reader, readerProtocol: readerProtocol)
    if let layer = transports.tls { writer.install(layer) }
    return (reader, writer)
}

extension ConnectionStarter {
    /// The streams' server: a reader and writer per connection, and `clientConnected` as a task on
    /// its loop once a TLS handshake (if any) has finished; a failed handshake closes the
    /// connection without it, as in asyncio.
    static func streams(
        limit: Int, tls: TLSRequest?, clientConnected: @escaping Server.ClientConnected, idleTimeout: Duration? = nil
    ) -> Self {
        ConnectionStarter(idleTimeout: idleTimeout) { fd, loop, slot in
            let streams: (StreamReader, StreamWriter)
            do {
                streams = try makeStreams(loop: loop, fileDescriptor: fd, limit: limit, tls: tls, slot: slot)
            } catch {
                // The TLS transport could not be made (out of memory): the descriptor is closed
                // already, and asyncio, too, drops a connection whose SSL set-up fails.
                return
            }
            let (reader, writer) = streams
            guard let layer = writer.tls, let handshakeTimeout = tls?.handshakeTimeout else {
                slot.runHandler(reader, writer, clientConnected)
                return
            }
            slot.runHandler(reader, writer) { reader, writer in
                do {
                    try await layer.waitForHandshake(timeout: handshakeTimeout)
                } catch {
                    // A handler cancelled with its server is not the peer's failure.
                    if !(error is CancellationError) { slot.handshakeFailed(error) }
                    return
                }
                await clientConnected(reader, writer)
            }
        }
    }
}
