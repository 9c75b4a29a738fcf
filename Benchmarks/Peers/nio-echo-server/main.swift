import Glibc
import NIOCore
import NIOPosix
import NIOSSL

/// The SwiftNIO echo server of the comparison: one event loop thread, the canonical echo handler
/// (write what is read, flush once per read burst). Prints "listening on PORT".
/// With `--tls-cert` and `--tls-key`, an `NIOSSLServerHandler` (BoringSSL) sits in front of the
/// same echo handler, which then sees plaintext.

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

var host = "127.0.0.1"
var port = 0
var tlsCertificate: String?
var tlsKey: String?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--host": host = arguments.next() ?? host
    case "--port": port = Int(arguments.next() ?? "") ?? port
    case "--tls-cert": tlsCertificate = arguments.next()
    case "--tls-key": tlsKey = arguments.next()
    default: break
    }
}

/// One context for all connections, as a server normally has: the certificate and key are
/// loaded once, not per connection.
let sslContext: NIOSSLContext?
switch (tlsCertificate, tlsKey) {
case (let certificate?, let key?):
    let configuration = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
        privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
    sslContext = try NIOSSLContext(configuration: configuration)
case (nil, nil):
    sslContext = nil
default:
    let message = "nio-echo-server: --tls-cert and --tls-key go together\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let channel = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    // Captured by value: the initializer runs on the event loop, not where this top-level code runs.
    .childChannelInitializer { [sslContext] channel in
        channel.eventLoop.makeCompletedFuture {
            if let sslContext {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
            }
            try channel.pipeline.syncOperations.addHandler(EchoHandler())
        }
    }
    .bind(host: host, port: port)
    .wait()
// Unbuffered: a pipe reader must see the line while the server runs.
let line = "listening on \(channel.localAddress?.port ?? 0)\n"
_ = line.withCString { write(1, $0, strlen($0)) }
try channel.closeFuture.wait()
