// Connecting to a host with several addresses: asyncio's create_connection with and without
// happy_eyeballs_delay (RFC 8305), interleave, and how failures are reported.
//
// The address lists are given straight to the runtime's `connect(toAnyOf:)` (the function
// `openConnection` calls after resolving), so the order of the attempts does not depend on the
// resolver or on /etc/hosts. An address that does not answer is a `StalledListener`: a loopback
// listener whose queue is full, so the kernel drops the SYN and the connect stays pending.

import Foundation
import Glibc
import Testing
import UringStreams

@Suite(.timeLimit(.minutes(1)))
struct HappyEyeballsTests {
    /// Runs the multi-address connect on a loop of the shared group, as `openConnection` does.
    static func connect(
        _ addresses: [SocketAddress], from localAddress: SocketAddress? = nil, delay: Duration?,
        interleave: Int? = nil
    ) async throws -> Int32 {
        let loop = EventLoopGroup.shared.next()
        return try await withTaskExecutorPreference(loop) {
            try await loop.connect(
                toAnyOf: addresses, from: localAddress, happyEyeballsDelay: delay, interleave: interleave)
        }
    }

    static func loopback(_ port: Int) throws -> SocketAddress { try SocketAddress(host: "127.0.0.1", port: port) }

    /// A server that holds each connection open until the client closes it.
    static func holdingServer() throws -> BlockingServer {
        try BlockingServer { connection in _ = try? RawSocket.readToEOF(connection, timeoutMilliseconds: 10_000) }
    }

    // MARK: ordering

    @Test func interleaveAlternatesFamiliesKeepingEachFamilysOrder() throws {
        let v6 = try (1...3).map { try SocketAddress(host: "::1", port: $0) }
        let v4 = try (1...2).map { try SocketAddress(host: "127.0.0.1", port: $0) }
        let resolved = v6 + v4
        #expect(EventLoop.interleaved(resolved, firstFamilyCount: 1) == [v6[0], v4[0], v6[1], v4[1], v6[2]])
        #expect(EventLoop.interleaved(resolved, firstFamilyCount: 2) == [v6[0], v6[1], v4[0], v6[2], v4[1]])
        #expect(EventLoop.interleaved(resolved, firstFamilyCount: 9) == v6 + v4)
        #expect(EventLoop.interleaved(v4 + v6, firstFamilyCount: 1) == [v4[0], v6[0], v4[1], v6[1], v6[2]])
        #expect(EventLoop.interleaved([], firstFamilyCount: 1).isEmpty)
    }

