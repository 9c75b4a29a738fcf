import Glibc
import Logging
import Synchronization
import Testing
import UringStreams

/// Task-local values a handler should see when its server serves forever in their scope.
enum RequestContext {
    @TaskLocal static var name: String?
}

/// What the server logs (failed TLS handshakes) and how handlers sit in the task tree while a task
/// serves forever: cancelled with it, seeing its task-local values.
@Suite(.timeLimit(.minutes(1)))
struct EcosystemTests {
    /// A client speaking plain text to a TLS server: the handshake fails, the handler never runs,
    /// and the failure is logged at error (asyncio: "SSL handshake failed") and counted, with the
    /// server's own logger or, without one, its group's.
    @Test(.needsOpenSSL, arguments: [true, false])
    func aFailedHandshakeIsLogged(loggerOnGroup: Bool) async throws {
        try await withDeadline(20) {
            let fixtures = try await TLSFixtures.make()
            let recorder = RecordingLogHandler()
            let group =
                loggerOnGroup ? EventLoopGroup(loopCount: 1, logger: recorder.logger()) : EventLoopGroup(loopCount: 1)
            let handled = Atomic<Int>(0)
            let server = try await startServer(
                host: "127.0.0.1", port: 0, tls: fixtures.server, logger: loggerOnGroup ? nil : recorder.logger(),
                on: group
            ) { _, writer in
                handled.add(1, ordering: .relaxed)
                writer.close()
            }
            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
            writer.write("GET / HTTP/1.0\r\n\r\n")
            // The server closes the connection; what it sends first (an alert) does not matter.
            while try await !reader.read(4096).isEmpty {}
            writer.close()
            #expect(try await eventually { !recorder.entries(containing: "TLS handshake failed").isEmpty })
            let entry = recorder.entries(containing: "TLS handshake failed")[0]
            #expect(entry.level == .error)
            #expect(entry.metadata["error"] != nil)
            #expect(try await eventually { group.statistics.tlsHandshakeFailures == 1 })
            let handledCount = handled.load(ordering: .relaxed)
            #expect(handledCount == 0)
            server.close()
            await server.waitClosed()
            try await group.shutdown()
        }
    }

    /// Cancelling the task in serveForever reaches a handler blocked in a read: the read throws
    /// CancellationError, and serveForever returns only after the handler did.
    @Test(arguments: Placement.allCases)
    func cancellingServeForeverCancelsItsHandlers(_ placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let outcome = Mutex<String?>(nil)
                let reading = Atomic<Bool>(false)
                let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { reader, _ in
                    reading.store(true, ordering: .relaxed)
                    let result: String
                    do {
                        _ = try await reader.read(100)
                        result = "read returned"
                    } catch is CancellationError {
                        result = "cancelled"
                    } catch {
                        result = "\(error)"
                    }
                    outcome.withLock { $0 = result }
                }
                let serving = Task { try await server.serveForever() }
                #expect(try await eventually { server.isServing })
                let (_, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                let isReading = try await eventually { reading.load(ordering: .relaxed) }
                #expect(isReading)
                serving.cancel()
                await #expect(throws: CancellationError.self) { try await serving.value }
                // Structured: the handler finished before serveForever returned.
                #expect(outcome.withLock { $0 } == "cancelled")
                #expect(!server.isServing)
                writer.close()
                server.abortClients()
                await server.waitClosed()
            }
        }
    }

    /// A task-local value bound around serveForever is visible in every handler it runs.
    @Test(arguments: Placement.allCases)
    func handlersSeeTheServingTasksTaskLocals(_ placement: Placement) async throws {
        try await withDeadline {
            try await placement.run {
                let seen = Mutex<[String?]>([])
                let server = try await startServer(host: "127.0.0.1", port: 0, startServing: false) { _, writer in
                    seen.withLock { $0.append(RequestContext.name) }
                    writer.close()
                }
                let serving = Task {
                    try await RequestContext.$name.withValue("service-a") { try await server.serveForever() }
                }
                #expect(try await eventually { server.isServing })
                for _ in 0..<3 {
                    let (reader, writer) = try await openConnection(host: "127.0.0.1", port: server.addresses[0].port)
                    #expect(try await reader.read(10).isEmpty)
                    writer.close()
                }
                #expect(try await eventually { seen.withLock { $0.count } == 3 })
                #expect(seen.withLock { $0 } == ["service-a", "service-a", "service-a"])
                server.close()
                try await serving.value
                await server.waitClosed()
            }
        }
    }
}
