import Glibc
import Testing
import UringStreams

/// Every kind of wait a task can be in, cancelled: it must end promptly with CancellationError
/// (or, for the non-throwing `Server.waitClosed()`, return) and leave the stream usable.
@Suite(.timeLimit(.minutes(1)))
struct CancellationTests {
    @Test func cancelledDrainThrowsAndTheWriterStillWorks() async throws {
        try await withDeadline {
            let (ours, peer) = try RawSocket.pair()
            defer { RawSocket.close(peer) }
            let (_, writer) = try await openConnection(fileDescriptor: ours)
            writer.transport.setWriteBufferLimits(high: 1)
            // The peer reads nothing: more than the socket buffers hold stays queued.
            writer.write(patternBytes(count: 8 << 20))
            let draining = Task { try await writer.drain() }
            try await settle(50)
            draining.cancel()
            await #expect(throws: CancellationError.self) { try await draining.value }
            #expect(writer.transport.writeBufferSize > 0)
            #expect(!writer.isClosing)
            writer.transport.abort()
        }
    }

    @Test func cancelledWriterWaitClosedThrows() async throws {
        try await withDeadline {
            let (ours, peer) = try RawSocket.pair()
            defer { RawSocket.close(peer) }
            let (_, writer) = try await openConnection(fileDescriptor: ours)
            let waiting = Task { try await writer.waitClosed() }
            try await settle(50)
            waiting.cancel()
            await #expect(throws: CancellationError.self) { try await waiting.value }
            writer.close()
            try await writer.waitClosed()
        }
    }

    @Test func cancelledServerWaitClosedReturnsWhileConnectionsRemain() async throws {
        try await withDeadline {
            let server = try await startServer(host: "127.0.0.1", port: 0) { _, _ in }
            let port = try #require(server.addresses.first).port
            let (_, writer) = try await openConnection(host: "127.0.0.1", port: port)
            server.close()
            let waiting = Task { await server.waitClosed() }
            try await settle(50)
            waiting.cancel()
            await waiting.value
            writer.close()
            server.closeClients()
            await server.waitClosed()
        }
    }

    @Test func cancelledSleepOnTheLoopThrows() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let sleeping = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(60)) }
            try await settle(20)
            sleeping.cancel()
            await #expect(throws: CancellationError.self) { try await sleeping.value }
            try await group.shutdown()
        }
    }
}
