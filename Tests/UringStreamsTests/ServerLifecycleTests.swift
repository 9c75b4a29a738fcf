import Glibc
import Synchronization
import TestChildProcesses
import Testing
import UringStreams

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// A server's descriptors and loops at the edges of their lives: closing after the group shut
/// down, closing while it starts serving, binding the port again after waitClosed, and a loop
/// whose ring could not be made.
@Suite(.timeLimit(.minutes(1)))
struct ServerLifecycleTests {
    /// After the group shut down, the listening descriptor is closed and its number may belong to
    /// someone else: closing the server must not shut that down.
    @Test func closeAfterTheGroupShutDownLeavesReusedDescriptorsAlone() async throws {
        try await withDeadline {
            // Parallel tests may take the freed number first (the lowest free number goes to the
            // next socket anyone opens, and a busy suite opens many while this one is between
            // shutdown and F_DUPFD): try servers until one's number is ours to take, pausing
            // between tries so a burst of other tests' sockets can close again.
            var checked = false
            for attempt in 0..<50 where !checked {
                if attempt > 0 { try await settle(20) }
                let group = EventLoopGroup(loopCount: 1)
                let server = try await startServer(host: "127.0.0.1", port: 0, on: group) { _, writer in
                    writer.close()
                }
                let port = try #require(server.addresses.first).port
                let listening = try #require(RawSocket.descriptors(boundToPort: port).first)
                try await group.shutdown()
                // The loop's shutdown closed the listener; take its number for a socket pair.
                let (a, b) = try RawSocket.pair()
                defer { RawSocket.close(b) }
                // F_DUPFD takes the lowest free number from `listening` on: never someone else's.
                let taken = fcntl(a, F_DUPFD_CLOEXEC, listening)
                guard taken == listening else {
                    if taken >= 0 { RawSocket.close(taken) }
                    RawSocket.close(a)
                    server.close()
                    continue
                }
                RawSocket.close(a)
                defer { RawSocket.close(listening) }
                server.close()
                await server.waitClosed()
                // Blocking reads (a second at most when the pair was shut down): on a thread.
                let (toB, toListening) = try await onThread {
                    try RawSocket.writeAll(listening, utf8("x"))
                    try RawSocket.writeAll(b, utf8("y"))
                    return (
                        try RawSocket.read(b, timeoutMilliseconds: 1_000),
                        try RawSocket.read(listening, timeoutMilliseconds: 1_000)
                    )
                }
                #expect(toB == utf8("x"))
                #expect(toListening == utf8("y"))
                checked = true
            }
            #expect(checked, "the listener's number was never free after the shutdown")
        }
    }

    /// isServing is true only once the sockets listen: a client that connects the moment it sees
    /// isServing (CPython's test client does, from a thread) is never refused.
    @Test func isServingMeansTheSocketListens() async throws {
        try await withDeadline(30) {
            for _ in 0..<300 {
                let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { _, writer in
                    writer.close()
                }
                let port = try #require(server.addresses.first).port
                let watching = Atomic<Bool>(false)
                // Spins (no sleep, to see the change at once) on a thread of its own, its socket
                // made beforehand so the connect follows isServing as closely as it can.
                async let refused: Int32? = onThread {
                    let client = socket(AF_INET, RawSocket.streamType, 0)
                    defer { RawSocket.close(client) }
                    var address = sockaddr_in()
                    address.sin_family = sa_family_t(AF_INET)
                    address.sin_port = UInt16(port).bigEndian
                    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
                    watching.store(true, ordering: .releasing)
                    let end = ContinuousClock.now.advanced(by: .seconds(5))
                    while !server.isServing {
                        guard ContinuousClock.now < end else { throw DeadlineExceeded(seconds: 5) }
                    }
                    let result = withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                    return result == 0 ? nil : errno
                }
                while !watching.load(ordering: .acquiring) { await Task.yield() }
                try await server.startServing()
                let error = try await refused
                #expect(error == nil, "connect right after isServing failed: \(String(cString: strerror(error ?? 0)))")
                server.close()
                await server.waitClosed()
                if error != nil { break }
            }
        }
    }

