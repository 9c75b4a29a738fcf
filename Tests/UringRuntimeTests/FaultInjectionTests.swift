import Glibc
import Synchronization
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// The layers above the ring, driven through `ScriptedRing` with faults injected at will.
@Suite(.timeLimit(.minutes(1)))
struct FaultInjectionTests {
    /// Starts a transport on one end of a socket pair on a scripted loop; returns the pieces.
    private func startTransport(
        _ ring: ScriptedRing, _ group: EventLoopGroup
    ) async throws -> (SocketTransport, RecordingDelegate, peer: Int32, receive: UInt64) {
        let (mine, peer) = socketPair()
        let loop = group.next()
        let delegate = RecordingDelegate()
        let transport = await startedTransport(on: loop, fileDescriptor: mine, owner: delegate)
        let receive = try await ring.waitForSubmission { $0.description == "recv-multishot" }
        return (transport, delegate, peer, receive.userData)
    }

    @Test func shortSendIsCompletedWithTheRemainingBytes() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let (transport, _, peer, _) = try await startTransport(ring, group)
            defer { close(peer) }
            transport.write(Bytes("0123456789"))
            let first = try await ring.waitForSubmission { $0.description == "send" }
            #expect(first.sendPayload == Array("0123456789".utf8))
            // Counted before completing: the loop may submit the rest before this thread looks.
            let count = ring.submissions.count
            ring.complete(first.userData, result: 4)
            let second = try await ring.waitForSubmission(skipping: count) { $0.description == "send" }
            #expect(second.sendPayload == Array("456789".utf8))
            #expect(transport.writeBufferSize == 6)
            ring.complete(second.userData, result: 6)
            #expect(try await eventually { transport.writeBufferSize == 0 })
            try await group.shutdown()
        }
    }

    @Test func writesQueuedDuringASendGoOutTogetherInOrder() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let (transport, _, peer, _) = try await startTransport(ring, group)
            defer { close(peer) }
            transport.write(Bytes("a"))
            let first = try await ring.waitForSubmission { $0.description == "send" }
            transport.write(Bytes("b"))
            transport.write(Bytes("c"))
            let count = ring.submissions.count
            ring.complete(first.userData, result: 1)
            let second = try await ring.waitForSubmission(skipping: count) { $0.description == "send" }
            #expect(second.sendPayload == Array("bc".utf8), "one gathered send, in write order")
            try await group.shutdown()
        }
    }

    @Test func connectionResetOnReceiveIsStoredAndClosesTheSocket() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let (transport, delegate, peer, receive) = try await startTransport(ring, group)
            defer { close(peer) }
            ring.deliver(Array("abc".utf8), to: receive)
            ring.complete(receive, result: -ECONNRESET)
            try await delegate.waitFor { if case .lost = $0 { return true } else { return false } }
            #expect(
                delegate.events.withLock { $0 } == [
                    .made, .data(Array("abc".utf8)), .lost("\(StreamError.connectionReset)"),
                ])
            #expect(transport.connectionError as? StreamError == .connectionReset)
            // The peer sees the descriptor closed: EOF.
            var byte: UInt8 = 0
            #expect(read(peer, &byte, 1) == 0)
            try await group.shutdown()
        }
    }

    @Test func descriptorStaysOpenUntilTheReceiveIsGone() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let (transport, delegate, peer, receive) = try await startTransport(ring, group)
            defer { close(peer) }
            transport.close()
            let cancel = try await ring.waitForSubmission { $0.description == "cancel \(receive)" }
            #expect(cancel.userData == 0)
            // Still open: the kernel may still use the receive.
            let flags = fcntl(peer, F_GETFL)
            _ = fcntl(peer, F_SETFL, flags | O_NONBLOCK)
            var byte: UInt8 = 0
            #expect(read(peer, &byte, 1) == -1 && errno == EAGAIN)
            ring.complete(receive, result: -ECANCELED)
            try await delegate.waitFor { $0 == .lost(nil) }
            _ = fcntl(peer, F_SETFL, flags)
            #expect(read(peer, &byte, 1) == 0)
            try await group.shutdown()
        }
    }

    @Test func bufferExhaustionRearmsTheReceive() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let (_, _, peer, receive) = try await startTransport(ring, group)
            defer { close(peer) }
            let loop = group.next()
            let count = ring.submissions.count
            ring.complete(receive, result: -ENOBUFS)
            let rearmed = try await ring.waitForSubmission(skipping: count) { $0.description == "recv-multishot" }
            #expect(rearmed.userData != 0)
            #expect(
                try await eventually { loop.statistics.bufferExhaustions == 1 && loop.statistics.receiveRearms == 1 })
            try await group.shutdown()
        }
    }

    @Test func cancellingAConnectSubmitsAsyncCancelAndClosesTheSocket() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let attempt = Task(executorPreference: loop) {
                try await loop.connect(to: SocketAddress(host: "127.0.0.1", port: 9))
            }
            let connect = try await ring.waitForSubmission { $0.description == "connect" }
            attempt.cancel()
            _ = try await ring.waitForSubmission { $0.description == "cancel \(connect.userData)" }
            ring.complete(connect.userData, result: -ECANCELED)
            await #expect(throws: CancellationError.self) { try await attempt.value }
            // The socket made for the attempt is closed (its number may already be reused).
            var info = stat()
            let sameSocketStillOpen = fstat(connect.fd!, &info) == 0 && UInt(info.st_ino) == connect.inode
            #expect(connect.inode != nil)
            #expect(!sameSocketStillOpen)
            try await group.shutdown()
        }
    }

    @Test func cancellingASleepSubmitsAsyncCancel() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(3600)) }
            let timeout = try await ring.waitForSubmission { $0.description == "timeout" }
            sleeper.cancel()
            _ = try await ring.waitForSubmission { $0.description == "cancel \(timeout.userData)" }
            ring.complete(timeout.userData, result: -ECANCELED)
            await #expect(throws: CancellationError.self) { try await sleeper.value }
            try await group.shutdown()
        }
    }
}
