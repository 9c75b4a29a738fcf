// The kernel's view of TCP sockets, for tests that must prove a socket was closed (or is still
// connecting) without depending on how many descriptors other tests running in parallel hold:
// /proc/net/tcp{,6} gives each socket's ports, state and inode, /proc/self/fd tells which inodes
// this process holds.

import Foundation
import Glibc
import Testing
import UringStreams

enum SocketTable {
    /// TCP states as /proc/net/tcp prints them (include/net/tcp_states.h).
    enum State: Int {
        case established = 1
        case synSent = 2
        case listen = 10
    }

    struct Entry {
        let localPort: Int
        let remotePort: Int
        let state: Int
        /// The listen queue's length for a listening socket, else unread bytes.
        let receiveQueue: Int
        let inode: UInt64
    }

    /// The IPv4 and IPv6 TCP sockets of this network namespace with `port` at either end.
    ///
    /// A busy machine has thousands of rows (TIME-WAIT included) and the kernel takes tens of
    /// milliseconds to print them: call this off the cooperative pool (see ``eventually(_:)``);
    /// only the rows naming the port are parsed.
    static func entries(port: Int) -> [Entry] {
        let needle = ":\(String(format: "%04X", port)) "
        return ["/proc/net/tcp", "/proc/net/tcp6"].flatMap { path -> [Entry] in
            // NUL-terminated for strstr (memmem is a GNU extension Swift's Glibc does not import).
            guard let table = readWhole(path).map({ $0 + [0] }) else { return [] }
            return table.withUnsafeBytes { raw -> [Entry] in
                let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
                var found: [Entry] = []
                var cursor = base
                while let hit = strstr(cursor, needle) {
                    let at = base.distance(to: hit)
                    let lineStart = raw[..<at].lastIndex(of: 10).map { $0 + 1 } ?? 0
                    let lineEnd = raw[at...].firstIndex(of: 10) ?? raw.count - 1
                    if let entry = entry(Substring(decoding: raw[lineStart..<lineEnd], as: UTF8.self)),
                        entry.localPort == port || entry.remotePort == port
                    {
                        found.append(entry)
                    }
                    cursor = base + lineEnd
                }
                return found
            }
        }
    }

    /// Reads a /proc file to its end. (Foundation trusts the size, 0 here, and stops after the
    /// first read, which drops the rows a table prints after its first page.)
    private static func readWhole(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return bytes
    }

    private static func entry(_ line: Substring) -> Entry? {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 10,
            let localPort = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
            let remotePort = fields[2].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
            let state = Int(fields[3], radix: 16),
            let receiveQueue = fields[4].split(separator: ":").last.flatMap({ Int($0, radix: 16) }),
            let inode = UInt64(fields[9])
        else { return nil }
        return Entry(
            localPort: localPort, remotePort: remotePort, state: state, receiveQueue: receiveQueue, inode: inode)
    }

