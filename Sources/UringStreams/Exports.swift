// What users of the streams API need from the runtime: EventLoop, EventLoopGroup, Bytes,
// SocketAddress, AddressFamily, StreamError, StreamTransport.
@_exported import UringRuntime
