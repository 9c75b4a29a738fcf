import Glibc
import Synchronization
import Testing
import UringStreams

/// `reusePort: true` on a group of several loops: one listening socket per loop, each loop serving
/// what its own socket accepts.
@Suite(.timeLimit(.minutes(1)))
struct ReusePortGroupTests {
    /// Opens `count` connections to `port`, each echoing one line, and returns the loops (by
    /// identity) their handlers ran on.
    private static func connectionLoops(
        count: Int, reusePort: Bool, group: EventLoopGroup
    ) async throws -> (loops: [ObjectIdentifier: Int], server: Server) {
        let seen = Mutex<[ObjectIdentifier: Int]>([:])
        let server = try await startServer(host: "127.0.0.1", port: 0, reusePort: reusePort, on: group) {
            reader, writer in
            if let loop = EventLoop.current {
                seen.withLock { $0[ObjectIdentifier(loop), default: 0] += 1 }
            }
            await echoLinesUntilEOF(reader, writer)
        }
        let port = try #require(server.addresses.first?.port)
        for index in 0..<count {
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
            #expect(try await roundTrip("line \(index)\n", reader: reader, writer: writer) == "line \(index)\n")
            writer.close()
            try await writer.waitClosed()
        }
        return (seen.withLock { $0 }, server)
    }

    @Test func connectionsSpreadOverEveryLoopsOwnSocket() async throws {
        try await withDeadline(20) {
            let group = EventLoopGroup(loopCount: 2)
            // The kernel hashes each connection's addresses and ports to a socket: with 40 source
            // ports the chance that one loop gets none is 2^-39.
            let (loops, server) = try await Self.connectionLoops(count: 40, reusePort: true, group: group)
            #expect(loops.count == 2)
            #expect(loops.values.reduce(0, +) == 40)
            // Every loop listens, yet the address is listed once, as asyncio lists one per address.
            #expect(server.addresses.count == 1)
            #expect(server.addresses.first?.port != 0)
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }

    @Test func closingClosesEveryLoopsSocket() async throws {
        try await withDeadline(20) {
            let group = EventLoopGroup(loopCount: 2)
            let (_, server) = try await Self.connectionLoops(count: 4, reusePort: true, group: group)
            let port = try #require(server.addresses.first?.port)
            server.close()
            await server.waitClosed()
            #expect(server.addresses.isEmpty)
            // No copy is left listening: every attempt is refused, whichever socket it would hash to.
            for _ in 0..<8 {
                await #expect(throws: StreamError.self) { _ = try await openConnection(host: "127.0.0.1", port: port) }
            }
            // And the port can be bound again without SO_REUSEPORT (no socket of ours holds it).
            let again = try await startServer(host: "127.0.0.1", port: port, on: group) { _, writer in
                writer.close()
            }
            again.close()
            await again.waitClosed()
            try await group.shutdown()
        }
    }

    @Test func everyInterfaceWithPortZeroListsEachSocketOnce() async throws {
        try await withDeadline(20) {
            let group = EventLoopGroup(loopCount: 2)
            // nil host: one socket per family (IPv4, and IPv6 where the kernel has it), per loop.
            let server = try await startServer(host: nil, port: 0, reusePort: true, on: group) { reader, writer in
                await echoLinesUntilEOF(reader, writer)
            }
            // As asyncio: port 0 gives each family's socket its own free port; every loop's copy
            // of a socket shares that socket's port, and each address is listed once.
            #expect(server.addresses.allSatisfy { $0.port != 0 })
            #expect(Set(server.addresses.map(\.family)).count == server.addresses.count)
            let inet = try #require(server.addresses.first { $0.family == .inet })
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: inet.port)
            #expect(try await roundTrip("hi\n", reader: reader, writer: writer) == "hi\n")
            writer.close()
            try await writer.waitClosed()
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }

    @Test func withoutReusePortOneLoopAcceptsAndSpreads() async throws {
        try await withDeadline(20) {
            let group = EventLoopGroup(loopCount: 2)
            let (loops, server) = try await Self.connectionLoops(count: 4, reusePort: false, group: group)
            // Round robin: two each.
            #expect(loops.count == 2)
            #expect(loops.values.allSatisfy { $0 == 2 })
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }
}
