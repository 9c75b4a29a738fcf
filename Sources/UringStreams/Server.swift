internal import Glibc
import Logging
import Synchronization
@_spi(UringInternals) import UringRuntime

/// A listening server made by `startServer`, `startUnixServer` or `createServer` (asyncio
/// `asyncio.Server`).
///
/// Each accepted connection lives on one loop for its whole life: with the streams functions it
/// gets a reader and a writer and `clientConnected` runs as a task on that loop; with
/// `createServer`, a new protocol object hears its transport's callbacks there.
///
/// While a task is in ``serveForever()``, each `clientConnected` runs as a child task of it (in a
/// discarding task group), so cancelling that task reaches the handlers and they see its
/// task-local values; otherwise (as asyncio, where `start_server` serves at once) a handler is a
/// task of its own on the connection's loop. A handler's task is cancelled that way or by the
/// handler itself; cancelling it from another task through an `UnsafeCurrentTask` the handler
/// leaked is not supported (its waiting read would not notice).
public final class Server: Sendable {
    public typealias ClientConnected = @Sendable (StreamReader, StreamWriter) async -> Void

    private struct State {
        /// startServing began (and did not fail): a second call does nothing.
        var started = false
        /// The sockets listen: set after `listen`, so a client that sees it can connect.
        var serving = false
        var closed = false
        var servingForever = false
        /// The task in serveForever(), woken by close().
        var foreverWaiters = Waiters<any Error>()
        /// Each connection's top transport (TLS when the server serves TLS), by a number of the
        /// server's, so closeClients sends close_notify.
        var connections: [Int: any Transport] = [:]
        var nextConnection = 0
        var closeWaiters = Waiters<any Error>()
        /// Listeners that have not closed their descriptor yet.
        var openListeners = 0
        /// A serveForever task takes handlers as its child tasks (woken through foreverWaiters).
        var collectingHandlers = false
        /// Handlers waiting for the serveForever task to start them.
        var pendingHandlers: [PendingHandler] = []
        /// The readers of serveForever's running child handlers, which it wakes when it is
        /// cancelled: their reads wait without cancellation handlers of their own
        /// (``StreamReader/cover(_:)``).
        var childHandlerReaders: [ObjectIdentifier: StreamReader] = [:]

        /// Closed, with no listening socket and no connection left.
        var isIdleAfterClose: Bool { closed && openListeners == 0 && connections.isEmpty }
    }

    /// The addresses the server listens on, one per listening address; empty once closed (asyncio
    /// `server.sockets`). A `reusePort` server on several loops has a socket per loop for each
    /// address; each address is listed once, as asyncio lists one socket per address.
    public var addresses: [SocketAddress] { state.withLock { $0.closed } ? [] : boundAddresses }
    private let boundAddresses: [SocketAddress]
    private let descriptors: [ListeningDescriptor]
    private let listeners = Locked<[Listener]>([])
    /// The loop each descriptor accepts on, in the order of `descriptors`.
    private let listenerLoops: [EventLoop]
    /// Each listener serves what it accepts on its own loop (`reusePort` on a group) instead of
    /// passing connections round robin over `connectionLoops`.
    private let acceptsPerLoop: Bool
    /// The loop of the first listener: the one that accepts for all when not `acceptsPerLoop`.
    private var listenerLoop: EventLoop { listenerLoops[0] }
    private let connectionLoops: [EventLoop]
    private let nextLoop = Atomic<Int>(0)
    private let backlog: Int
    private let starter: ConnectionStarter
    private let unixSocket: (path: String, inode: UInt)?
    private let state = Locked(State())
    /// Per connection loop, when the starter has an idle timeout.
    private let idleSweeps: [ObjectIdentifier: IdleSweep]
    /// Where failed accepts and handshakes are logged.
    let logger: Logger

