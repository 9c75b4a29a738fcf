import Dispatch
import Glibc

/// Name resolution. `getaddrinfo` blocks, so it runs on a small pool off the loop and the awaiting
/// task resumes on its own executor (the loop) afterwards. Numeric hosts skip the pool.
package enum Resolver {
    private static let pool = DispatchQueue(label: "uring-streams.resolver", attributes: .concurrent)

    /// The stream addresses for `host` and `port`, in the order `getaddrinfo` gives them.
    ///
    /// - Parameters:
    ///   - host: A name or numeric address; nil means the wildcard (with `passive`) or loopback.
    ///   - passive: Addresses to bind a server to (`AI_PASSIVE`).
    /// - Throws: ``StreamError/system(errno:operation:)`` with the resolver's message in `operation`.
    package static func resolve(host: String?, port: Int, family: AddressFamily, passive: Bool)
        async throws(StreamError)
        -> [SocketAddress]
    {
        guard (0...65535).contains(port) else { throw StreamError.invalidArgument("port must be 0-65535, not \(port)") }
        guard family != .unix else {
            throw StreamError.invalidArgument("family .unix has no host and port: use the Unix socket functions")
        }
        if let host, let numeric = try? SocketAddress(host: host, port: port) {
            guard family == .unspecified || family == numeric.family else {
                // getaddrinfo would only say "Address family for hostname not supported".
                throw StreamError.invalidArgument("'\(host)' is an .\(numeric.family) address but family is .\(family)")
            }
            return [numeric]
        }
        let result: Result<[SocketAddress], StreamError> = await withCheckedContinuation { continuation in
            pool.async {
                continuation.resume(returning: lookUp(host: host, port: port, family: family, passive: passive))
            }
        }
        return try result.get()
    }

    private static func lookUp(host: String?, port: Int, family: AddressFamily, passive: Bool) -> Result<
        [SocketAddress], StreamError
    > {
        var hints = addrinfo()
        hints.ai_family = family.rawValue
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            // Like Python's socket.gaierror: the resolver's own (negative) code; `errno` only
            // means something for EAI_SYSTEM.
            let code = status == EAI_SYSTEM ? errno : status
            return .failure(.system(errno: code, operation: "getaddrinfo(\(host ?? "nil"), \(port))"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var cursor = list
        while let entry = cursor {
            if let address = SocketAddress(storage: entry.pointee.ai_addr, length: entry.pointee.ai_addrlen),
                !addresses.contains(address)
            {
                addresses.append(address)
            }
            cursor = entry.pointee.ai_next
        }
        return .success(addresses)
    }
}
