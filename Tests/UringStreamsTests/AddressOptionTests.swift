// The address options of openConnection and startServer (asyncio's family, local_addr,
// reuse_address, reuse_port, host=None), servers with several listening sockets, and the errors
// for bad input. Hosts are numeric or `localhost` from /etc/hosts, so no DNS is involved (except
// in the unknown-host case, which only needs the resolver to fail).

import Foundation
import Glibc
import TestChildProcesses
import Testing
import UringStreams

@Suite(.timeLimit(.minutes(1)))
struct AddressOptionTests {
    /// Tells each client its own address as the server saw it, then closes.
    static func tellPeerAddress(_ reader: StreamReader, _ writer: StreamWriter) async {
        writer.write("\(writer.peerAddress?.description ?? "none")\n")
        writer.close()
        try? await writer.waitClosed()
    }

    /// The address the server saw the client connect from.
    static func peerSeenByServer(host: String, port: Int, localAddress: SocketAddress? = nil) async throws -> String {
        let (reader, writer) = try await openConnection(host: host, port: port, localAddress: localAddress)
        let line = text(try await reader.readLine())
        writer.close()
        try await writer.waitClosed()
        return line
    }

    /// Starts a server on `port` of every interface; nil when a parallel test took the port first.
    static func startOnEveryInterface(port: Int) async throws -> Server? {
        do {
            return try await startServer(host: nil, port: port, clientConnected: tellPeerAddress)
        } catch StreamError.system(errno: EADDRINUSE, _) {
            return nil
        }
    }

    // MARK: listening on every interface

    /// host: nil listens on both families, one socket each (IPv6 only on the IPv6 one, so IPv4
    /// clients reach the IPv4 socket and are seen with their IPv4 address).
    @Test(.enabled(if: isIPv6LoopbackAvailable))
    func serverWithoutAHostListensOnBothFamiliesOnOnePort() async throws {
        try await withDeadline {
            var started: Server?
            for _ in 0..<5 where started == nil {
                started = try await Self.startOnEveryInterface(port: try RawSocket.unusedPort())
            }
            let server = try #require(started)
            let addresses = server.addresses
            #expect(Set(addresses.map(\.host)) == ["0.0.0.0", "::"])
            #expect(Set(addresses.map(\.port)).count == 1)
            let port = try #require(addresses.first).port
            let fromV4 = try await Self.peerSeenByServer(host: "127.0.0.1", port: port)
            #expect(fromV4.hasPrefix("127.0.0.1:"), "seen as \(fromV4)")
            let fromV6 = try await Self.peerSeenByServer(host: "::1", port: port)
            #expect(fromV6.hasPrefix("[::1]:"), "seen as \(fromV6)")
            server.close()
            await server.waitClosed()
        }
    }

    /// Every listening socket serves, and closing the server closes every one of them.
    @Test(.enabled(if: isIPv6LoopbackAvailable))
    func everyListeningSocketServesUntilTheServerCloses() async throws {
        try await withDeadline {
            let server = try await startServer(
                host: nil, port: 0, startServing: false, clientConnected: echoLinesUntilEOF)
            let v4 = try #require(server.addresses.first { $0.family == .inet })
            let v6 = try #require(server.addresses.first { $0.family == .inet6 })
            // Listening first: a connect racing serveForever's own startServing would be refused.
            try await server.startServing()
            let serving = Task { try await server.serveForever() }
            for (host, port) in [("127.0.0.1", v4.port), ("::1", v6.port)] {
                let (reader, writer) = try await openConnection(host: host, port: port)
                #expect(try await roundTrip("via \(host)\n", reader: reader, writer: writer) == "via \(host)\n")
                writer.close()
                try await writer.waitClosed()
            }
            let ours = [v4.port, v6.port].map(SocketTable.ownInodes(boundToPort:))
            server.close()
            try await serving.value
            await server.waitClosed()
            #expect(server.addresses.isEmpty)
            for ((host, port), closed) in zip([("127.0.0.1", v4.port), ("::1", v6.port)], ours) {
                try await SocketTable.expectRefused(port: port, closed: closed) {
                    try await openConnection(host: host, port: port).1.close()
                }
            }
        }
    }

    @Test func familyRestrictsTheServersAddresses() async throws {
        try await withDeadline {
            let server = try await startServer(host: nil, port: 0, family: .inet) { _, _ in }
            #expect(!server.addresses.isEmpty)
            #expect(server.addresses.allSatisfy { $0.family == .inet && $0.host == "0.0.0.0" })
            server.close()
            await server.waitClosed()
        }
    }

    /// `localhost` comes from /etc/hosts: no DNS server is asked.
    @Test func serverOnLocalhostListensOnLoopbackOnly() async throws {
        try await withDeadline {
            let server = try await startServer(host: "localhost", port: 0, clientConnected: Self.tellPeerAddress)
            #expect(!server.addresses.isEmpty)
            #expect(server.addresses.allSatisfy { $0.host == "127.0.0.1" || $0.host == "::1" })
            let port = try #require(server.addresses.first).port
            let seen = try await Self.peerSeenByServer(host: "localhost", port: port)
            #expect(seen.hasPrefix("127.0.0.1:") || seen.hasPrefix("[::1]:"), "seen as \(seen)")
            server.close()
            await server.waitClosed()
        }
    }

    // MARK: backlog, reusePort and localAddress