    /// With a delay, interleave defaults to 1: the second attempt goes to the other family.
    @Test func happyEyeballsInterleavesByDefault() async throws {
        try await withDeadline {
            // Resolver order: two IPv4 addresses that refuse, then an IPv6 one that fails without a
            // packet (the local address is IPv4). Interleaved, the IPv6 address goes second.
            try await RawSocket.withRefusingPort { port in
                let refused = try Self.loopback(port)
                let v6 = try SocketAddress(host: "::1", port: port)
                let local = try SocketAddress(host: "127.0.0.1", port: 0)
                let interleaved = await #expect(throws: ConnectionAttemptsError.self) {
                    _ = try await Self.connect([refused, refused, v6], from: local, delay: .seconds(5))
                }
                #expect(interleaved?.attempts.map(\.address) == [refused, v6, refused])
                // interleave: 0 keeps the resolver's order.
                let inOrder = await #expect(throws: ConnectionAttemptsError.self) {
                    _ = try await Self.connect([refused, refused, v6], from: local, delay: .seconds(5), interleave: 0)
                }
                #expect(inOrder?.attempts.map(\.address) == [refused, refused, v6])
            }
        }
    }

    // MARK: staggered attempts

    /// The stalled first attempt holds the race for the delay, then the second address wins and
    /// the first attempt's socket is cancelled and closed.
    @Test func secondAddressWinsAfterTheDelayAndTheStalledAttemptIsClosed() async throws {
        try await withDeadline {
            let stalled = try await StalledListener()
            let server = try Self.holdingServer()
            defer { server.stop() }
            let clock = ContinuousClock()
            let start = clock.now
            let fd = try await Self.connect(
                [try Self.loopback(stalled.port), try Self.loopback(server.port)], delay: .milliseconds(150))
            let elapsed = clock.now - start
            defer { RawSocket.close(fd) }
            #expect(SocketDescriptor.peerAddress(of: fd)?.port == server.port)
            #expect(elapsed >= .milliseconds(140), "the second attempt started before the delay: \(elapsed)")
            // The stalled connect would only fail after about two minutes of SYN retries.
            #expect(elapsed < .seconds(5), "the second attempt waited for the first to fail: \(elapsed)")
            // The loser is cancelled, not left retrying its SYN: no socket connects to the stalled
            // port any more and none of this process's descriptors refers to one.
            #expect(try await SocketTable.eventually { SocketTable.connecting(towards: stalled.port) == 0 })
            #expect(
                try await SocketTable.eventually { SocketTable.ownSockets(towards: stalled.port, in: .synSent) == 0 })
            #expect(
                try await SocketTable.eventually { SocketTable.ownSockets(towards: server.port, in: .established) == 1 }
            )
        }
    }

    /// A failed attempt starts the next one at once instead of after the delay.
    @Test func aFailedAttemptStartsTheNextAtOnce() async throws {
        try await withDeadline(40) {
            let server = try Self.holdingServer()
            defer { server.stop() }
            let clock = ContinuousClock()
            let start = clock.now
            let fd = try await RawSocket.withRefusingPort { refused in
                try await Self.connect(
                    [try Self.loopback(refused), try Self.loopback(server.port)], delay: .seconds(30))
            }
            defer { RawSocket.close(fd) }
            #expect(clock.now - start < .seconds(15))
            #expect(SocketDescriptor.peerAddress(of: fd)?.port == server.port)
        }
    }

    /// Attempts that all connect (a delay of zero) leave exactly one socket: the winner's.
    @Test func simultaneousWinnersLeaveOneSocket() async throws {
        try await withDeadline {
            let servers = try (0..<4).map { _ in try Self.holdingServer() }
            defer { for server in servers { server.stop() } }
            let ports = servers.map(\.port)
            let fd = try await Self.connect(try ports.map(Self.loopback), delay: .zero)
            defer { RawSocket.close(fd) }
            let winner = try #require(SocketDescriptor.peerAddress(of: fd)?.port)
            #expect(ports.contains(winner))
            for port in ports {
                let expected = port == winner ? 1 : 0
                #expect(
                    try await SocketTable.eventually {
                        SocketTable.ownSockets(towards: port, in: .established) == expected
                            && SocketTable.ownSockets(towards: port, in: .synSent) == 0
                    }, "port \(port), winner \(winner)")
            }
        }
    }

    /// Cancelling the caller cancels every attempt in flight and closes their sockets.
    @Test(arguments: [nil, .milliseconds(50)] as [Duration?])
    func cancellingTheCallerClosesEveryAttempt(delay: Duration?) async throws {
        try await withDeadline {
            let first = try await StalledListener()
            let second = try await StalledListener()
            let attempt = Task {
                try await Self.connect([try Self.loopback(first.port), try Self.loopback(second.port)], delay: delay)
            }
            // Both attempts are under way with a delay, only the first without.
            let expected = delay == nil ? [1, 0] : [1, 1]
            let underWay = { @Sendable in
                [SocketTable.connecting(towards: first.port), SocketTable.connecting(towards: second.port)]
            }
            #expect(try await SocketTable.eventually { underWay() == expected })
            attempt.cancel()
            await #expect(throws: CancellationError.self) { _ = try await attempt.value }
            #expect(try await SocketTable.eventually { SocketTable.connecting(towards: first.port) == 0 })
            #expect(try await SocketTable.eventually { SocketTable.connecting(towards: second.port) == 0 })
        }
    }

    // MARK: without a delay

    @Test func withoutADelayAddressesAreTriedInTurn() async throws {
        try await withDeadline {
            let server = try Self.holdingServer()
            defer { server.stop() }
            let fd = try await RawSocket.withRefusingPort { refused in
                try await Self.connect([try Self.loopback(refused), try Self.loopback(server.port)], delay: nil)
            }
            defer { RawSocket.close(fd) }
            #expect(SocketDescriptor.peerAddress(of: fd)?.port == server.port)
        }
    }

    // MARK: errors

    /// Failing the same way everywhere throws that one error, as asyncio raises it alone.
    @Test(arguments: [nil, .milliseconds(50)] as [Duration?])
    func theSameFailureEverywhereIsThrownAsItIs(delay: Duration?) async throws {
        try await withDeadline {
            try await RawSocket.withRefusingPort { first in
                try await RawSocket.withRefusingPort { second in
                    await #expect(throws: StreamError.connectionRefused) {
                        _ = try await Self.connect([try Self.loopback(first), try Self.loopback(second)], delay: delay)
                    }
                }
            }
        }
    }

    /// Different failures come together, in the order the attempts started ("Multiple exceptions").
    @Test(arguments: [nil, .milliseconds(50)] as [Duration?])
    func differentFailuresAreCombined(delay: Duration?) async throws {
        try await withDeadline {
            try await RawSocket.withRefusingPort { port in
                let refused = try Self.loopback(port)
                let v6 = try SocketAddress(host: "::1", port: port)
                let local = try SocketAddress(host: "127.0.0.1", port: 0)
                let error = await #expect(throws: ConnectionAttemptsError.self) {
                    _ = try await Self.connect([v6, refused], from: local, delay: delay)
                }
                let attempts = try #require(error?.attempts)
                #expect(attempts.map(\.address) == [v6, refused])
                #expect(isInvalidArgument(attempts.first?.error))
                #expect(attempts.last?.error == .connectionRefused)
                #expect(error?.description.hasPrefix("Multiple exceptions: ") == true)
            }
        }
    }

    @Test func badDelaysAndInterleavesAreRejected() async throws {
        try await withDeadline {
            let address = try Self.loopback(1)
            await #expect {
                _ = try await Self.connect([address], delay: .milliseconds(-1))
            } throws: { isInvalidArgument($0 as? StreamError) }
            await #expect {
                _ = try await Self.connect([address], delay: nil, interleave: -1)
            } throws: { isInvalidArgument($0 as? StreamError) }
            await #expect {
                _ = try await Self.connect([], delay: nil)
            } throws: { isInvalidArgument($0 as? StreamError) }
        }
    }

    // MARK: through openConnection

    @Test(arguments: ["127.0.0.1", "localhost"])
    func openConnectionWithHappyEyeballsTalksToAServer(host: String) async throws {
        try await withDeadline {
            let server = try BlockingServer(handler: BlockingServer.answerHTTP)
            defer { server.stop() }
            let (reader, writer) = try await openConnection(
                host: host, port: server.port, happyEyeballsDelay: .milliseconds(250))
            #expect(try await requestHTTPStatus(reader, writer) == "HTTP/1.0 200 OK\r\n")
            writer.close()
            try await writer.waitClosed()
        }
    }
}
