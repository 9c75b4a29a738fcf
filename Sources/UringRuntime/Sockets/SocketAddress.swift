import Glibc

/// The address family of a socket.
public enum AddressFamily: Sendable, Hashable {
    case unspecified, inet, inet6, unix

    var rawValue: Int32 {
        switch self {
        case .unspecified: return AF_UNSPEC
        case .inet: return AF_INET
        case .inet6: return AF_INET6
        case .unix: return AF_UNIX
        }
    }
}

/// A numeric socket address: IPv4, IPv6 or a Unix socket path.
///
/// Corresponds to the tuples asyncio returns from `get_extra_info('peername')`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var family: AddressFamily
    /// The numeric host ("127.0.0.1", "::1"); "" for Unix sockets.
    public var host: String
    /// The port; 0 for Unix sockets.
    public var port: Int
    /// The path, for Unix sockets only. A leading NUL names Linux's abstract namespace.
    public var path: String?
    /// The IPv6 scope (interface) id; 0 otherwise.
    public var scopeID: UInt32 = 0

    /// An IPv4 or IPv6 address from a numeric host.
    ///
    /// - Parameters:
    ///   - host: A numeric IPv4 or IPv6 address; no name resolution happens here.
    ///   - port: 0 through 65535.
    /// - Throws: ``StreamError/invalidArgument(_:)`` for a non-numeric host or a port out of range.
    public init(host: String, port: Int) throws {
        guard (0...65535).contains(port) else {
            throw StreamError.invalidArgument("port must be 0-65535, not \(port)")
        }
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            family = .inet
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            family = .inet6
        } else {
            throw StreamError.invalidArgument("'\(host)' is not a numeric IPv4 or IPv6 address")
        }
        self.host = host
        self.port = port
        path = nil
    }

    /// A Unix socket address.
    ///
    /// - Parameter unixPath: A file system path, or a name starting with NUL for the abstract namespace.
    /// - Throws: ``StreamError/invalidArgument(_:)`` when the path is empty or longer than `sun_path`.
    public init(unixPath: String) throws {
        let limit = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        guard !unixPath.isEmpty, unixPath.utf8.count < limit else {
            throw StreamError.invalidArgument("a Unix socket path must have 1 to \(limit - 1) bytes: '\(unixPath)'")
        }
        family = .unix
        host = ""
        port = 0
        path = unixPath
    }

    /// A Unix socket, or an IPv4/IPv6 loopback address: traffic that never leaves this host.
    var isLoopback: Bool {
        switch family {
        case .unix: return true
        case .inet: return host.hasPrefix("127.")
        case .inet6: return host == "::1" || host.hasPrefix("::ffff:127.")
        case .unspecified: return false
        }
    }

    public var description: String {
        switch family {
        case .unix: return path ?? ""
        case .inet6: return "[\(host)]:\(port)"
        default: return "\(host):\(port)"
        }
    }
}

extension SocketAddress {
    /// Reads an address the kernel wrote; nil for families this API does not model.
    init?(storage: UnsafeRawPointer, length: socklen_t) {
        let family = Int32(storage.load(as: sa_family_t.self))
        switch family {
        case AF_INET:
            let address = storage.load(as: sockaddr_in.self)
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var raw = address.sin_addr
            inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
            self.family = .inet
            host = Self.string(fromNulTerminated: text)
            port = Int(UInt16(bigEndian: address.sin_port))
            path = nil
        case AF_INET6:
            let address = storage.load(as: sockaddr_in6.self)
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            var raw = address.sin6_addr
            inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
            self.family = .inet6
            host = Self.string(fromNulTerminated: text)
            port = Int(UInt16(bigEndian: address.sin6_port))
            path = nil
            scopeID = address.sin6_scope_id
        case AF_UNIX:
            self.family = .unix
            host = ""
            port = 0
            let offset = MemoryLayout<sa_family_t>.size
            let count = Int(length) - offset
            if count <= 0 {
                path = ""  // an unnamed socket (socketpair, unbound client), as asyncio's ''
            } else {
                let bytes = UnsafeRawBufferPointer(start: storage + offset, count: count)
                // Abstract names keep their leading NUL and every byte; paths end at the first NUL.
                let used = bytes.first == 0 ? Array(bytes) : Array(bytes.prefix { $0 != 0 })
                path = String(decoding: used, as: UTF8.self)
            }
        default:
            return nil
        }
    }

    private static func string(fromNulTerminated text: [CChar]) -> String {
        String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    func withSockAddr<R>(_ body: (UnsafeRawPointer, socklen_t) throws -> R) rethrows -> R {
        var storage = sockaddr_storage()
        let length = fill(&storage)
        return try withUnsafeBytes(of: &storage) { try body($0.baseAddress!, length) }
    }

    /// Writes this address into `storage`; returns its length.
    func fill(_ storage: inout sockaddr_storage) -> socklen_t {
        storage = sockaddr_storage()
        return withUnsafeMutableBytes(of: &storage) { raw -> socklen_t in
            switch family {
            case .inet:
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = UInt16(port).bigEndian
                inet_pton(AF_INET, host, &address.sin_addr)
                raw.storeBytes(of: address, as: sockaddr_in.self)
                return socklen_t(MemoryLayout<sockaddr_in>.size)
            case .inet6:
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                address.sin6_port = UInt16(port).bigEndian
                address.sin6_scope_id = scopeID
                inet_pton(AF_INET6, host, &address.sin6_addr)
                raw.storeBytes(of: address, as: sockaddr_in6.self)
                return socklen_t(MemoryLayout<sockaddr_in6>.size)
            case .unix, .unspecified:
                raw.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
                let bytes = Array((path ?? "").utf8)
                let offset = MemoryLayout<sa_family_t>.size
                for (i, byte) in bytes.enumerated() { raw[offset + i] = byte }
                // Abstract names are exactly as long as their bytes; paths carry a trailing NUL.
                let extra = bytes.first == 0 ? 0 : 1
                return socklen_t(offset + bytes.count + extra)
            }
        }
    }
}
