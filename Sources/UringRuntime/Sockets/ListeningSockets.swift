import Glibc

extension SocketDescriptor {
    /// One bound, not yet listening stream socket per address, for a TCP server; asyncio's
    /// `create_server` socket set-up.
    ///
    /// Addresses whose family the kernel does not support (IPv6 disabled) are skipped, as asyncio
    /// skips them; each IPv6 socket is `IPV6_V6ONLY`, so a wildcard server gets one socket per
    /// family instead of the IPv6 one also claiming IPv4 (which would make the IPv4 bind fail).
    ///
    /// - Parameters:
    ///   - addresses: What to bind, from the resolver with `AI_PASSIVE`.
    ///   - reuseAddress: Sets `SO_REUSEADDR` (rebinding a port whose old connections linger).
    ///   - reusePort: Sets `SO_REUSEPORT` (several sockets, even of other processes, share the port).
    /// - Returns: The descriptors, in the order of `addresses`; the caller owns them.
    /// - Throws: ``StreamError`` for the first socket, option or bind failure (every socket made
    ///   so far is closed), or when there is no address or none of a supported family.
    package static func bindForListening(_ addresses: [SocketAddress], reuseAddress: Bool, reusePort: Bool)
        throws(StreamError) -> [Int32]
    {
        guard !addresses.isEmpty else { throw StreamError.invalidArgument("getaddrinfo() returned no address") }
        var descriptors: [Int32] = []
        do {
            for address in addresses {
                let fd: Int32
                do {
                    fd = try make(family: address.family)
                } catch .system(let code, _) where code == EAFNOSUPPORT || code == EPROTONOSUPPORT {
                    continue
                }
                descriptors.append(fd)
                if reuseAddress { try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
                if reusePort { try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
                if address.family == .inet6 { try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
                try bind(fd, to: address)
            }
        } catch {
            for fd in descriptors { Glibc.close(fd) }
            throw error
        }
        guard !descriptors.isEmpty else {
            throw StreamError.system(
                errno: EAFNOSUPPORT, operation: "socket(\(addresses.map(\.description).joined(separator: ", ")))")
        }
        return descriptors
    }
}
