/// TLS settings for a connection or a server (asyncio's `ssl.SSLContext`).
///
/// The configuration is complete; the TLS engine that uses it is not part of this build yet, so
/// passing one to a stream function throws ``StreamError/invalidArgument(_:)`` naming that.
public struct TLSConfiguration: Sendable {
    /// Where trusted certificates come from.
    public enum TrustRoots: Sendable {
        /// The system store; honours `SSL_CERT_FILE` and `SSL_CERT_DIR`.
        case system
        /// A PEM file.
        case file(String)
    }

    public enum Role: Sendable { case client, server }

    public var role: Role
    public var trustRoots: TrustRoots?
    public var certificateFile: String?
    public var privateKeyFile: String?
    public var verifyPeer: Bool
    public var alpn: [String]

    /// A client configuration (asyncio `ssl=True` or `ssl.create_default_context()`).
    public static func client(
        trustRoots: TrustRoots = .system, certificateFile: String? = nil, privateKeyFile: String? = nil,
        verifyPeer: Bool = true, alpn: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client, trustRoots: trustRoots, certificateFile: certificateFile, privateKeyFile: privateKeyFile,
            verifyPeer: verifyPeer, alpn: alpn)
    }

    /// A server configuration; non-nil `clientTrustRoots` requires client certificates.
    public static func server(
        certificateFile: String, privateKeyFile: String, clientTrustRoots: TrustRoots? = nil, alpn: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server, trustRoots: clientTrustRoots, certificateFile: certificateFile,
            privateKeyFile: privateKeyFile, verifyPeer: clientTrustRoots != nil, alpn: alpn)
    }

    static let unavailable = StreamError.invalidArgument(
        "TLS is not available in this build of UringStreams yet (tls:, startTLS)")
}
