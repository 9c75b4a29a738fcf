/// TLS settings for a connection or a server (asyncio's `ssl.SSLContext`).
///
/// A configuration is a value; the OpenSSL context built from it is made once per distinct value
/// and shared by every connection that uses an equal configuration, as one `SSLContext` is shared
/// in asyncio. Files are read when the first connection or server uses the value.
///
/// Corresponds to asyncio's `ssl=` argument (`True`, or an `ssl.SSLContext`).
public struct TLSConfiguration: Sendable, Hashable {
    /// Where trusted certificates come from.
    public enum TrustRoots: Sendable, Hashable {
        /// OpenSSL's default store: the `SSL_CERT_FILE` file and `SSL_CERT_DIR` directory when those
        /// environment variables are set, else the system's (Debian: /etc/ssl/certs). Python's
        /// `ssl.create_default_context()` loads the same.
        case system
        /// A PEM file of one or more CA certificates.
        case file(String)
    }

    /// Which end of the handshake the configuration is for.
    public enum Role: Sendable, Hashable { case client, server }

    /// Client or server.
    public var role: Role
    /// Certificates that verify the peer: the server's for a client, clients' for a server.
    public var trustRoots: TrustRoots?
    /// Our certificate chain (PEM): the server's, or a client certificate.
    public var certificateFile: String?
    /// The private key of `certificateFile` (PEM, unencrypted).
    public var privateKeyFile: String?
    /// Whether the peer's certificate chain (and, for a client, its host name) is verified.
    public var verifyPeer: Bool
    /// ALPN protocols in order of preference, e.g. `["h2", "http/1.1"]`.
    public var alpn: [String]

    /// A client configuration.
    ///
    /// - Parameters:
    ///   - trustRoots: The CAs that verify the server; default the system store.
    ///   - certificateFile: A client certificate chain (PEM), for servers that ask for one.
    ///   - privateKeyFile: Its private key (PEM); default: `certificateFile` (a file holding both).
    ///   - verifyPeer: Verify the server's chain and host name (default true); false is asyncio's
    ///     `check_hostname = False` with `verify_mode = CERT_NONE`.
    ///   - alpn: Protocols to offer.
    /// - Returns: The configuration.
    ///
    /// Corresponds to asyncio `ssl=True`, or `ssl.create_default_context()` with
    /// `load_verify_locations`, `load_cert_chain` and `set_alpn_protocols`.
    public static func client(
        trustRoots: TrustRoots = .system, certificateFile: String? = nil, privateKeyFile: String? = nil,
        verifyPeer: Bool = true, alpn: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client, trustRoots: trustRoots, certificateFile: certificateFile, privateKeyFile: privateKeyFile,
            verifyPeer: verifyPeer, alpn: alpn)
    }

    /// A server configuration.
    ///
    /// - Parameters:
    ///   - certificateFile: The server's certificate chain (PEM), leaf first.
    ///   - privateKeyFile: Its private key (PEM).
    ///   - clientTrustRoots: When non-nil, clients must present a certificate these CAs verify.
    ///   - alpn: Protocols the server accepts, in its order of preference.
    /// - Returns: The configuration.
    ///
    /// Corresponds to asyncio `ssl=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)` with
    /// `load_cert_chain`, and `verify_mode = CERT_REQUIRED` when client certificates are required.
    public static func server(
        certificateFile: String, privateKeyFile: String, clientTrustRoots: TrustRoots? = nil, alpn: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server, trustRoots: clientTrustRoots, certificateFile: certificateFile,
            privateKeyFile: privateKeyFile, verifyPeer: clientTrustRoots != nil, alpn: alpn)
    }
}