    /// `publishedCount` leading descriptors are the ones `addresses` lists (the rest are other
    /// loops' copies of them).
    init(
        descriptors: [Int32], listenerLoops: [EventLoop], acceptsPerLoop: Bool, publishedCount: Int,
        connectionLoops: [EventLoop], backlog: Int, unixSocket: (path: String, inode: UInt)?,
        logger: Logger, starter: ConnectionStarter
    ) {
        precondition(listenerLoops.count == descriptors.count && !descriptors.isEmpty)
        self.logger = logger
        self.descriptors = descriptors.map(ListeningDescriptor.init)
        boundAddresses = descriptors.prefix(publishedCount).compactMap { SocketDescriptor.localAddress(of: $0) }
        self.listenerLoops = listenerLoops
        self.acceptsPerLoop = acceptsPerLoop
        self.connectionLoops = connectionLoops
        self.backlog = backlog
        self.unixSocket = unixSocket
        self.starter = starter
        var sweeps: [ObjectIdentifier: IdleSweep] = [:]
        if let timeout = starter.idleTimeout {
            for loop in connectionLoops + listenerLoops where sweeps[ObjectIdentifier(loop)] == nil {
                sweeps[ObjectIdentifier(loop)] = IdleSweep(loop: loop, timeout: timeout)
            }
        }
        idleSweeps = sweeps
    }

