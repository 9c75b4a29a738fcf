import Glibc
import UringRing

extension EventLoop {
    /// Connects a new stream socket to `address` through the ring; returns the connected descriptor.
    ///
    /// - Throws: ``StreamError`` for a refused or failed connect, `CancellationError` when the task
    ///   was cancelled (the socket is closed either way).
    package func connect(to address: SocketAddress, from localAddress: SocketAddress? = nil) async throws -> Int32 {
        precondition(inEventLoop)
        let fd = try SocketDescriptor.make(family: address.family)
        do {
            if let localAddress { try SocketDescriptor.bind(fd, to: localAddress) }
            // The kernel reads the address asynchronously: keep it in memory that outlives the wait.
            let storage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
            defer { storage.deallocate() }
            storage.initialize(to: sockaddr_storage())
            let length = address.fill(&storage.pointee)
            let result = await perform(.connect(fd: fd, address: UnsafeRawPointer(storage), length: length))
            if result == -ECANCELED && Task.isCancelled { throw CancellationError() }
            if result == -ESHUTDOWN { throw ringFailure }
            if result < 0 { throw StreamError.from(errno: -result, operation: "connect(\(address))") }
            if address.family != .unix {
                // Small writes go out at once, as asyncio sets TCP_NODELAY on its transports.
                try? SocketDescriptor.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }
}
