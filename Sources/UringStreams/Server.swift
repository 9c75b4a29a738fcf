internal import Glibc
import Synchronization

/// A listening server made by `startServer` or `startUnixServer` (asyncio `asyncio.Server`).
///
/// Each accepted connection gets a reader and a writer on one loop, for its whole life, and
/// `clientConnected` runs as a task on that loop.
public final class Server: Sendable {
    public typealias ClientConnected = @Sendable (StreamReader, StreamWriter) async -> Void

    private struct State {
        var serving = false
        var closed = false
        var servingForever = false
        var foreverWaiter: UnsafeContinuation<Void, Never>?
        /// With the TLS session, if any, so closeClients sends close_notify.
        var connections: [ObjectIdentifier: (transport: StreamTransport, tls: TLSSession?)] = [:]
        var closeWaiters = Waiters<Never>()
        /// Listeners that have not closed their descriptor yet.
        var openListeners = 0

        /// Closed, with no listening socket and no connection left.
        var isIdleAfterClose: Bool { closed && openListeners == 0 && connections.isEmpty }
    }

    /// The addresses the server listens on; empty once closed (asyncio `server.sockets`).
    public var addresses: [SocketAddress] { state.withLock { $0.closed } ? [] : boundAddresses }
    private let boundAddresses: [SocketAddress]
    private let descriptors: [ListeningDescriptor]
    private let listeners = Locked<[Listener]>([])
    private let listenerLoop: EventLoop
    private let connectionLoops: [EventLoop]
    private let nextLoop = Atomic<Int>(0)
    private let limit: Int
    private let backlog: Int
    private let clientConnected: ClientConnected
    private let unixSocket: (path: String, inode: UInt)?
    private let tls: TLSRequest?
    private let state = Locked(State())

    init(
        descriptors: [Int32], listenerLoop: EventLoop, connectionLoops: [EventLoop], limit: Int, backlog: Int,
        unixSocket: (path: String, inode: UInt)?, tls: TLSRequest? = nil, clientConnected: @escaping ClientConnected
    ) {
        self.tls = tls
        self.descriptors = descriptors.map(ListeningDescriptor.init)
        boundAddresses = descriptors.compactMap { SocketDescriptor.localAddress(of: $0) }
        self.listenerLoop = listenerLoop
        self.connectionLoops = connectionLoops
        self.limit = limit
        self.backlog = backlog
        self.unixSocket = unixSocket
        self.clientConnected = clientConnected
    }

    /// Starts accepting connections; does nothing when already serving.
    ///
    /// - Throws: ``StreamError/serverClosed`` on a closed server; a `listen` failure.
    ///
    /// Corresponds to asyncio `await server.start_serving()`.
    public func startServing() async throws {
        let start = try state.withLock { state -> Bool in
            if state.closed { throw StreamError.serverClosed }
            if state.serving { return false }
            state.serving = true
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
            state.withLock { $0.serving = false }
            throw error
        }
        let made = descriptors.map { descriptor in
            Listener(
                loop: listenerLoop, descriptor: descriptor, onAccept: { [self] accepted in self.accepted(accepted) },
                onClosed: { [self] in listenerClosed() })
        }
        state.withLock { $0.openListeners += made.count }
        listeners.withLock { $0 = made }
        // A close() that comes meanwhile releases the descriptors: those listeners then close
        // instead of accepting.
        runOnListenerLoop { for listener in made { listener.start() } }
    }

    /// Whether the server accepts connections (asyncio `is_serving()`).
    public var isServing: Bool { state.withLock { $0.serving } }

    /// Stops listening and closes the listening sockets before it returns; connections already
    /// accepted stay open (asyncio `close()`). A Unix server's socket file is removed (asyncio 3.13).
    public func close() {
        let waiter = state.withLock { state -> UnsafeContinuation<Void, Never>?? in
            guard !state.closed else { return nil }
            state.closed = true
            state.serving = false
            return .some(state.foreverWaiter.take())
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
        if !running.isEmpty { runOnListenerLoop { for listener in running { listener.close() } } }
        waiter?.resume()
        finishIfIdle()
    }

    /// Waits until the server is closed, its listening sockets are gone (the port can be bound
    /// again) and every connection it accepted has closed. Returns early, without throwing, when
    /// the calling task is cancelled.
    ///
    /// Corresponds to asyncio `await server.wait_closed()` (3.12.1 and later).
    public func waitClosed() async {
        let id = state.withLock { $0.closeWaiters.reserveID() }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let done = state.withLock { state -> Bool in
                    if state.isIdleAfterClose || Task.isCancelled { return true }
                    state.closeWaiters.add(continuation, id: id)
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.closeWaiters.remove(id) }
            waiter?.resume()
        }
    }

    /// Serves until the server is closed.
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
        try await startServing()
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let done = state.withLock { state -> Bool in
                    if state.closed || Task.isCancelled { return true }
                    state.foreverWaiter = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            close()
        }
        if Task.isCancelled {
            close()
            throw CancellationError()
        }
    }

    /// Closes every connection the server accepted, after their queued data (asyncio 3.13
    /// `close_clients()`).
    public func closeClients() {
        for connection in state.withLock({ Array($0.connections.values) }) {
            if let tls = connection.tls { tls.close() } else { connection.transport.close() }
        }
    }

    /// Aborts every connection the server accepted (asyncio 3.13 `abort_clients()`).
    public func abortClients() {
        for connection in state.withLock({ Array($0.connections.values) }) { connection.transport.abort() }
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

    private func runOnListenerLoop(_ work: @escaping @Sendable () -> Void) {
        if listenerLoop.inEventLoop { work() } else { listenerLoop.execute(work) }
    }

    /// A descriptor the listener accepted; on the listener's loop.
    private func accepted(_ fd: Int32) {
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
        var key: ObjectIdentifier?
        let streams: (StreamReader, StreamWriter)
        do {
            streams = try makeStreams(loop: loop, fileDescriptor: fd, limit: limit, tls: tls) { [self] in
                if let key { self.connectionClosed(key) }
            }
        } catch {
            // The TLS session could not be made (out of memory): the descriptor is closed already,
            // and asyncio, too, drops a connection whose SSL set-up fails.
            return
        }
        let (reader, writer) = streams
        let transport = writer.transport
        key = ObjectIdentifier(transport)
        let session = writer.tlsSession
        state.withLock { $0.connections[ObjectIdentifier(transport)] = (transport, session) }
        let handler = clientConnected
        let handshakeTimeout = tls?.handshakeTimeout
        Task(executorPreference: loop) {
            if let session, let handshakeTimeout {
                // As asyncio: the callback runs once the handshake is done; a failed handshake
                // closes the connection (the session did) without it.
                do { try await session.waitForHandshake(timeout: handshakeTimeout) } catch { return }
            }
            await handler(reader, writer)
        }
    }

    private func connectionClosed(_ key: ObjectIdentifier) {
        state.withLock { _ = $0.connections.removeValue(forKey: key) }
        finishIfIdle()
    }

    private func listenerClosed() {
        state.withLock { $0.openListeners -= 1 }
        finishIfIdle()
    }

    private func finishIfIdle() {
        let waiters = state.withLock { state -> [UnsafeContinuation<Void, Never>] in
            guard state.isIdleAfterClose else { return [] }
            return state.closeWaiters.takeAll()
        }
        for waiter in waiters { waiter.resume() }
    }
}