    /// Starts accepting connections; does nothing when already serving.
    ///
    /// - Throws: ``StreamError/serverClosed`` on a closed server; a `listen` failure.
    ///
    /// Corresponds to asyncio `await server.start_serving()`.
    public func startServing() async throws {
        let start = try state.withLock { state -> Bool in
            if state.closed { throw StreamError.serverClosed }
            if state.started { return false }
            state.started = true
            return true
        }
        guard start else { return }
        do {
            for descriptor in descriptors {
                try descriptor.withOpenDescriptor { fd in
                    if !SocketDescriptor.isListening(fd) { try SocketDescriptor.listen(fd, backlog: backlog) }
                }
            }
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        // Only now: isServing set before `listen` let a client that saw it be refused.
        state.withLock { state in
            if !state.closed { state.serving = true }
        }
        let made = zip(descriptors, listenerLoops).map { descriptor, loop in
            Listener(
                loop: loop, descriptor: descriptor, logger: logger,
                onAccept: { [self] accepted in self.accepted(accepted, acceptedOn: loop) },
                onClosed: { [self] in listenerClosed() })
        }
        state.withLock { $0.openListeners += made.count }
        listeners.withLock { $0 = made }
        // A close() that comes meanwhile releases the descriptors: those listeners then close
        // instead of accepting.
        onListenerLoops(made) { $0.start() }
    }

    /// Whether the server accepts connections (asyncio `is_serving()`).
    public var isServing: Bool { state.withLock { $0.serving } }

    /// Stops listening and closes the listening sockets before it returns; connections already
    /// accepted stay open (asyncio `close()`). A Unix server's socket file is removed (asyncio 3.13).
    public func close() {
        let waiter = state.withLock { state -> Waiters<any Error>.Taken? in
            guard !state.closed else { return nil }
            state.closed = true
            state.serving = false
            return state.foreverWaiters.takeAll()
        }
        guard let waiter else { return }
        if let unixSocket {
            var info = stat()
            if stat(unixSocket.path, &info) == 0, UInt(info.st_ino) == unixSocket.inode {
                unlink(unixSocket.path)
            }
        }
        // Refuse new connections and drop the sockets now; a listener's descriptor number is
        // closed on its loop once its accept is gone (after a group shutdown, already was).
        for descriptor in descriptors { descriptor.release() }
        // A Unix socket's accept does not end when its socket is shut down: cancel it too.
        let running = listeners.withLock { $0 }
        onListenerLoops(running) { $0.close() }
        waiter.resume()
        finishIfIdle()
    }

    /// Waits until the server is closed, its listening sockets are gone (the port can be bound
    /// again) and every connection it accepted has closed. Returns early, without throwing, when
    /// the calling task is cancelled.
    ///
    /// Corresponds to asyncio `await server.wait_closed()` (3.12.1 and later).
    public func waitClosed() async {
        // Cancellation ends the wait early, and that is all it does.
        try? await state.wait(in: \.closeWaiters) { $0.isIdleAfterClose }
    }

    /// Serves until the server is closed, running each new connection's `clientConnected` as a
    /// child task of the calling task.
    ///
    /// Structured where asyncio is not: a handler started here is cancelled when the calling task
    /// is, sees the calling task's task-local values (a `ServiceContext`, a logger), and this
    /// returns only once those handlers have returned (call ``closeClients()`` or
    /// ``abortClients()`` to end them sooner). Handlers of connections accepted before, or by
    /// another path, stay tasks of their own. Each child task runs on its connection's loop.
    ///
    /// - Throws: `CancellationError` after closing the server when the calling task is cancelled;
    ///   ``StreamError/serverClosed`` on a closed server; ``StreamError/alreadyServing`` when another
    ///   task already serves forever.
    ///
    /// Corresponds to asyncio `await server.serve_forever()`.
    public func serveForever() async throws {
        try state.withLock { state in
            if state.closed { throw StreamError.serverClosed }
            if state.servingForever { throw StreamError.alreadyServing }
            state.servingForever = true
        }
        defer { state.withLock { $0.servingForever = false } }
        // Collecting before listening: every connection a client can make once the server listens
        // gets its handler here.
        state.withLock { $0.collectingHandlers = true }
        do {
            try await startServing()
        } catch {
            let stray = state.withLock { state in
                state.collectingHandlers = false
                defer { state.pendingHandlers = [] }
                return state.pendingHandlers
            }
            for handler in stray { handler.start() }
            throw error
        }
        var cancelled = false
        // On the listener's loop: each accepted connection wakes this task, which would otherwise
        // resume on the global pool, a thread hop and two libdispatch blocks per connection.
        await withTaskExecutorPreference(listenerLoop) {
            await collectHandlers(cancelled: &cancelled)
        }
        if cancelled || Task.isCancelled {
            close()
            throw CancellationError()
        }
    }

    /// serveForever's task group: starts each pending handler as a child task on its loop until
    /// the server closes or the task is cancelled (then `cancelled` is set).
    private func collectHandlers(cancelled: inout Bool) async {
        // One cancellation handler for all the children: it wakes their waiting reads.
        await withTaskCancellationHandler {
            await collectHandlersInGroup(cancelled: &cancelled)
        } onCancel: {
            cancelChildHandlers()
        }
    }

    private func collectHandlersInGroup(cancelled: inout Bool) async {
        // Every child has ended once the group returns: give back the registry's peak capacity.
        defer { state.withLock { $0.childHandlerReaders = [:] } }
        await withDiscardingTaskGroup { group in
            while true {
                var batch: [PendingHandler] = []
                var finished = false
                do {
                    // Handlers first: those queued before close() still start here, so the
                    // switch back to standalone tasks (under the same lock) loses none.
                    try await state.wait(in: \.foreverWaiters) { state in
                        if !state.pendingHandlers.isEmpty {
                            swap(&batch, &state.pendingHandlers)
                            return true
                        }
                        guard state.closed else { return false }
                        state.collectingHandlers = false
                        finished = true
                        return true
                    }
                } catch {
                    // Only cancellation ends the wait with an error. Queued handlers still start,
                    // as children of a cancelled task: they see the cancellation at once.
                    cancelled = true
                    finished = true
                    state.withLock { state in
                        state.collectingHandlers = false
                        swap(&batch, &state.pendingHandlers)
                    }
                    close()
                }
                for handler in batch {
                    childHandlerStarts(handler.reader)
                    group.addTask(executorPreference: handler.loop) {
                        await handler.run()
                        self.childHandlerEnded(handler.reader)
                    }
                }
                if finished { break }
            }
        }
    }

    /// A child handler with `reader` starts. Registered before its task is added: a cancellation
    /// whose snapshot misses it came after the task's flag was set, so the child starts cancelled,
    /// and its reads see that flag.
    private func childHandlerStarts(_ reader: StreamReader) {
        state.withLock { $0.childHandlerReaders[ObjectIdentifier(reader)] = reader }
    }

    private func childHandlerEnded(_ reader: StreamReader) {
        state.withLock { _ = $0.childHandlerReaders.removeValue(forKey: ObjectIdentifier(reader)) }
    }

    /// serveForever's task was cancelled, and with it its children: their waiting reads end.
    private func cancelChildHandlers() {
        let readers = state.withLock { Array($0.childHandlerReaders.values) }
        for reader in readers { reader.coveredTaskCancelled() }
    }

    /// Whether a `serveForever()` task is collecting handlers, so new connections' handlers run
    /// as its children; for tests.
    package var isCollectingHandlers: Bool {
        state.withLock { $0.collectingHandlers }
    }

    /// Runs a connection's handler: as a child of the serveForever task when there is one, else
    /// as a task of its own on `loop`; from the connection's loop.
    fileprivate func runHandler(_ handler: PendingHandler) {
        let waiters = state.withLock { state -> Waiters<any Error>.Taken? in
            guard state.collectingHandlers else { return nil }
            state.pendingHandlers.append(handler)
            return state.foreverWaiters.takeAll()
        }
        if let waiters {
            waiters.resume()
        } else {
            handler.start()
        }
    }

    /// Closes every connection the server accepted, after their queued data (asyncio 3.13
    /// `close_clients()`).
    public func closeClients() {
        for transport in state.withLock({ Array($0.connections.values) }) { transport.close() }
    }

    /// Aborts every connection the server accepted (asyncio 3.13 `abort_clients()`).
    public func abortClients() {
        for transport in state.withLock({ Array($0.connections.values) }) { transport.abort() }
    }

    /// Serves while `body` runs, then closes the server and waits for it (asyncio `async with server`).
    ///
    /// - Parameter body: The work to do while serving.
    /// - Returns: What `body` returned.
    /// - Throws: What `startServing()` or `body` threw.
    public func withServing<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await startServing()
        do {
            let result = try await body()
            close()
            await waitClosed()
            return result
        } catch {
            close()
            await waitClosed()
            throw error
        }
    }

