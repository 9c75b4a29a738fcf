/// Feeds what a transport receives into a `StreamReader` (asyncio `StreamReaderProtocol`).
final class StreamReaderProtocol: StreamTransportDelegate {
    let reader: StreamReader
    private let onConnectionLost: (() -> Void)?

    init(reader: StreamReader, onConnectionLost: (() -> Void)? = nil) {
        self.reader = reader
        self.onConnectionLost = onConnectionLost
    }

    func transport(_ transport: StreamTransport, received bytes: Bytes) {
        reader.feed(bytes)
    }

    func transportReceivedEOF(_ transport: StreamTransport) {
        reader.feedEOF()
    }

    func transport(_ transport: StreamTransport, connectionLost error: (any Error)?) {
        if let error {
            reader.setException(error)
        } else {
            reader.feedEOF()
        }
        onConnectionLost?()
    }
}

/// Builds the reader and writer of a connected socket; on `loop`'s thread.
func makeStreams(
    loop: EventLoop, fileDescriptor: Int32, limit: Int, onConnectionLost: (() -> Void)? = nil
) -> (StreamReader, StreamWriter) {
    let transport = StreamTransport(loop: loop, fileDescriptor: fileDescriptor)
    let reader = StreamReader(validLimit: limit)
    reader.attach(transport)
    transport.start(delegate: StreamReaderProtocol(reader: reader, onConnectionLost: onConnectionLost))
    return (reader, StreamWriter(transport: transport, reader: reader))
}
