import Glibc

/// Synchronous socket set-up calls. They never block on the network (creating, binding, setting
/// options), so they run inline; everything that waits goes through the ring.
package enum SocketDescriptor {
    package static func make(family: AddressFamily, type: Int32 = Int32(SOCK_STREAM.rawValue)) throws(StreamError)
        -> Int32
    {
        let fd = socket(family.rawValue, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw StreamError.from(errno: errno, operation: "socket") }
        return fd
    }

    package static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(StreamError) {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw StreamError.from(errno: errno, operation: "setsockopt")
        }
    }

    package static func bind(_ fd: Int32, to address: SocketAddress) throws(StreamError) {
        let result = address.withSockAddr { Glibc.bind(fd, $0.assumingMemoryBound(to: sockaddr.self), $1) }
        guard result == 0 else { throw StreamError.from(errno: errno, operation: "bind(\(address))") }
    }

    package static func listen(_ fd: Int32, backlog: Int) throws(StreamError) {
        guard Glibc.listen(fd, Int32(clamping: backlog)) == 0 else {
            throw StreamError.from(errno: errno, operation: "listen")
        }
    }

    package static func localAddress(of fd: Int32) -> SocketAddress? {
        address(of: fd, getsockname)
    }

    package static func peerAddress(of fd: Int32) -> SocketAddress? {
        address(of: fd, getpeername)
    }

    private static func address(
        of fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutableBytes(of: &storage) { raw -> SocketAddress? in
            guard call(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length) == 0 else { return nil }
            return SocketAddress(storage: raw.baseAddress!, length: length)
        }
    }

    /// The family of `fd`, which must be a stream socket (what `sock=` arguments accept).
    /// - Throws: ``StreamError/invalidArgument(_:)`` for a descriptor that is not a stream socket.
    package static func streamSocketFamily(of fd: Int32) throws(StreamError) -> Int32 {
        let kind = try kind(of: fd)
        guard kind.type == Int32(SOCK_STREAM.rawValue) else {
            throw StreamError.invalidArgument("file descriptor \(fd) is not a stream socket")
        }
        return kind.family
    }

    /// The socket's family and type (SO_DOMAIN, SO_TYPE); throws for a non-socket descriptor.
    private static func kind(of fd: Int32) throws(StreamError) -> (family: Int32, type: Int32) {
        var domain: Int32 = 0
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 else {
            throw StreamError.invalidArgument(
                "file descriptor \(fd) is not a socket (\(String(cString: strerror(errno))))")
        }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
            throw StreamError.from(errno: errno, operation: "getsockopt(SO_TYPE)")
        }
        return (domain, type)
    }

    /// Whether the socket is listening (SO_ACCEPTCONN).
    package static func isListening(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }
}
