import ServiceLifecycle
import Synchronization
import UringStreams

/// A ``Server`` as a swift-service-lifecycle `Service`: ``run()`` serves until the service group
/// shuts down gracefully (on SIGTERM, say) or is cancelled.
///
/// A graceful shutdown stops accepting (``Server/close()``), asks every connection to close after
/// its queued data (``Server/closeClients()``: handlers reading see EOF), and once
/// `gracePeriod` has passed aborts the connections still open (``Server/abortClients()``) and
/// cancels their handlers. `run()` returns once every handler it started has returned.
///
/// ```swift
/// let server = try await startServer(host: "0.0.0.0", port: 8888, startServing: false) { reader, writer in
///     // ...
/// }
/// let group = ServiceGroup(
///     services: [ServerService(server: server)], gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
///
/// Handlers run as child tasks of `run()` (see ``Server/serveForever()``): they see the task-local
/// values of the service's task, and cancelling the service cancels them. asyncio leaves this to
/// the program: `server.close()`, `server.close_clients()`, a timer, `server.abort_clients()`.
public struct ServerService: Service {
    /// The server served.
    public let server: Server
    /// How long a graceful shutdown lets connections finish before it aborts them.
    public let gracePeriod: Duration

    /// A service serving `server`.
    ///
    /// - Parameters:
    ///   - server: The server; made with `startServing: false` or not (accepting starts in
    ///     ``run()`` either way, and only handlers of connections accepted from then on are the
    ///     service's child tasks).
    ///   - gracePeriod: How long a graceful shutdown waits for connections to close before it
    ///     aborts them and cancels their handlers; default 30 s (asyncio's TLS shutdown timeout).
    public init(server: Server, gracePeriod: Duration = .seconds(30)) {
        self.server = server
        self.gracePeriod = gracePeriod
    }

    /// Serves until a graceful shutdown has ended every connection, the server is closed, or the
    /// calling task is cancelled (which closes the server and cancels the handlers).
    ///
    /// - Throws: ``StreamError/serverClosed`` when the server was closed before; the server's
    ///   `listen` failure; ``StreamError/alreadyServing`` when another task serves it forever.
    public func run() async throws {
        let shutdown = ShutdownFlag()
        try await withThrowingTaskGroup(of: Phase.self) { group in
            group.addTask {
                do {
                    try await server.serveForever()
                } catch is CancellationError {
                    // Ours after the grace period, or the service's own cancellation: either way
                    // the server is closed and its handlers have returned.
                } catch StreamError.serverClosed where shutdown.hasBegun {
                    // A shutdown requested before serving began closed the server first.
                }
                return .served
            }
            group.addTask {
                do {
                    try await gracefulShutdown()
                } catch {
                    return .cancelled
                }
                shutdown.begin()
                server.close()
                server.closeClients()
                do {
                    try await Task.sleep(for: gracePeriod)
                } catch {
                    return .cancelled
                }
                server.abortClients()
                return .gracePeriodOver
            }
            while let phase = try await group.next() {
                switch phase {
                case .served:
                    // Closed and every handler returned: the shutdown timer has nothing to do.
                    group.cancelAll()
                case .gracePeriodOver:
                    // Connections are aborted; handlers that do not read (and so never saw it)
                    // are cancelled.
                    group.cancelAll()
                case .cancelled:
                    break
                }
            }
        }
    }

    private enum Phase: Sendable {
        case served, gracePeriodOver, cancelled
    }
}

/// Whether a graceful shutdown began, shared by the serving task and the shutdown task.
private final class ShutdownFlag: Sendable {
    private let begun = Atomic<Bool>(false)

    var hasBegun: Bool { begun.load(ordering: .acquiring) }

    func begin() { begun.store(true, ordering: .releasing) }
}
