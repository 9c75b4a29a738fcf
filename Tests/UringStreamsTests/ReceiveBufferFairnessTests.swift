import Synchronization
import Testing
import UringStreams

/// What the soak tool found (docs/reliability.md, "Defects found"): when slow-consumer connections
/// outnumber a loop's receive buffers many times over, most of them get no byte for as long as the
/// others keep receiving, while the loop spends its time re-arming receives that end in ENOBUFS.
/// `soak --scenarios enobufs --connections 96` with 8 buffers of 4 KiB: 56 of 96 connections got
/// nothing back for 10 s.
@Suite(.timeLimit(.minutes(1)))
struct ReceiveBufferFairnessTests {
    @Test func connectionsOutnumberingReceiveBuffersAllMakeProgress() async throws {
        let connections = 96
        let measured = Duration.seconds(4)
        let progress = Progress()
        let received: [Int]
        do {
            received = try await measure(connections, measured, progress)
        } catch let error as DeadlineExceeded {
            Issue.record("\(error) while \(progress.step); \(progress.connected) clients connected")
            return
        }
        let starved = received.filter { $0 == 0 }.count
        #expect(
            starved == 0,
            "\(starved) of \(connections) connections got nothing back in \(measured); the others \(received.reduce(0, +) / max(1, connections - starved)) bytes each on average"
        )
    }

    private func measure(
        _ connections: Int, _ measured: Duration, _ progress: Progress
    ) async throws -> [Int] {
        try await withDeadline(45) {
            var configuration = EventLoop.Configuration()
            configuration.receiveBufferCount = 8
            configuration.receiveBufferSize = 4_096
            let serverGroup = EventLoopGroup(loopCount: 1, configuration: configuration)
            let clientGroup = EventLoopGroup(loopCount: 1)
            // Slow consumers: each read of 4 KiB waits a millisecond before it is echoed.
            let server = try await startServer(host: "127.0.0.1", port: 0, on: serverGroup) { reader, writer in
                do {
                    while true {
                        let data = try await reader.read(4_096)
                        if data.isEmpty { break }
                        try await EventLoop.current?.sleep(for: .milliseconds(1))
                        writer.write(data)
                        try await writer.drain()
                    }
                } catch {
                    // The clients abort at the end.
                }
                writer.close()
            }
            let port = try #require(server.addresses.first).port
            let counts = ByteCounts(connections)
            let chunk = patternBytes(count: 16_384)
            let clients = Task(executorPreference: clientGroup.next()) {
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    for index in 0..<connections {
                        tasks.addTask {
                            let (reader, writer) = try await openConnection(host: "127.0.0.1", port: port)
                            progress.clientConnected()
                            // Aborting ends a drain or read that cancellation alone would not.
                            try await withTaskCancellationHandler {
                                try await withThrowingTaskGroup(of: Void.self) { pair in
                                    pair.addTask {
                                        while true {
                                            try Task.checkCancellation()
                                            writer.write(chunk)
                                            try await writer.drain()
                                        }
                                    }
                                    pair.addTask {
                                        while true {
                                            let data = try await reader.read(65_536)
                                            if data.isEmpty { return }
                                            counts.add(data.count, at: index)
                                        }
                                    }
                                    try await pair.next()
                                    pair.cancelAll()
                                }
                            } onCancel: {
                                writer.transport.abort()
                            }
                        }
                    }
                    try await tasks.waitForAll()
                }
            }
            progress.step = "measuring"
            // Every connection has been sending for most of this time.
            try await Task.sleep(for: measured)
            let snapshot = counts.snapshot
            progress.step = "waiting for the cancelled clients"
            clients.cancel()
            // The clients end with the errors their aborts cause.
            _ = await clients.result
            progress.step = "waiting for the server to close"
            server.close()
            await server.waitClosed()
            progress.step = "shutting the groups down"
            try await serverGroup.shutdown()
            try await clientGroup.shutdown()
            return snapshot
        }
    }
}

/// Where the test's body is, so a deadline failure says which step never finished.
private final class Progress: Sendable {
    private let state = Mutex((step: "connecting the clients", connected: 0))

    var step: String {
        get { state.withLock { $0.step } }
        set { state.withLock { $0.step = newValue } }
    }

    var connected: Int { state.withLock { $0.connected } }

    func clientConnected() { state.withLock { $0.connected += 1 } }
}

/// Bytes received per connection, from any task.
private final class ByteCounts: Sendable {
    private let counts: Mutex<[Int]>

    init(_ connections: Int) { counts = Mutex([Int](repeating: 0, count: connections)) }

    func add(_ count: Int, at index: Int) { counts.withLock { $0[index] += count } }

    var snapshot: [Int] { counts.withLock { $0 } }
}
