import Testing
import UringStreams

/// A connection's handler task reads without a cancellation handler per waiting read: the server
/// wakes those reads when it cancels the task (`StreamReader.cover`). Cancelling must still end
/// the handler's waiting read, and must not end reads other tasks are waiting in.
@Suite(.timeLimit(.minutes(1)))
struct HandlerCancellationTests {
    /// Cancelling `serveForever()` cancels its child handlers, whose waiting reads end; later
    /// reads that would wait end at once.
    @Test func cancellingServeForeverEndsAHandlersWaitingRead() async throws {
        try await withDeadline {
            let outcomes = Mailbox<String>()
            let connection = try await HandlerUnderTest.start(servingForever: true) { reader, writer in
                outcomes.send(await outcome { try await reader.read(10) })
                outcomes.send(await outcome { try await reader.read(10) })
                writer.close()
            }
            // The handler's read waits without a cancellation handler of its own.
            #expect(connection.reader.coveredWaits == 1)
            connection.serving?.cancel()
            #expect(await outcomes.receive() == "cancelled")
            #expect(await outcomes.receive() == "cancelled")
            await #expect(throws: CancellationError.self) { try await connection.serving?.value }
            await connection.finish()
        }
    }

    /// A handler may cancel its own task; its reads that would wait then end.
    @Test func aHandlerThatCancelsItselfReadsNothingThatWaits() async throws {
        try await withDeadline {
            let outcomes = Mailbox<String>()
            let server = try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
                withUnsafeCurrentTask { $0?.cancel() }
                outcomes.send(await outcome { try await reader.read(10) })
                writer.close()
            }
            let port = try #require(server.addresses.first).port
            let (_, client) = try await openConnection(host: "127.0.0.1", port: port)
            #expect(await outcomes.receive() == "cancelled")
            client.close()
            server.close()
            await server.waitClosed()
        }
    }

    /// A task the handler starts is not cancelled with it: its read goes on waiting for data.
    @Test func aTaskTheHandlerStartsKeepsReadingWhenServeForeverIsCancelled() async throws {
        try await withDeadline {
            let outcomes = Mailbox<String>()
            let connection = try await HandlerUnderTest.start(servingForever: true) { reader, writer in
                let other = Task { outcomes.send(await outcome { try await reader.read(10) }) }
                // The handler itself waits elsewhere, cancellably.
                try? await Task.sleep(for: .seconds(60))
                await other.value
                writer.close()
            }
            #expect(connection.reader.coveredWaits == 0)
            connection.serving?.cancel()
            connection.client.write(utf8("data"))
            #expect(await outcomes.receive() == "data")
            await #expect(throws: CancellationError.self) { try await connection.serving?.value }
            await connection.finish()
        }
    }

    /// A child task's read has its own cancellation handler: cancelling the child alone ends it,
    /// and the handler then reads on.
    @Test func aChildTasksReadIsCancelledOnItsOwn() async throws {
        try await withDeadline {
            let outcomes = Mailbox<String>()
            let connection = try await HandlerUnderTest.start(servingForever: false) { reader, writer in
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { outcomes.send(await outcome { try await reader.read(10) }) }
                    let waiting = (try? await eventually { reader.waitingRead.isWaiting }) ?? false
                    outcomes.send(waiting ? "child waits" : "child never waited")
                    group.cancelAll()
                }
                outcomes.send(await outcome { try await reader.read(10) })
                writer.close()
            }
            let reader = connection.reader
            #expect(await outcomes.receive() == "child waits")
            #expect(await outcomes.receive() == "cancelled")
            try #require(try await eventually { reader.waitingRead.isWaiting })
            // Only the handler's own read waited without a cancellation handler.
            #expect(reader.coveredWaits == 1)
            connection.client.write(utf8("next"))
            #expect(await outcomes.receive() == "next")
            await connection.finish()
        }
    }
}

/// A server with one client connection whose handler runs `handler`, and the test's side of it:
/// the client's writer, the handler's reader once a read of it waits, and with `servingForever`
/// the task in `serveForever()` (begun before the client connects, so the handler is its child).
private struct HandlerUnderTest {
    let server: Server
    let serving: Task<Void, any Error>?
    let client: StreamWriter
    let reader: StreamReader

    static func start(servingForever: Bool, _ handler: @escaping Server.ClientConnected) async throws -> Self {
        let readers = Mailbox<StreamReader>()
        let server = try await startServer(host: "127.0.0.1", port: 0) { reader, writer in
            readers.send(reader)
            await handler(reader, writer)
        }
        let port = try #require(server.addresses.first).port
        var serving: Task<Void, any Error>?
        if servingForever {
            serving = Task { try await server.serveForever() }
            try #require(try await eventually { server.isCollectingHandlers })
        }
        let (_, client) = try await openConnection(host: "127.0.0.1", port: port)
        let reader = await readers.receive()
        try #require(try await eventually { reader.waitingRead.isWaiting })
        return HandlerUnderTest(server: server, serving: serving, client: client, reader: reader)
    }

    func finish() async {
        client.close()
        server.close()
        await server.waitClosed()
    }
}

/// The text a read returned, or "cancelled" / the error it threw.
private func outcome(_ read: () async throws -> Bytes) async -> String {
    do {
        return text(try await read())
    } catch is CancellationError {
        return "cancelled"
    } catch {
        return "\(error)"
    }
}
