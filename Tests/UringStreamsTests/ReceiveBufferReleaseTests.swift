import Glibc
import Testing
import UringStreams

@_spi(UringInternals) @testable import UringRuntime

/// A burst that fills many receive buffers leaves their pages resident only while it lasts: once
/// the buffers have been free for a release interval, all but a small reserve go back to the
/// system, on an otherwise idle loop too.
@Suite(.timeLimit(.minutes(1)))
struct ReceiveBufferReleaseTests {
    /// Keeps every chunk until end of file, so a burst holds many buffers at once.
    final class Hoarding: StreamProtocol {
        private var held: [Bytes] = []
        private let received: Locked<Int>

        init(_ received: Locked<Int>) { self.received = received }

        func dataReceived(_ data: Bytes) {
            held.append(data)
            received.update { $0 += data.count }
        }

        func eofReceived() -> Bool {
            held.removeAll()
            return false
        }
    }

    /// The pool's resident bytes and what a released pool may keep: the ring's buffers (the
    /// kernel's) and a reserve as large as the ring's floor.
    private func residency(_ loop: EventLoop) async throws -> (resident: Int, allowed: Int) {
        try await withTaskExecutorPreference(loop) {
            let pool = try #require(loop.bufferPool)
            return (pool.residentBytes, (pool.ringEntries + pool.minimumRingTarget) * pool.bufferSize)
        }
    }

    @Test func theBuffersOfABurstGiveTheirPagesBackOnceUnused() async throws {
        try await withDeadline(30) {
            var configuration = EventLoop.Configuration()
            configuration.receiveBufferRelease = .milliseconds(100)
            let group = EventLoopGroup(loopCount: 1, configuration: configuration)
            let loop = group.next()
            let received = Locked(0)
            let server = try await createServer(host: "127.0.0.1", port: 0, on: group) { Hoarding(received) }
            let port = try #require(server.addresses.first).port
            let burst = 6 << 20
            let peer = try await onThread {
                let fd = try RawSocket.connectTCP(port: port)
                try RawSocket.writeAll(fd, patternBytes(count: burst))
                return fd
            }
            defer { RawSocket.close(peer) }
            while received.value < burst { try await Task.sleep(for: .milliseconds(10)) }
            // Held in the buffers themselves (not copied out): most of the burst is resident.
            let peak = try await residency(loop)
            #expect(peak.resident >= burst - (1 << 20))
            // End of file: the protocol lets go, the server closes, the loop goes idle.
            shutdown(peer, Int32(SHUT_WR))
            #expect(try await onThread { try RawSocket.read(peer) } == [])
            let start = ContinuousClock.now
            var now = try await residency(loop)
            while now.resident > now.allowed, ContinuousClock.now - start < .seconds(10) {
                try await Task.sleep(for: .milliseconds(50))
                now = try await residency(loop)
            }
            #expect(now.resident <= now.allowed, "\(now.resident) bytes resident, \(now.allowed) allowed")
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }
}
