import Logging
import ServiceLifecycle
import Synchronization
import Testing
import UringStreams
import UringStreamsServiceLifecycle

/// A server as a service in a ServiceGroup: graceful shutdown stops accepting and closes the
/// clients; after the grace period it aborts the connections and cancels the handlers left.
@Suite(.timeLimit(.minutes(1)))
struct ServiceTests {
    private static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Handlers that read see EOF at the shutdown and return: the group finishes long before the
    /// grace period, and the port no longer accepts.
    @Test func gracefulShutdownClosesClientsAndFinishesEarly() async throws {
        try await withTestDeadline {
            let finished = Atomic<Int>(0)
            let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { reader, writer in
                while let chunk = try? await reader.read(4096), !chunk.isEmpty { writer.write(chunk) }
                finished.add(1, ordering: .relaxed)
                writer.close()
            }
            let port = server.addresses[0].port
            let group = ServiceGroup(
                services: [ServerService(server: server, gracePeriod: .seconds(30))],
                gracefulShutdownSignals: [.sigterm], logger: Self.quiet)
            let running = Task { try await group.run() }
            try await waitUntilServing(server)
            var clients: [(StreamReader, StreamWriter)] = []
            for _ in 0..<2 {
                let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                writer.write("ping")
                #expect(String(decoding: try await reader.readExactly(4), as: UTF8.self) == "ping")
                clients.append((reader, writer))
            }

            let start = ContinuousClock.now
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(ContinuousClock.now - start < .seconds(10))
            let finishedCount = finished.load(ordering: .relaxed)
            #expect(finishedCount == 2)
            #expect(!server.isServing)
            for (reader, writer) in clients {
                #expect(try await reader.read(4096).isEmpty)  // the server's close reached the client
                writer.close()
            }
            await #expect(throws: (any Error).self) {
                _ = try await openConnection(host: "127.0.0.1", port: port)
            }
            await server.waitClosed()
        }
    }

    /// A handler that ignores its connection holds the shutdown only for the grace period: then
    /// its connection is aborted and it is cancelled.
    @Test func stragglersAreAbortedAfterTheGracePeriod() async throws {
        try await withTestDeadline {
            let handlerOutcome = Mutex<String?>(nil)
            let started = Atomic<Bool>(false)
            let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { _, _ in
                started.store(true, ordering: .relaxed)
                do {
                    try await Task.sleep(for: .seconds(60))
                    handlerOutcome.withLock { $0 = "slept" }
                } catch {
                    handlerOutcome.withLock { $0 = "cancelled" }
                }
            }
            let grace = Duration.milliseconds(300)
            let group = ServiceGroup(
                services: [ServerService(server: server, gracePeriod: grace)], gracefulShutdownSignals: [.sigterm],
                logger: Self.quiet)
            let running = Task { try await group.run() }
            try await waitUntilServing(server)
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
            while !started.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }

            let start = ContinuousClock.now
            await group.triggerGracefulShutdown()
            try await running.value
            let elapsed = ContinuousClock.now - start
            #expect(elapsed >= grace)
            #expect(elapsed < .seconds(10))
            #expect(handlerOutcome.withLock { $0 } == "cancelled")
            // Closed by closeClients at once (EOF) or reset by abortClients: either way it ended.
            _ = try? await reader.read(4096)
            writer.close()
            await server.waitClosed()
        }
    }

    /// Cancelling the group (no graceful shutdown) closes the server and cancels the handlers too.
    @Test func cancellingTheServiceCancelsItsHandlers() async throws {
        try await withTestDeadline {
            let cancelled = Atomic<Bool>(false)
            let started = Atomic<Bool>(false)
            let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { reader, _ in
                started.store(true, ordering: .relaxed)
                do { _ = try await reader.read(10) } catch is CancellationError {
                    cancelled.store(true, ordering: .relaxed)
                } catch {}
            }
            let running = Task { try await ServerService(server: server).run() }
            try await waitUntilServing(server)
            let (_, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
            while !started.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            running.cancel()
            try await running.value
            let wasCancelled = cancelled.load(ordering: .relaxed)
            #expect(wasCancelled)
            #expect(!server.isServing)
            writer.close()
            server.abortClients()
            await server.waitClosed()
        }
    }

    private func waitUntilServing(_ server: Server) async throws {
        while !server.isServing { try await Task.sleep(for: .milliseconds(5)) }
    }
}

extension ServiceTests {
    /// A shutdown requested before the group runs still starts and stops the service cleanly: the
    /// server closed by the shutdown is no error.
    @Test func aShutdownBeforeServingEndsCleanly() async throws {
        try await withTestDeadline {
            let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { _, writer in
                writer.close()
            }
            let group = ServiceGroup(
                services: [ServerService(server: server, gracePeriod: .seconds(1))],
                gracefulShutdownSignals: [.sigterm],
                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            await group.triggerGracefulShutdown()
            try await group.run()
            #expect(!server.isServing)
            await server.waitClosed()
        }
    }
}
