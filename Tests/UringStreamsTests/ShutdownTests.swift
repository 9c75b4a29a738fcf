import Glibc
import Testing
@_spi(UringInternals) import UringRuntime
import UringStreams

/// Shutting a group down ends what still waits on its loops, as asyncio.run cancels leftover
/// tasks: connections are aborted, in-flight operations cancelled, and the waiting tasks finish.
@Suite(.timeLimit(.minutes(1)))
struct ShutdownTests {
    @Test func shutdownEndsAHandlerWaitingToRead() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let outcome = Mailbox<String>()
            let server = try await startServer(host: "127.0.0.1", port: 0, on: group) { reader, _ in
                do {
                    let data = try await reader.read(100)
                    outcome.send(data.isEmpty ? "eof" : "data")
                } catch {
                    outcome.send("error")
                }
            }
            let port = try #require(server.addresses.first).port
            let client = try await onThread { try RawSocket.connectTCP(port: port) }
            defer { RawSocket.close(client) }
            try await settle(50)
            try await group.shutdown()
            let result = await outcome.receive()
            #expect(result == "eof" || result == "error")
            // The server's connection was closed: the raw client sees EOF or a reset.
            let rest = try? await onThread { try RawSocket.readToEOF(client) }
            #expect((rest ?? []).isEmpty)
        }
    }

    @Test func shutdownCancelsASleepingTask() async throws {
        try await withDeadline {
            let group = EventLoopGroup(loopCount: 1)
            let loop = group.next()
            let sleeper = Task(executorPreference: loop) { try await loop.sleep(for: .seconds(600)) }
            try await settle(50)
            try await group.shutdown()
            await #expect(throws: CancellationError.self) { try await sleeper.value }
        }
    }

    @Test func runEndsLeftoverWorkWhenMainReturns() async throws {
        // A task main started and did not await: it waits on a server connection; run must still
        // return once main does, ending that wait. EventLoop.run holds its thread until then: on
        // a thread of its own, not the cooperative pool's.
        let finished = Locked(false)
        try await withDeadline {
            try await onThread {
                try EventLoop.run {
                    let server = try await startServer(host: "127.0.0.1", port: 0) { reader, _ in
                        _ = try? await reader.read()
                        finished.set(true)
                    }
                    let port = try #require(server.addresses.first).port
                    let (_, writer) = try await openConnection(host: "127.0.0.1", port: port)
                    try await EventLoop.current!.sleep(for: .milliseconds(20))
                    _ = writer
                }
            }
        }
        #expect(finished.value)
    }
}
