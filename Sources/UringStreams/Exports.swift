// What users of the streams API need from the layers below: EventLoop, EventLoopGroup, Bytes,
// SocketAddress, AddressFamily, StreamError, Transport, StreamProtocol (UringRuntime) and the TLS
// configuration and transport (UringTLS).
@_exported import UringRuntime
@_exported import UringTLS

// The explicit platform check (the C shims below stop a SwiftPM build first with the same words).
#if !os(Linux)
    #error(
        "UringStreams needs Linux (io_uring); on other platforms depend on it with condition: .when(platforms: [.linux])"
    )
#endif
