/// What a connection reports to its owner: the callbacks of asyncio's `Protocol`, called on the
/// connection's loop thread, synchronously, in order: ``connectionMade(_:)`` once, then any number
/// of ``dataReceived(_:)``, at most one ``eofReceived()``, and ``connectionLost(_:)`` once.
///
/// A protocol object belongs to one connection and is used only on its loop, so it needs no
/// locks of its own. Every callback but ``dataReceived(_:)`` has a default that does nothing
/// (``eofReceived()``'s returns false, closing the connection).
///
/// Corresponds to asyncio `asyncio.Protocol`.
public protocol StreamProtocol: AnyObject {
    /// The connection is up; `transport` is how to write to it, pause it and close it.
    ///
    /// Corresponds to asyncio `connection_made(transport)`.
    func connectionMade(_ transport: any Transport)

    /// Bytes arrived. They may point straight into the loop's receive buffers: keeping them keeps
    /// that memory (see docs/buffer-ownership.md).
    ///
    /// Corresponds to asyncio `data_received(data)`.
    func dataReceived(_ data: Bytes)

    /// The peer sent end of file. Return false to close the connection (the default), true to
    /// keep the write half open and close it yourself.
    ///
    /// Corresponds to asyncio `eof_received()`.
    func eofReceived() -> Bool

    /// The connection is closed; `error` is nil for an orderly close (asyncio
    /// `connection_lost(exc)`).
    func connectionLost(_ error: (any Error)?)

    /// More than the high-water mark is queued: stop writing for now (asyncio `pause_writing()`).
    func pauseWriting()

    /// The queue is down to the low-water mark: writing may go on (asyncio `resume_writing()`).
    func resumeWriting()
}

extension StreamProtocol {
    public func connectionMade(_ transport: any Transport) {}
    public func eofReceived() -> Bool { false }
    public func connectionLost(_ error: (any Error)?) {}
    public func pauseWriting() {}
    public func resumeWriting() {}
}

/// A protocol that reads received bytes in place, without keeping them: the receive buffer goes
/// back to the kernel as soon as ``bytesReceived(_:)`` returns, so a connection never holds
/// receive memory between callbacks (the lowest memory per connection).
///
/// asyncio's `BufferedProtocol` lets the protocol hand out the buffer (`get_buffer`) and then
/// says how much was filled (`buffer_updated`). With io_uring's provided buffers the kernel
/// picks the buffer, so here the callback is given the filled bytes to consume before it
/// returns; copy what must outlive the call. ``StreamProtocol/dataReceived(_:)`` is not called
/// for such a protocol.
///
/// Corresponds to asyncio `asyncio.BufferedProtocol` (`get_buffer` + `buffer_updated`).
public protocol BufferedStreamProtocol: StreamProtocol {
    /// Bytes arrived; `buffer` is valid only until this returns.
    func bytesReceived(_ buffer: UnsafeRawBufferPointer)
}

extension BufferedStreamProtocol {
    /// Not called for a buffered protocol: ``bytesReceived(_:)`` is.
    public func dataReceived(_ data: Bytes) {
        data.withUnsafeBytes { bytesReceived($0) }
    }
}