    static let ssPath = "/usr/bin/ss"

    /// The maximum listen queue of the socket listening on `port`, as `ss` reads it from the
    /// kernel (the Send-Q column of a listening socket); /proc/net/tcp does not show it.
    static func listenBacklog(port: Int) throws -> Int? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ssPath)
        process.arguments = ["-ltnH", "sport = :\(port)"]
        let output = Pipe()
        process.standardOutput = output
        try ChildProcesses.run(process)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
        let fields = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        return fields.count >= 3 ? Int(fields[2]) : nil
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ssPath)), arguments: [7, nil] as [Int?])
    func backlogIsTheListenQueueLength(backlog: Int?) async throws {
        try await withDeadline {
            let server: Server
            if let backlog {
                server = try await startServer(host: "127.0.0.1", port: 0, backlog: backlog) { _, _ in }
            } else {
                server = try await startServer(host: "127.0.0.1", port: 0) { _, _ in }
            }
            let port = try #require(server.addresses.first).port
            #expect(try await onThread { try Self.listenBacklog(port: port) } == backlog ?? 100)
            server.close()
            await server.waitClosed()
        }
    }

    @Test func reusePortLetsTwoServersShareAPort() async throws {
        try await withDeadline {
            let first = try await startServer(host: "127.0.0.1", port: 0, reusePort: true) { _, _ in }
            let port = try #require(first.addresses.first).port
            await #expect(throws: StreamError.system(errno: EADDRINUSE, operation: "bind(127.0.0.1:\(port))")) {
                _ = try await startServer(host: "127.0.0.1", port: port) { _, _ in }
            }
            let second = try await startServer(host: "127.0.0.1", port: port, reusePort: true) { _, _ in }
            #expect(second.addresses.first?.port == port)
            for server in [first, second] {
                server.close()
                await server.waitClosed()
            }
        }
    }

    /// The socket is bound before it connects: the server sees the chosen source address (any of
    /// 127.0.0.0/8 is loopback on Linux, so 127.0.0.2 needs no set-up and port 0 cannot collide).
    @Test(arguments: [nil, .milliseconds(100)] as [Duration?])
    func localAddressIsTheAddressTheServerSees(happyEyeballsDelay: Duration?) async throws {
        try await withDeadline {
            let server = try await startServer(host: "127.0.0.1", port: 0, clientConnected: Self.tellPeerAddress)
            let port = try #require(server.addresses.first).port
            let (reader, writer) = try await openConnection(
                host: "127.0.0.1", port: port, localAddress: try SocketAddress(host: "127.0.0.2", port: 0),
                happyEyeballsDelay: happyEyeballsDelay)
            #expect(writer.localAddress?.host == "127.0.0.2")
            let seen = text(try await reader.readLine())
            #expect(seen == "\(try #require(writer.localAddress))\n")
            writer.close()
            try await writer.waitClosed()
            server.close()
            await server.waitClosed()
        }
    }

    // MARK: bad input

    @Test(arguments: [-1, 65_536, Int.max])
    func portsOutOfRangeAreRejected(port: Int) async throws {
        try await withDeadline {
            await #expect { _ = try await openConnection(host: "127.0.0.1", port: port) } throws: {
                isInvalidArgument($0 as? StreamError)
            }
            await #expect { _ = try await openConnection(host: "localhost", port: port) } throws: {
                isInvalidArgument($0 as? StreamError)
            }
            await #expect { _ = try await startServer(host: nil, port: port) { _, _ in } } throws: {
                isInvalidArgument($0 as? StreamError)
            }
        }
    }

    @Test func aNumericHostOfAnotherFamilyIsRejected() async throws {
        try await withDeadline {
            await #expect { _ = try await openConnection(host: "127.0.0.1", port: 80, family: .inet6) } throws: {
                isInvalidArgument($0 as? StreamError)
            }
            await #expect { _ = try await startServer(host: "::1", port: 0, family: .inet) { _, _ in } } throws: {
                isInvalidArgument($0 as? StreamError)
            }
        }
    }

    @Test func theUnixFamilyIsRejectedForHostAndPort() async throws {
        try await withDeadline {
            await #expect { _ = try await openConnection(host: "localhost", port: 80, family: .unix) } throws: {
                isInvalidArgument($0 as? StreamError)
            }
            await #expect { _ = try await startServer(host: nil, port: 0, family: .unix) { _, _ in } } throws: {
                isInvalidArgument($0 as? StreamError)
            }
        }
    }

    @Test func aLocalAddressOfAnotherFamilyIsRejected() async throws {
        try await withDeadline {
            let port = try RawSocket.unusedPort()
            await #expect {
                _ = try await openConnection(
                    host: "127.0.0.1", port: port, localAddress: try SocketAddress(host: "::1", port: 0))
            } throws: { isInvalidArgument($0 as? StreamError) }
        }
    }

    /// The resolver's own error (asyncio's socket.gaierror), never a crash or a hang.
    @Test func anUnknownHostFailsWithTheResolversError() async throws {
        try await withDeadline(30) {
            _ = await #expect {
                _ = try await openConnection(host: "no-such-host.invalid", port: 80)
            } throws: { error in
                guard case .system(let code, let operation)? = error as? StreamError else { return false }
                return code < 0 && operation.contains("no-such-host.invalid")
            }
        }
    }
}
