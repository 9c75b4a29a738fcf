internal import CTLS
internal import Glibc
@_spi(UringInternals) import UringRuntime

/// The OpenSSL context (`SSL_CTX`) built from one ``TLSConfiguration`` value: trust roots,
/// certificate and key loaded, verification mode and ALPN set. Shared by every connection whose
/// configuration is equal, as asyncio connections share an `SSLContext`.
package final class TLSContext: @unchecked Sendable {
    // Sendable: the SSL_CTX is fully configured in init and never changed afterwards; OpenSSL lets
    // threads create connections (SSL_new) from one context concurrently.

    package let configuration: TLSConfiguration
    let pointer: OpaquePointer
    private let alpnList: UnsafeMutableRawPointer?

    /// Builds the context; reads the PEM files now.
    ///
    /// - Throws: ``StreamError/invalidArgument(_:)`` naming the file and OpenSSL's reason when a
    ///   certificate, key or trust file cannot be loaded.
    init(_ configuration: TLSConfiguration) throws {
        self.configuration = configuration
        let method = configuration.role == .client ? TLS_client_method() : TLS_server_method()
        ERR_clear_error()
        guard let context = SSL_CTX_new(method) else {
            throw StreamError.invalidArgument("cannot create a TLS context: \(TLSError.lastReason())")
        }
        var alpnList: UnsafeMutableRawPointer?
        do {
            guard ctls_ctx_configure_defaults(context) == 1 else {
                throw StreamError.invalidArgument("cannot require TLS 1.2: \(TLSError.lastReason())")
            }
            try Self.loadTrustRoots(configuration.trustRoots, into: context)
            try Self.loadCertificate(configuration, into: context)
            if configuration.verifyPeer {
                var mode = SSL_VERIFY_PEER
                if configuration.role == .server { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
                SSL_CTX_set_verify(context, mode, nil)
            } else {
                SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
            }
            if !configuration.alpn.isEmpty {
                let wire = try Self.alpnWireFormat(configuration.alpn)
                if configuration.role == .client {
                    // Returns 0 on success, unlike most of OpenSSL.
                    guard SSL_CTX_set_alpn_protos(context, wire, UInt32(wire.count)) == 0 else {
                        throw StreamError.invalidArgument("cannot set ALPN protocols: \(TLSError.lastReason())")
                    }
                } else {
                    alpnList = ctls_ctx_set_alpn_server(context, wire, UInt32(wire.count))
                    guard alpnList != nil else { throw StreamError.invalidArgument("out of memory for ALPN") }
                }
            }
        } catch {
            SSL_CTX_free(context)
            free(alpnList)
            throw error
        }
        pointer = context
        self.alpnList = alpnList
    }

    deinit {
        SSL_CTX_free(pointer)
        free(alpnList)
    }

    private static func loadTrustRoots(_ roots: TLSConfiguration.TrustRoots?, into context: OpaquePointer) throws {
        switch roots {
        case nil:
            return
        case .system:
            // Reads SSL_CERT_FILE / SSL_CERT_DIR when set, else OpenSSL's compiled-in paths.
            guard SSL_CTX_set_default_verify_paths(context) == 1 else {
                throw StreamError.invalidArgument("cannot load the system trust roots: \(TLSError.lastReason())")
            }
        case .file(let path):
            guard SSL_CTX_load_verify_locations(context, path, nil) == 1 else {
                throw StreamError.invalidArgument("cannot load trust roots from \(path): \(TLSError.lastReason())")
            }
        }
    }

    private static func loadCertificate(_ configuration: TLSConfiguration, into context: OpaquePointer) throws {
        guard let certificate = configuration.certificateFile else {
            if configuration.privateKeyFile != nil {
                throw StreamError.invalidArgument("a private key needs its certificate (certificateFile)")
            }
            return
        }
        // As Python's load_cert_chain: without a key file, the key is in the certificate file.
        let key = configuration.privateKeyFile ?? certificate
        guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
            throw StreamError.invalidArgument("cannot load certificate \(certificate): \(TLSError.lastReason())")
        }
        guard SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1 else {
            throw StreamError.invalidArgument("cannot load private key \(key): \(TLSError.lastReason())")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw StreamError.invalidArgument(
                "private key \(key) does not match certificate \(certificate): \(TLSError.lastReason())")
        }
    }

    /// ALPN's wire format: each protocol name preceded by its length.
    private static func alpnWireFormat(_ protocols: [String]) throws -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard (1...255).contains(bytes.count) else {
                throw StreamError.invalidArgument("ALPN protocol names must be 1 to 255 bytes: '\(name)'")
            }
            wire.append(UInt8(bytes.count))
            wire += bytes
        }
        return wire
    }

    // MARK: The shared contexts

    /// Contexts by configuration. Bounded: a program that keeps making new configurations (say, a
    /// new ALPN list per request) starts over rather than growing without end; connections keep
    /// their own context alive.
    private static let cache = Locked<[TLSConfiguration: TLSContext]>([:])
    private static let cacheCapacity = 64

    /// The context for `configuration`, built on first use.
    ///
    /// - Throws: As ``init(_:)``.
    package static func shared(for configuration: TLSConfiguration) throws -> TLSContext {
        if let context = cache.withLock({ $0[configuration] }) { return context }
        // Built outside the lock: loading files may take a while. Two first uses at once build twice
        // and keep one, which is harmless.
        let context = try TLSContext(configuration)
        return cache.withLock { cache in
            if let existing = cache[configuration] { return existing }
            if cache.count >= cacheCapacity { cache.removeAll() }
            cache[configuration] = context
            return context
        }
    }
}

/// OpenSSL's error queue as text and as ``StreamError``s.
enum TLSError {
    /// The reason of the most recent error on this thread's queue (which it empties).
    static func lastReason() -> String {
        var last: UInt = 0
        while case let code = ERR_get_error(), code != 0 { last = code }
        return last == 0 ? "unknown error" : text(of: last)
    }

    static func text(of code: UInt) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer in
            ctls_error_text(code, buffer.baseAddress!, 256)
            return String(cString: buffer.baseAddress!)
        }
    }

    /// The error for a failed handshake or record operation, from the queue and the verify result.
    ///
    /// A certificate the peer or we refused is ``StreamError/tlsCertificateRejected(_:)``; every
    /// other protocol failure is ``StreamError/tlsHandshakeFailed(_:)``.
    static func current(ssl: OpaquePointer) -> StreamError {
        var first: UInt = 0
        while case let code = ERR_get_error(), code != 0 {
            if first == 0 { first = code }
        }
        guard first != 0 else { return .tlsHandshakeFailed("protocol error (no reason given by OpenSSL)") }
        if ctls_error_is_verify_failure(first) == 1 {
            let result = SSL_get_verify_result(ssl)
            let reason = String(cString: X509_verify_cert_error_string(result))
            return .tlsCertificateRejected("certificate verify failed: \(reason)")
        }
        if ctls_error_is_certificate_rejection(first) == 1 {
            return .tlsCertificateRejected(text(of: first))
        }
        return .tlsHandshakeFailed(text(of: first))
    }
}