    // MARK: Connections

    /// Runs `work` for each listener on that listener's loop, one hop per loop.
    private func onListenerLoops(_ listeners: [Listener], _ work: @escaping @Sendable (Listener) -> Void) {
        var byLoop: [ObjectIdentifier: (loop: EventLoop, listeners: [Listener])] = [:]
        var order: [ObjectIdentifier] = []
        for listener in listeners {
            let key = ObjectIdentifier(listener.loop)
            if byLoop[key] == nil { order.append(key) }
            byLoop[key, default: (listener.loop, [])].listeners.append(listener)
        }
        for key in order {
            let (loop, group) = byLoop[key]!
            if loop.inEventLoop {
                for listener in group { work(listener) }
            } else {
                loop.execute { for listener in group { work(listener) } }
            }
        }
    }

    /// A descriptor a listener accepted; on that listener's loop, `acceptingLoop`.
    private func accepted(_ fd: Int32, acceptedOn acceptingLoop: EventLoop) {
        if acceptsPerLoop {
            // The kernel already picked this loop by picking its socket: no hand-off.
            serve(fd, on: acceptingLoop)
            return
        }
        let loop = nextConnectionLoop()
        if loop === listenerLoop {
            serve(fd, on: loop)
        } else {
            loop.execute { self.serve(fd, on: loop) }
        }
    }

    /// The next of the connection loops, round robin, skipping loops that cannot do I/O (a ring
    /// that could not be made); the listener's own loop when none can.
    private func nextConnectionLoop() -> EventLoop {
        let start = nextLoop.add(1, ordering: .relaxed).oldValue
        for offset in 0..<connectionLoops.count {
            let loop = connectionLoops[(start + offset) % connectionLoops.count]
            if loop === listenerLoop || loop.unavailable == nil { return loop }
        }
        return listenerLoop
    }

    private func serve(_ fd: Int32, on loop: EventLoop) {
        if unixSocket == nil {
            // asyncio sets TCP_NODELAY on every TCP transport: replies must not wait for Nagle.
            try? SocketDescriptor.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        }
        let id = state.withLock { state -> Int in
            state.nextConnection += 1
            return state.nextConnection
        }
        starter.start(
            fd, loop, ConnectionSlot(server: self, id: id, loop: loop, idle: idleSweeps[ObjectIdentifier(loop)]))
    }

