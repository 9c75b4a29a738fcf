internal import CTLS
import UringRuntime

/// The cipher a TLS connection negotiated (asyncio `get_extra_info("cipher")`, the tuple
/// `(name, protocol, secret_bits)`).
public struct TLSCipher: Sendable, Hashable {
    /// OpenSSL's name of the cipher suite, e.g. `"TLS_AES_256_GCM_SHA384"`.
    public let name: String
    /// The protocol version, e.g. `"TLSv1.3"`.
    public let protocolVersion: String
    /// The number of secret bits of the cipher.
    public let secretBits: Int
}

/// The peer's certificate, decoded as Python's `SSLObject.getpeercert()` decodes it
/// (asyncio `get_extra_info("peercert")`).
public struct TLSCertificate: Sendable, Hashable {
    /// The subject, as an RFC 2253 string (`"CN=localhost,O=Test"`).
    public let subject: String
    /// The issuer, as an RFC 2253 string.
    public let issuer: String
    /// The start of validity, as OpenSSL prints it (`"Nov 21 11:00:00 2026 GMT"`).
    public let notBefore: String
    /// The end of validity, in the same form.
    public let notAfter: String
    /// The subject alternative names, e.g. `["DNS:localhost", "IP Address:127.0.0.1"]`.
    public let subjectAlternativeNames: [String]
    /// The serial number in upper-case hexadecimal.
    public let serialNumber: String
    /// The certificate in DER form (Python's `getpeercert(binary_form=True)`).
    public let der: [UInt8]

    init(_ certificate: OpaquePointer) {
        func text(capacity: Int = 4096, _ write: (UnsafeMutablePointer<CChar>, Int) -> Int) -> String {
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: capacity) { buffer in
                let length = write(buffer.baseAddress!, capacity)
                return String(
                    decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: length), as: UTF8.self)
            }
        }
        subject = text { ctls_x509_name_text(certificate, 0, $0, $1) }
        issuer = text { ctls_x509_name_text(certificate, 1, $0, $1) }
        notBefore = text { ctls_x509_time_text(certificate, 0, $0, $1) }
        notAfter = text { ctls_x509_time_text(certificate, 1, $0, $1) }
        // CDN certificates list hundreds of names.
        let names = text(capacity: 1 << 16) { ctls_x509_alt_names_text(certificate, $0, $1) }
        subjectAlternativeNames = names.isEmpty ? [] : names.split(separator: ", ").map(String.init)
        serialNumber = text { ctls_x509_serial_text(certificate, $0, $1) }
        let length = i2d_X509(certificate, nil)
        var der = [UInt8](repeating: 0, count: max(Int(length), 0))
        if length > 0 {
            der.withUnsafeMutableBufferPointer { buffer in
                var cursor = buffer.baseAddress
                _ = i2d_X509(certificate, &cursor)
            }
        }
        self.der = der
    }
}

/// What a TLS connection negotiated, captured when its handshake finished: the Swift counterpart
/// of the `ssl.SSLObject` asyncio returns for `get_extra_info("ssl_object")`.
public struct TLSConnectionInfo: Sendable {
    /// The protocol version, e.g. `"TLSv1.3"` (`SSLObject.version()`).
    public let protocolVersion: String
    /// The negotiated cipher (`SSLObject.cipher()`).
    public let cipher: TLSCipher
    /// The ALPN protocol both ends chose, if any (`SSLObject.selected_alpn_protocol()`).
    public let alpnProtocol: String?
    /// The name the client checked the certificate against, a DNS name (also sent as SNI) or an
    /// IP address (not sent) (`SSLObject.server_hostname`); nil on the server side.
    public let serverHostname: String?
    /// The peer's certificate, when it sent one (`SSLObject.getpeercert()`).
    public let peerCertificate: TLSCertificate?
    /// Whether this side is the server (`SSLObject.server_side`).
    public let isServer: Bool
    /// The configuration the connection was made with (asyncio `"sslcontext"`).
    public let configuration: TLSConfiguration

    /// Reads the negotiated parameters of `ssl`, whose handshake has finished.
    init(ssl: OpaquePointer, serverHostname: String?, configuration: TLSConfiguration) {
        let cipher = SSL_get_current_cipher(ssl)
        let version = String(cString: SSL_get_version(ssl))
        protocolVersion = version
        self.cipher = TLSCipher(
            name: cipher.map { String(cString: SSL_CIPHER_get_name($0)) } ?? "",
            protocolVersion: version,
            secretBits: cipher.map { Int(SSL_CIPHER_get_bits($0, nil)) } ?? 0)
        var selected: UnsafePointer<UInt8>?
        var selectedLength: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &selected, &selectedLength)
        if let selected, selectedLength > 0 {
            alpnProtocol = String(
                decoding: UnsafeBufferPointer(start: selected, count: Int(selectedLength)), as: UTF8.self)
        } else {
            alpnProtocol = nil
        }
        self.serverHostname = serverHostname
        if let certificate = SSL_get1_peer_certificate(ssl) {
            peerCertificate = TLSCertificate(certificate)
            X509_free(certificate)
        } else {
            peerCertificate = nil
        }
        isServer = configuration.role == .server
        self.configuration = configuration
    }
}
