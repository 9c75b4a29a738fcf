import Glibc
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// Connected sockets go into the ring's file table (io_uring registered files), which saves the
/// kernel a descriptor lookup and a reference count per send and receive. The table holds its own
/// reference to each socket, so taking a socket out of it before closing is what lets the close
/// end the connection.
@Suite(.timeLimit(.minutes(1)))
struct RegisteredFileTests {
    /// Sends `text` on `fd` through `ring` and returns the send's result.
    private func sendThroughRing(_ ring: IOURing, _ fd: Int32, _ text: String) throws -> Int32 {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { buffer in
            ring.prepare(
                .send(fd: fd, buffer: buffer.baseAddress!, length: buffer.count, flags: Int32(MSG_NOSIGNAL)),
                userData: 7)
            try ring.submit(waitingFor: 1)
            let completions = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
            defer { completions.deallocate() }
            #expect(ring.reap(into: completions) == 1)
            return completions[0].result
        }
    }

    private func receiveWithoutWaiting(_ fd: Int32) -> (count: Int, text: String) {
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        return (count, String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self))
    }

    /// The ring reaches a registered socket through the table, not the descriptor: a send still
    /// arrives after the descriptor is closed, and the peer sees the end only once the socket
    /// leaves the table.
    @Test func aRegisteredSocketLivesInTheTableUntilTakenOut() async throws {
        try await onThread {
            let ring = try IOURing(entries: 8)
            try #require(ring.fileTableSize > 0, "this kernel refused the file table")
            let (mine, peer) = socketPair()
            defer { close(peer) }
            ring.registerFile(mine)
            #expect(ring.isRegistered(mine))
            #expect(try sendThroughRing(ring, mine, "one") == 3)
            #expect(receiveWithoutWaiting(peer).text == "one")

            close(mine)  // the wrong order on purpose: the table still holds the socket
            #expect(try sendThroughRing(ring, mine, "two") == 3)
            #expect(receiveWithoutWaiting(peer).text == "two")
            #expect(receiveWithoutWaiting(peer).count == -1, "no end of file while the table holds it")

            ring.unregisterFile(mine)
            #expect(!ring.isRegistered(mine))
            #expect(receiveWithoutWaiting(peer).count == 0, "end of file once out of the table")
        }
    }

    /// A descriptor past the table is reached by its number, as without a table.
    @Test func aDescriptorPastTheTableIsSentToByNumber() async throws {
        try await onThread {
            let ring = try IOURing(entries: 8)
            var limit = rlimit()
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            try #require(
                ring.fileTableSize > 0 && UInt64(ring.fileTableSize) < UInt64(limit.rlim_cur),
                "the descriptor limit (\(limit.rlim_cur)) leaves no number past the table")
            let (mine, peer) = socketPair()
            defer { close(peer) }
            let high = Int32(ring.fileTableSize)
            try #require(dup2(mine, high) == high)
            close(mine)
            defer { close(high) }
            ring.registerFile(high)
            #expect(!ring.isRegistered(high))
            #expect(try sendThroughRing(ring, high, "far") == 3)
            #expect(receiveWithoutWaiting(peer).text == "far")
        }
    }

    /// A transport puts its socket in its loop's table once the connection proved busy (so a
    /// short connection pays no system calls for it), takes it out when it closes, and the close
    /// reaches the peer.
    @Test func aBusyTransportIsInTheTableUntilItCloses() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1, configuration: .init())
            let loop = group.next()
            let (mine, peer) = socketPair()
            defer { close(peer) }
            let delegate = RecordingDelegate()
            let transport = await startedTransport(on: loop, fileDescriptor: mine, owner: delegate)
            // nil on the epoll backend, which has no table.
            @Sendable func registered() async -> Bool? {
                await withTaskExecutorPreference(loop) { (loop.ring as? IOURing)?.isRegistered(mine) }
            }
            // One receive completion per message: each is sent once the one before arrived.
            for count in 1...Int(SocketTransport.completionsBeforeRegistering) {
                if count == 2 { #expect(await registered() != true, "registered before it proved busy") }
                #expect(send(peer, "x", 1, 0) == 1)
                let arrived = try await eventually {
                    delegate.events.withLock { $0.filter { if case .data = $0 { true } else { false } }.count } == count
                }
                try #require(arrived)
            }
            #expect(await registered() != false)
            transport.close()
            try await delegate.waitFor { $0 == .lost(nil) }
            #expect(await registered() != true)
            #expect(receiveWithoutWaiting(peer).count == 0, "the peer sees the close")
            try await group.shutdown()
        }
    }
}