    /// A connection's top transport, known before it can close.
    fileprivate func connectionRegistered(_ id: Int, _ transport: any Transport) {
        state.withLock { $0.connections[id] = transport }
    }

    fileprivate func connectionClosed(_ id: Int) {
        state.withLock { _ = $0.connections.removeValue(forKey: id) }
        finishIfIdle()
    }

    private func listenerClosed() {
        state.withLock { $0.openListeners -= 1 }
        finishIfIdle()
    }

    private func finishIfIdle() {
        state.withLock { state in
            state.isIdleAfterClose ? state.closeWaiters.takeAll() : .none
        }.resume()
    }
}

/// What a server does with an accepted descriptor, on the loop the connection will live on: make
/// its transports and start them, telling `slot` the top transport before starting and when the
/// socket has closed.
struct ConnectionStarter: Sendable {
    let start: @Sendable (_ fileDescriptor: Int32, _ loop: EventLoop, _ slot: ConnectionSlot) -> Void
    /// Connections with no receive or send completion for this long are aborted (``IdleSweep``).
    let idleTimeout: Duration?

    init(
        idleTimeout: Duration? = nil,
        start: @escaping @Sendable (_ fileDescriptor: Int32, _ loop: EventLoop, _ slot: ConnectionSlot) -> Void
    ) {
        self.idleTimeout = idleTimeout
        self.start = start
    }
}

/// A connection's handler, to be started on `loop` as a task of its own or as a child of the
/// serveForever task.
///
/// The task's closure calls `clientConnected` itself rather than a closure made per connection:
/// each level of closure between a task and its handler's `read` adds frames the idle task keeps,
/// and a few such levels pushed those frames into a second 1 KiB task-allocator slab per
/// connection (docs/benchmarks.md, "Idle memory: one allocator slab per handler task").
struct PendingHandler: Sendable {
    let loop: EventLoop
    let clientConnected: Server.ClientConnected
    let reader: StreamReader
    let writer: StreamWriter

    /// Starts the handler as a task of its own on the loop.
    func start() {
        Task(executorPreference: loop) { await run() }
    }

    /// The handler task's body: `clientConnected`, with the task marked as the reader's handler
    /// (``StreamReader/cover(_:)``). Nothing but the server cancels this task: a standalone one is
    /// held by no one, and serveForever wakes its children's reads when it is cancelled.
    func run() async {
        reader.cover(CurrentTask.address)
        await clientConnected(reader, writer)
        reader.cover(0)
    }
}

/// One accepted connection's place in its server's count; on the connection's loop.
struct ConnectionSlot: Sendable {
    fileprivate let server: Server
    fileprivate let id: Int
    fileprivate let loop: EventLoop
    /// The server's idle sweep on the connection's loop, when it has an idle timeout.
    fileprivate let idle: IdleSweep?

    /// Call before the transports start: from then on the server counts the connection (and its
    /// idle timeout watches `socket`).
    func register(_ transport: any Transport, socket: SocketTransport) {
        loop.recordConnectionAccepted()
        server.connectionRegistered(id, transport)
        idle?.watch(socket)
    }

    /// The connection's socket has closed.
    func closed(_ socket: SocketTransport) {
        idle?.forget(socket)
        loop.recordConnectionClosed()
        server.connectionClosed(id)
    }

    /// Runs the connection's handler as the server runs handlers (see ``Server/serveForever()``).
    func runHandler(
        _ reader: StreamReader, _ writer: StreamWriter, _ clientConnected: @escaping Server.ClientConnected
    ) {
        server.runHandler(PendingHandler(loop: loop, clientConnected: clientConnected, reader: reader, writer: writer))
    }

    /// Logs and counts a server-side TLS handshake that failed (asyncio logs it at error, "SSL
    /// handshake failed"); the connection is closed without a handler.
    func handshakeFailed(_ error: any Error) {
        loop.recordHandshakeFailure()
        server.logger.error(
            "TLS handshake failed; connection closed", metadata: ["error": "\(error)", "loop": "\(loop.id)"])
    }
}
