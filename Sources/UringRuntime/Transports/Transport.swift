/// A connection's byte stream, as a protocol object sees it (asyncio's `Transport`: a
/// `ReadTransport` and `WriteTransport` in one).
///
/// Every member may be called from any thread; the I/O happens on ``loop``, where the transport
/// calls its protocol. `write` never blocks: bytes queue up and go out in one gathered send per
/// loop turn; the protocol hears ``StreamProtocol/pauseWriting()`` when more than the high-water
/// mark is queued and ``StreamProtocol/resumeWriting()`` once no more than the low one is.
///
/// Made by `createConnection` and `createServer` (and behind every stream): the socket's transport
/// or, over TLS, a TLS transport layered on it.
///
/// Corresponds to asyncio `asyncio.Transport`.
public protocol Transport: AnyObject, Sendable {
    /// The loop the connection lives on for its whole life.
    var loop: EventLoop { get }

    /// Queues `bytes` without copying them; after ``close()`` or ``writeEOF()`` they are dropped.
    ///
    /// Corresponds to asyncio `transport.write(data)`.
    func write(_ bytes: Bytes)

    /// Queues a copy of `data` (over TLS, encrypted straight from `data`).
    ///
    /// Corresponds to asyncio `transport.write(data)`.
    func write<Data: Collection>(_ data: Data) where Data.Element == UInt8

    /// Sends what is queued, then half-closes (asyncio `write_eof()`); over TLS, sends close_notify.
    func writeEOF()

    /// Whether ``writeEOF()`` half-closes: true for TCP and Unix sockets, false over TLS (asyncio
    /// `can_write_eof()`).
    var canWriteEOF: Bool { get }

    /// Closes once what is queued has been sent; the protocol then hears `connectionLost(nil)`
    /// (asyncio `close()`).
    func close()

    /// Closes at once, dropping what is queued (asyncio `abort()`).
    func abort()

    /// Whether ``close()`` or ``abort()`` was called or the connection failed (asyncio
    /// `is_closing()`).
    var isClosing: Bool { get }

    /// Stops calling the protocol with received data until ``resumeReading()``; from the moment
    /// this returns, nothing more arrives (asyncio `pause_reading()`).
    func pauseReading()

    /// Calls the protocol with received data again (asyncio `resume_reading()`).
    func resumeReading()

    /// Whether received data reaches the protocol (asyncio `is_reading()`).
    var isReading: Bool { get }

    /// Bytes written and not yet confirmed sent (asyncio `get_write_buffer_size()`).
    var writeBufferSize: Int { get }

    /// The write-buffer water marks (asyncio `get_write_buffer_limits()`).
    var writeBufferLimits: (low: Int, high: Int) { get }

    /// Sets the write-buffer water marks: the protocol is paused above `high` and resumed at or
    /// below `low`.
    ///
    /// - Parameters:
    ///   - high: Default 64 KiB, or 4 × `low` when only `low` is given (saturating).
    ///   - low: Default `high / 4`.
    ///
    /// `high < low` or a negative mark is a programming error (precondition), as asyncio's
    /// `ValueError`.
    ///
    /// Corresponds to asyncio `transport.set_write_buffer_limits(high, low)`.
    func setWriteBufferLimits(high: Int?, low: Int?)

    /// Information by asyncio's names (`"peername"`, `"sockname"`, `"socket"`, and over TLS
    /// `"sslcontext"`, `"peercert"`, `"cipher"`, `"compression"`, `"ssl_object"`); nil for names
    /// it does not know (asyncio `get_extra_info(name)`).
    func extraInfo(_ name: String) -> Any?

    /// The peer's address, captured when the connection was made (asyncio `"peername"`).
    var peerAddress: SocketAddress? { get }

    /// The local address, captured when the connection was made (asyncio `"sockname"`).
    var localAddress: SocketAddress? { get }
}

extension Transport {
    /// Sets the high-water mark (the low one becomes `high / 4`).
    public func setWriteBufferLimits(high: Int) { setWriteBufferLimits(high: high, low: nil) }

    /// Sets the low-water mark (the high one becomes 4 × `low`).
    public func setWriteBufferLimits(low: Int) { setWriteBufferLimits(high: nil, low: low) }

    /// Restores asyncio's default water marks (64 KiB and 16 KiB).
    public func setWriteBufferLimits() { setWriteBufferLimits(high: nil, low: nil) }

    /// Queues every chunk in order; on one transport they go out in one gathered send where
    /// possible (asyncio `writelines(list_of_data)`).
    public func writeLines<Chunks: Sequence>(_ chunks: Chunks) where Chunks.Element: Collection<UInt8> {
        for chunk in chunks {
            if let bytes = chunk as? Bytes { write(bytes) } else { write(chunk) }
        }
    }
}

/// The water marks asyncio's transports start with.
package enum WriteBufferDefaults {
    package static let high = 64 * 1024

    /// asyncio's rules: `high` defaults to 64 KiB or 4 × `low`, `low` to `high / 4`.
    package static func limits(high: Int?, low: Int?) -> (low: Int, high: Int) {
        // 4 × low saturates: any low is accepted, and a high beyond Int.max means no limit anyway.
        let high = high ?? low.map { $0.multipliedReportingOverflow(by: 4) }.map { $1 ? Int.max : $0 } ?? Self.high
        let low = low ?? high / 4
        precondition(high >= low && low >= 0, "high (\(high)) must be >= low (\(low)) must be >= 0")
        return (low, high)
    }
}
