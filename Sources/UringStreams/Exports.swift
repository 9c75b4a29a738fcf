// What users of the streams API need from the layers below: EventLoop, EventLoopGroup, Bytes,
// SocketAddress, AddressFamily, StreamError, Transport, StreamProtocol (UringRuntime) and the TLS
// configuration and transport (UringTLS).
@_exported import UringRuntime
@_exported import UringTLS