    /// startServing and close racing: whoever wins, no listener keeps accepting afterwards and the
    /// descriptor is closed once.
    @Test func startServingRacingCloseLeavesNothingListening() async throws {
        try await withDeadline(30) {
            for _ in 0..<40 {
                let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { _, writer in
                    writer.close()
                }
                let port = try #require(server.addresses.first).port
                let ours = SocketTable.ownInodes(boundToPort: port)
                async let serving: Void = { try? await server.startServing() }()
                server.close()
                await serving
                await server.waitClosed()
                try await SocketTable.expectRefused(port: port, closed: ours) {
                    RawSocket.close(try RawSocket.connectTCP(port: port))
                }
            }
        }
    }

    /// asyncio closes the listening sockets in close(): once waitClosed returns, the port can be
    /// bound again, even without SO_REUSEADDR.
    @Test func thePortCanBeBoundAgainAfterWaitClosed() async throws {
        try await withDeadline(30) {
            for _ in 0..<20 {
                // A port asked for by number stays bound to its socket until that socket is closed
                // (port 0 would be given back by shutdown already).
                var server: Server?
                var port = 0
                for _ in 0..<5 where server == nil {
                    port = try RawSocket.unusedPort()
                    server = try? await startServer(host: "127.0.0.1", port: port) { _, writer in writer.close() }
                }
                let started = try #require(server)
                let ours = SocketTable.ownInodes(boundToPort: port)
                let spawns = ChildProcesses.mark()
                started.close()
                await started.waitClosed()
                guard try !Self.canBind(port) else { continue }
                // A parallel test may have taken the freed port first: its socket shows in the
                // table, or (bound, not listening) among this process's descriptors.
                let others = try await onThread { [port] in
                    SocketTable.inodes(boundToPort: port).union(SocketTable.ownInodes(boundToPort: port))
                        .subtracting(ours)
                }
                if !others.isEmpty { continue }
                // Or a parallel test was spawning a process, whose copy of our descriptors keeps
                // the socket until it has exec'd: then the port is free once that is done.
                if ChildProcesses.startedAround(spawns) {
                    try await ChildProcesses.waitForStarts()
                    if try Self.canBind(port) { continue }
                }
                Issue.record("port \(port) is still in use after waitClosed, by no other socket")
            }
        }
    }

    /// Whether a socket can be bound to loopback `port` now (false for `EADDRINUSE`).
    private static func canBind(_ port: Int) throws -> Bool {
        let descriptor = socket(AF_INET, RawSocket.streamType, 0)
        defer { RawSocket.close(descriptor) }
        do {
            try RawSocket.bindLoopback(descriptor, ipv6: false, port: port)
            return true
        } catch let error as SystemCallFailed where error.errno == EADDRINUSE {
            return false
        }
    }

    /// A group whose second loop has no ring (RLIMIT_MEMLOCK, say): accepted connections go to
    /// the loops that can serve them.
    @Test func connectionsSkipALoopWithoutARing() async throws {
        try await withDeadline {
            let made = Atomic<Int>(0)
            let real = EventLoop.defaultRing(.init())
            let group = EventLoopGroup(
                loopCount: 2, configuration: .init(),
                makeRing: { () throws(RingError) -> any RingBackend in
                    if made.add(1, ordering: .relaxed).oldValue == 1 { throw RingError.unavailable(reason: "no ring") }
                    return try real()
                })
            let working = try #require(group.loops.first { $0.unavailable == nil })
            let servedOn = Locked<[Int]>([])
            let server = try await startServer(host: "127.0.0.1", port: 0, on: group) { reader, writer in
                servedOn.update { $0.append(EventLoop.current?.id ?? -1) }
                await echoLinesUntilEOF(reader, writer)
            }
            let port = try #require(server.addresses.first).port
            for i in 0..<6 {
                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                #expect(try await roundTrip("line \(i)\n", reader: reader, writer: writer) == "line \(i)\n")
                writer.close()
            }
            #expect(servedOn.value == Array(repeating: working.id, count: 6))
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }
}