    /// The inodes of the sockets this process has descriptors for.
    static func ownSocketInodes() -> Set<UInt64> {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return [] }
        var inodes: Set<UInt64> = []
        for name in names {
            var target = [CChar](repeating: 0, count: 64)
            let length = readlink("/proc/self/fd/" + name, &target, target.count - 1)
            guard length > 0 else { continue }
            let link = String(decoding: target[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if link.hasPrefix("socket:["), let inode = UInt64(link.dropFirst(8).dropLast()) { inodes.insert(inode) }
        }
        return inodes
    }

    /// How many descriptors of this process are TCP sockets towards `remotePort` in `state`.
    static func ownSockets(towards remotePort: Int, in state: State) -> Int {
        let own = ownSocketInodes()
        return entries(port: remotePort).filter {
            $0.remotePort == remotePort && $0.state == state.rawValue && own.contains($0.inode)
        }.count
    }

    /// How many sockets (of any process) are connecting to `remotePort`.
    static func connecting(towards remotePort: Int) -> Int {
        entries(port: remotePort).filter { $0.remotePort == remotePort && $0.state == State.synSent.rawValue }.count
    }

    /// The sockets (of any process) listening on `port`.
    static func listeners(port: Int) -> [Entry] {
        entries(port: port).filter { $0.localPort == port && $0.state == State.listen.rawValue }
    }

    /// The inodes of the sockets (of any process) listening on `port`.
    static func listeningInodes(port: Int) -> Set<UInt64> {
        Set(listeners(port: port).map(\.inode))
    }

    /// The inodes of the listening or connected sockets (of any process) with `port` as their own.
    static func inodes(boundToPort port: Int) -> Set<UInt64> {
        Set(entries(port: port).filter { $0.localPort == port }.map(\.inode))
    }

    /// The inodes of this process's sockets bound to `port`, as the table names them.
    static func ownInodes(boundToPort port: Int) -> Set<UInt64> {
        Set(
            RawSocket.descriptors(boundToPort: port).compactMap { fd in
                var info = stat()
                return fstat(fd, &info) == 0 ? UInt64(info.st_ino) : nil
            })
    }

    /// Expects `connect`, made to the port of a server that closed, to be refused, or else to have
    /// reached a socket that is not one of `closed` (the inodes the server's sockets had, from
    /// ``ownInodes(boundToPort:)`` before it closed): the freed port may go at once to a parallel
    /// test's listener.
    static func expectRefused(
        port: Int, closed: Set<UInt64>, sourceLocation: SourceLocation = #_sourceLocation,
        _ connect: () async throws -> Void
    ) async throws {
        #expect(!closed.isEmpty, "no socket of the server was found before it closed", sourceLocation: sourceLocation)
        do {
            try await connect()
        } catch {
            let refused =
                (error as? StreamError) == .connectionRefused || (error as? SystemCallFailed)?.errno == ECONNREFUSED
            #expect(refused, "\(error)", sourceLocation: sourceLocation)
            return
        }
        let listening = try await onThread { listeningInodes(port: port) }
        #expect(
            listening.isDisjoint(with: closed), "a socket of the closed server still listens on \(port)",
            sourceLocation: sourceLocation)
    }

    /// How many finished connections wait in the listen queue of the socket on `port`.
    static func listenQueue(of port: Int) -> Int? {
        listeners(port: port).first?.receiveQueue
    }

    /// Polls `condition` every 20 ms for up to 5 s on a thread of its own, so the slow /proc
    /// reads never hold a thread of the cooperative pool; returns whether it held.
    static func eventually(_ condition: @escaping @Sendable () -> Bool) async throws -> Bool {
        try await onThread {
            let end = ContinuousClock.now.advanced(by: .seconds(5))
            while ContinuousClock.now < end {
                if condition() { return true }
                usleep(20_000)
            }
            return condition()
        }
    }
}

/// A loopback listener that never accepts and whose queue is full, so the kernel drops every
/// further SYN: a connect to it stays in SYN-SENT (retrying after 1 s, 3 s, ...) until cancelled.
/// The deterministic stand-in for an address that does not answer.
final class StalledListener: Sendable {
    let port: Int
    private let listener: Int32
    private let filler: Int32

    init() async throws {
        let bound = try RawSocket.tcpLoopback(listening: false)
        // A backlog of 0 queues exactly one finished connection; the filler takes that place.
        guard listen(bound.descriptor, 0) == 0 else {
            RawSocket.close(bound.descriptor)
            throw SystemCallFailed(call: "listen", errno: errno)
        }
        listener = bound.descriptor
        port = bound.port
        do {
            filler = try RawSocket.connectTCP(port: port)
        } catch {
            RawSocket.close(bound.descriptor)
            throw error
        }
        // The filler's connect returns before the listener has queued it; wait until it has.
        let port = self.port
        guard try await SocketTable.eventually({ SocketTable.listenQueue(of: port) == 1 }) else {
            throw SystemCallFailed(call: "listen queue never filled", errno: 0)
        }
    }

    deinit {
        RawSocket.close(filler)
        RawSocket.close(listener)
    }
}
