internal import CTLS
internal import Glibc
@_spi(UringInternals) import UringRuntime

/// TLS as a transport layer (asyncio's `sslproto.py`: `SSLProtocol` with its
/// `_SSLProtocolTransport`): it is the protocol of the socket's transport below, turning the
/// ciphertext it receives into plaintext for the protocol above, and it is the transport that
/// protocol writes to, turning plaintext into records for the socket. OpenSSL runs over two
/// memory BIOs; all socket I/O stays on the socket transport (io_uring).
///
/// Received data arrives on the loop thread; writes come from any thread. One lock serialises
/// every use of the OpenSSL object, and ciphertext is handed to the socket transport under that
/// lock, so records reach the socket in the order they were made. The protocol above hears
/// `connectionMade` once the handshake has finished, and `connectionLost` only after that.
///
/// Corresponds to asyncio's `_SSLProtocolTransport` (what `writer.transport` is over TLS).
public final class TLSTransport: StreamProtocol, StreamsTransport, @unchecked Sendable {
    // Sendable: `ssl` (and its BIOs) are used only inside `state.withLock`; `upper` and `madeUpper`
    // only on the loop thread; everything else is immutable or thread-safe.

    private enum Phase { case handshaking, established, failed }

    private struct State {
        var phase = Phase.handshaking
        /// Why the connection failed: the handshake's error, a protocol error, or the timeout.
        var error: (any Error)?
        /// Plaintext written before the handshake finished, sent once it has.
        var pending: [Bytes] = []
        /// close() or writeEOF() was called: close_notify is (or will be) sent, writes are dropped.
        var writeShut = false
        var closeNotifySent = false
        /// close() was called: the socket closes once the peer's close_notify (or EOF) came.
        var closing = false
        /// The peer's close_notify or end of file arrived.
        var peerClosed = false
        /// Aborts the connection when closing takes longer than the shutdown timeout.
        var shutdownTimer: Task<Void, Never>?
        var droppedWrite = false
        var handshakeWaiters = Waiters<any Error>()
        /// The protocol above heard `connectionMade`: only then is the connection made for those
        /// waiting on the handshake (asyncio's create_connection returns after connection_made).
        var announced = false
        var info: TLSConnectionInfo?
    }

    /// The socket's transport, which carries the records.
    package let inner: SocketTransport
    package let context: TLSContext
    /// The name sent in SNI and verified (clients only).
    let serverHostname: String?
    /// How long ``close()`` waits for the peer's close_notify and for queued data to leave.
    let shutdownTimeout: Duration
    private let ssl: OpaquePointer
    private let input: OpaquePointer
    private let output: OpaquePointer
    private let state = Locked(State())

    // Loop-thread state.
    private var upper: (any StreamProtocol)? {
        didSet { bufferedUpper = upper as? any BufferedStreamProtocol }
    }
    /// `upper` when it reads in place: it gets ``BufferedStreamProtocol/bytesReceived(_:)``, as
    /// over a socket.
    private var bufferedUpper: (any BufferedStreamProtocol)?
    private var madeUpper = false

    /// Ciphertext or plaintext taken from OpenSSL at once; a TLS record carries at most 16 KiB.
    private static let recordSize = 16 * 1024
    /// The most plaintext one chunk holds (the transport's receive buffers are this large).
    private static let largestChunk = 256 * 1024

    /// asyncio's default `ssl_shutdown_timeout`.
    package static let defaultShutdownTimeout = Duration.seconds(30)

    public var loop: EventLoop { inner.loop }

    /// A connection in the handshake phase over `inner`, for `upper`; ``start()`` sends the first
    /// flight once `inner` hands its data here.
    ///
    /// - Parameters:
    ///   - serverHostname: For a client: the name for SNI (omitted for IP addresses) and for
    ///     verification (a DNS name or an IP address). Required when the client verifies.
    /// - Throws: ``StreamError/invalidArgument(_:)`` when a verifying client has no name, or
    ///   OpenSSL cannot make the connection object.
    package init(
        context: TLSContext, inner: SocketTransport, serverHostname: String?, upper: any StreamProtocol,
        shutdownTimeout: Duration = TLSTransport.defaultShutdownTimeout
    ) throws {
        self.shutdownTimeout = shutdownTimeout
        let configuration = context.configuration
        if configuration.role == .client, configuration.verifyPeer, serverHostname?.isEmpty ?? true {
            // asyncio: "You must set server_hostname when using ssl without a host".
            throw StreamError.invalidArgument("TLS with verification needs serverHostname (or a host to connect to)")
        }
        ERR_clear_error()
        guard let ssl = SSL_new(context.pointer) else {
            throw StreamError.invalidArgument("cannot create a TLS connection: \(TLSError.lastReason())")
        }
        guard let input = ctls_memory_bio(), let output = ctls_memory_bio() else {
            SSL_free(ssl)
            throw StreamError.invalidArgument("cannot create memory BIOs: \(TLSError.lastReason())")
        }
        // The SSL object owns both BIOs from here on.
        SSL_set_bio(ssl, input, output)
        self.ssl = ssl
        self.input = input
        self.output = output
        self.inner = inner
        self.context = context
        self.upper = upper
        bufferedUpper = upper as? any BufferedStreamProtocol
        if configuration.role == .client {
            self.serverHostname = serverHostname
            SSL_set_connect_state(ssl)
            if let name = serverHostname, !name.isEmpty {
                try configureServerName(name, verify: configuration.verifyPeer)
            }
        } else {
            self.serverHostname = nil
            SSL_set_accept_state(ssl)
        }
    }

    deinit {
        SSL_free(ssl)
    }

    /// SNI (for DNS names only, RFC 6066) and the name the certificate must match.
    private func configureServerName(_ name: String, verify: Bool) throws {
        let isAddress = Self.isIPAddress(name)
        if !isAddress {
            guard ctls_set_server_name(ssl, name) == 1 else {
                throw StreamError.invalidArgument("'\(name)' cannot be sent as a TLS server name")
            }
        }
        guard verify else { return }
        let accepted: Int32
        if isAddress {
            accepted = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
        } else {
            // As CPython: a wildcard matches one whole label only.
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            accepted = SSL_set1_host(ssl, name)
        }
        guard accepted == 1 else {
            throw StreamError.invalidArgument("'\(name)' cannot be verified as a TLS server name")
        }
    }

    private static func isIPAddress(_ name: String) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET, name, &address) == 1 || inet_pton(AF_INET6, name, &address) == 1
    }

    // MARK: Handshake

    /// Sends the client's first flight (a server waits for it); on the loop thread, once `inner`
    /// hands its data here.
    package func start() {
        var outcome = Outcome()
        state.withLock { state in advanceHandshake(&state, &outcome) }
        finish(outcome)
    }

    /// Waits until the handshake has finished.
    ///
    /// - Parameter timeout: The deadline; when it passes first the connection is aborted.
    /// - Throws: ``StreamError/timedOut``; ``StreamError/tlsHandshakeFailed(_:)``,
    ///   ``StreamError/tlsCertificateRejected(_:)``; the socket's error; `CancellationError`
    ///   (the connection is aborted).
    package func waitForHandshake(timeout: Duration) async throws {
        let loop = inner.loop
        let timer = Task(executorPreference: loop) { [weak self] in
            do { try await loop.sleep(for: timeout) } catch { return }
            self?.fail(StreamError.timedOut)
        }
        defer { timer.cancel() }
        do {
            try await state.wait(in: \.handshakeWaiters) { state in
                switch state.phase {
                case .established: return state.announced
                case .failed: throw state.error ?? StreamError.connectionReset
                case .handshaking: return false
                }
            }
        } catch is CancellationError {
            fail(CancellationError())
            throw CancellationError()
        }
    }

    /// What a step under the lock leaves to do outside it: calling the protocol above, resuming
    /// handshake waiters and closing never happen under the lock.
    private struct Outcome {
        var plaintext: [Bytes] = []
        var endOfStream = false
        /// The handshake finished: tell the protocol above, then resume the handshake's waiters.
        var established = false
        var failure: (error: any Error, waiters: Waiters<any Error>.Taken)?
        /// Abort rather than close after a failure: nothing worth sending is queued.
        var abort = false
        /// close() waited for the peer's close_notify, which has come: close the socket.
        var closeSocket = false
    }

    /// Runs the handshake as far as the received data allows; under the lock.
    private func advanceHandshake(_ state: inout State, _ outcome: inout Outcome) {
        guard state.phase == .handshaking else { return }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            state.phase = .established
            state.info = TLSConnectionInfo(
                ssl: ssl, serverHostname: serverHostname, configuration: context.configuration)
            outcome.established = true
            for bytes in state.pending { bytes.withUnsafeBytes { encrypt($0, &state, &outcome) } }
            state.pending.removeAll()
            if state.writeShut { sendCloseNotify(&state) }
        } else {
            let code = SSL_get_error(ssl, result)
            if code != SSL_ERROR_WANT_READ && code != SSL_ERROR_WANT_WRITE {
                fail(TLSError.current(ssl: ssl), &state, &outcome)
            }
        }
        flushOutput()
    }

    // MARK: The socket's protocol

    public func connectionMade(_ transport: any Transport) {}

    /// Ciphertext from the socket; on the loop thread.
    public func dataReceived(_ data: Bytes) {
        var outcome = Outcome()
        state.withLock { state in
            guard state.phase != .failed else { return }
            data.withUnsafeBytes { raw in
                // A memory BIO grows to take everything.
                _ = BIO_write(input, raw.baseAddress, Int32(raw.count))
            }
            advanceHandshake(&state, &outcome)
            if state.phase == .established { decrypt(&state, &outcome) }
            flushOutput()
        }
        finish(outcome)
    }

    /// Takes every whole record out of the input BIO; under the lock. The input holds at most what
    /// one receive delivered, so the plaintext made here is bounded too, and the reader's limit
    /// (which pauses the socket) bounds the rest.
    private func decrypt(_ state: inout State, _ outcome: inout Outcome) {
        // Stop before allocating a record's worth of memory when nothing is left to read.
        while ctls_bio_pending(input) > 0 || SSL_has_pending(ssl) == 1 {
            ERR_clear_error()
            var result: Int32 = 0
            // Room for everything that arrived (plaintext is never longer than its ciphertext), so
            // one receive's records become one chunk and a read of it needs no join.
            let available = ctls_bio_pending(input) + Int(max(SSL_pending(ssl), 0))
            let capacity = min(max(available, Self.recordSize), Self.largestChunk)
            let bytes = Bytes(capacity: capacity) { buffer in
                var filled = 0
                while filled < buffer.count {
                    result = SSL_read(ssl, buffer.baseAddress! + filled, Int32(buffer.count - filled))
                    guard result > 0 else { break }
                    filled += Int(result)
                }
                return filled
            }
            if bytes.count > 0 {
                // Small messages are copied out, so a chatty peer does not pin a buffer per message.
                outcome.plaintext.append(bytes.count >= capacity / 2 ? bytes : Bytes(bytes))
                if result > 0 { continue }
            }
            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return
            case SSL_ERROR_ZERO_RETURN:
                // close_notify: the peer's orderly end of data.
                peerClosed(&state, &outcome)
                return
            default:
                fail(TLSError.current(ssl: ssl), &state, &outcome)
                return
            }
        }
    }

    /// The socket saw end of file; on the loop thread. Mid-handshake that fails the handshake;
    /// afterwards it ends the stream even without close_notify, as asyncio does (many servers
    /// close without it). The socket stays open: closing is decided here.
    public func eofReceived() -> Bool {
        var outcome = Outcome()
        state.withLock { state in
            switch state.phase {
            case .handshaking:
                fail(
                    StreamError.tlsHandshakeFailed("the peer closed the connection during the handshake"), &state,
                    &outcome)
            case .established:
                peerClosed(&state, &outcome)
            case .failed:
                break
            }
        }
        finish(outcome)
        return true
    }

    /// The socket closed; on the loop thread. A handshake still waiting fails with the socket's
    /// error; the protocol above hears of it if it heard the connection was made.
    public func connectionLost(_ error: (any Error)?) {
        var outcome = Outcome()
        let timer = state.withLock { state -> Task<Void, Never>? in
            if state.phase == .handshaking {
                fail(
                    error ?? StreamError.tlsHandshakeFailed("the connection closed during the handshake"), &state,
                    &outcome)
            }
            return state.shutdownTimer.take()
        }
        timer?.cancel()
        finish(outcome)
        let reported = state.withLock { $0.error } ?? error
        let upper = self.upper
        self.upper = nil
        if madeUpper { upper?.connectionLost(reported) }
    }

    public func pauseWriting() {
        upper?.pauseWriting()
    }

    public func resumeWriting() {
        upper?.resumeWriting()
    }

    // MARK: Writing

    /// Encrypts `bytes` and queues the records on the socket; from any thread. Before the
    /// handshake has finished the plaintext waits; after close() or writeEOF() it is dropped.
    public func write(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        bytes.withUnsafeBytes { write($0, keeping: bytes) }
    }

    /// Encrypts `data` straight from the caller's memory: only plaintext that has to wait for the
    /// handshake is copied.
    public func write<Data: Collection>(_ data: Data) where Data.Element == UInt8 {
        guard !data.isEmpty else { return }
        if let bytes = data as? Bytes { return write(bytes) }
        let direct: Void? = data.withContiguousStorageIfAvailable { write(UnsafeRawBufferPointer($0), keeping: nil) }
        if direct == nil { write(Bytes(data)) }
    }

    /// `keeping`: the same bytes as a `Bytes`, to hold without copying if they must wait.
    private func write(_ raw: UnsafeRawBufferPointer, keeping bytes: Bytes?) {
        guard raw.count > 0 else { return }
        var outcome = Outcome()
        state.withLock { state in
            if state.writeShut || state.phase == .failed {
                state.droppedWrite = true
                return
            }
            if state.phase == .handshaking {
                state.pending.append(bytes ?? Bytes(raw))
                return
            }
            encrypt(raw, &state, &outcome)
            flushOutput()
        }
        finish(outcome)
    }

    /// SSL_write of the whole buffer, in slices an `Int32` can count (a memory BIO never pushes
    /// back, so each call takes its whole slice); under the lock.
    private func encrypt(_ raw: UnsafeRawBufferPointer, _ state: inout State, _ outcome: inout Outcome) {
        guard state.phase == .established else { return }
        var offset = 0
        while offset < raw.count {
            let count = min(raw.count - offset, 1 << 30)
            ERR_clear_error()
            let result = SSL_write(ssl, raw.baseAddress! + offset, Int32(count))
            guard result > 0 else {
                fail(TLSError.current(ssl: ssl), &state, &outcome)
                return
            }
            offset += Int(result)
            // Per slice, so the output BIO never holds more than one slice's records.
            flushOutput()
        }
    }

    /// Moves what OpenSSL produced (records, alerts) to the socket; under the lock, so the
    /// socket's queue has records in the order OpenSSL made them.
    private func flushOutput() {
        let pending = ctls_bio_pending(output)
        guard pending > 0 else { return }
        let bytes = Bytes(capacity: pending) { buffer in
            var filled = 0
            while filled < buffer.count {
                let read = BIO_read(output, buffer.baseAddress! + filled, Int32(min(buffer.count - filled, 1 << 30)))
                guard read > 0 else { break }
                filled += Int(read)
            }
            return filled
        }
        inner.write(bytes)
    }

    /// Queues close_notify once; under the lock.
    private func sendCloseNotify(_ state: inout State) {
        guard state.phase == .established, !state.closeNotifySent else { return }
        state.closeNotifySent = true
        ERR_clear_error()
        // 0 means "sent, the peer's has not come": close() waits for it separately.
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
        flushOutput()
    }

    /// Sends close_notify after what is queued; later writes are dropped. The socket stays open
    /// for reading (TLS has no half-close of its own; asyncio refuses `write_eof` over TLS).
    public func writeEOF() {
        state.withLock { state in
            guard !state.writeShut else { return }
            state.writeShut = true
            sendCloseNotify(&state)
        }
    }

    /// False: TLS has no half-close a peer must honour (asyncio `can_write_eof()`).
    public var canWriteEOF: Bool { false }

    /// Sends close_notify, waits for the peer's (or its end of file), then closes the socket once
    /// what is queued has gone; aborts with ``StreamError/timedOut`` when all that takes longer
    /// than the shutdown timeout (asyncio `close()` on an SSL transport, with
    /// `ssl_shutdown_timeout`).
    public func close() {
        let closeNow = state.withLock { state -> Bool? in
            state.writeShut = true
            sendCloseNotify(&state)
            guard !state.closing else { return nil }
            state.closing = true
            return state.phase != .established || state.peerClosed
        }
        guard let closeNow else { return }
        if closeNow { inner.close() }
        // Also when closing now: a peer that stops reading would keep the queue from draining.
        let inner = self.inner
        let timeout = shutdownTimeout
        let timer = Task(executorPreference: inner.loop) {
            do { try await inner.loop.sleep(for: timeout) } catch { return }
            inner.abort(failing: StreamError.timedOut)
        }
        let lost = state.withLock { state -> Bool in
            state.shutdownTimer = timer
            return inner.isLost
        }
        if lost { timer.cancel() }
    }

    /// Closes the socket at once, without close_notify (asyncio `abort()`).
    public func abort() {
        inner.abort()
    }

    public var isClosing: Bool { state.withLock { $0.closing } || inner.isClosing }

    private var closeRequested: Bool { state.withLock { $0.closing } }

    /// The peer ended its side (close_notify or end of file); under the lock. The first of them
    /// is the end of the stream: close_notify followed by the socket's end of file tells the
    /// protocol above once.
    private func peerClosed(_ state: inout State, _ outcome: inout Outcome) {
        guard !state.peerClosed else { return }
        state.peerClosed = true
        outcome.endOfStream = true
        if state.closing { outcome.closeSocket = true }
    }

    // MARK: The socket's other members

    public func pauseReading() { inner.pauseReading() }
    public func resumeReading() { inner.resumeReading() }
    public var isReading: Bool { inner.isReading }
    /// The encrypted bytes queued on the socket (plaintext is encrypted at once).
    public var writeBufferSize: Int { inner.writeBufferSize }
    public var writeBufferLimits: (low: Int, high: Int) { inner.writeBufferLimits }
    public func setWriteBufferLimits(high: Int?, low: Int?) { inner.setWriteBufferLimits(high: high, low: low) }
    public var peerAddress: SocketAddress? { inner.peerAddress }
    public var localAddress: SocketAddress? { inner.localAddress }

    /// The TLS names (`"sslcontext"`, `"peercert"`, `"cipher"`, `"compression"`, `"ssl_object"`;
    /// nil until the handshake has finished) and the socket's.
    public func extraInfo(_ name: String) -> Any? {
        switch name {
        case "sslcontext": return context.configuration
        case "peercert": return info?.peerCertificate
        case "cipher": return info?.cipher
        case "ssl_object": return info
        case "compression": return nil
        default: return inner.extraInfo(name)
        }
    }

    package var drainStatus: DrainStatus {
        let (error, dropped) = state.withLock { ($0.error, $0.droppedWrite) }
        if let error { return .fail(error) }
        if dropped { return .fail(StreamError.closed) }
        return inner.drainStatus
    }

    package func waitForDrain() async throws { try await inner.waitForDrain() }
    package func waitClosed() async throws { try await inner.waitClosed() }
    package var connectionError: (any Error)? { state.withLock { $0.error } ?? inner.connectionError }

    // MARK: Failing

    /// Fails the connection from outside (the handshake timeout, a cancelled wait).
    func fail(_ error: any Error) {
        var outcome = Outcome()
        state.withLock { state in
            guard state.phase == .handshaking else { return }
            fail(error, &state, &outcome)
        }
        // A peer that stalls may not read either: closing could wait on a full socket forever.
        outcome.abort = true
        finish(outcome)
    }

    private func fail(_ error: any Error, _ state: inout State, _ outcome: inout Outcome) {
        guard state.phase != .failed else { return }
        state.phase = .failed
        state.error = error
        state.pending.removeAll()
        outcome.failure = (error, state.handshakeWaiters.takeAll())
    }

    /// Does outside the lock what a step decided: hand plaintext to the protocol above, tell it the
    /// connection is made, resume handshake waiters, and on failure send what alert OpenSSL queued
    /// and close.
    private func finish(_ outcome: Outcome) {
        if outcome.established {
            if !madeUpper, let upper {
                madeUpper = true
                upper.connectionMade(self)
            }
            // Waiters are taken only now: one that looked between the handshake's end and
            // connectionMade must not return to a caller whose protocol has not heard it yet.
            let waiters = state.withLock { state in
                state.announced = true
                return state.handshakeWaiters.takeAll()
            }
            waiters.resume()
        }
        // Once close() was asked for, the protocol above hears nothing more but its loss: asyncio's
        // SSL transport reads only to find the peer's close_notify then.
        for bytes in outcome.plaintext {
            if closeRequested { break }
            if let bufferedUpper {
                bytes.withUnsafeBytes { bufferedUpper.bytesReceived($0) }
            } else {
                upper?.dataReceived(bytes)
            }
        }
        if outcome.endOfStream, !closeRequested {
            // The protocol decides, as over a socket; asyncio always closes here (its SSL has no
            // half-close), UringStreams keeps the write half when asked: TLS 1.3 allows it.
            if upper?.eofReceived() != true { close() }
        }
        if outcome.closeSocket { inner.close() }
        if let (error, waiters) = outcome.failure {
            if outcome.abort {
                inner.abort(failing: error)
            } else {
                // Close, not abort: the alert OpenSSL queued (e.g. unknown CA) should reach the
                // peer; the socket then reports this error.
                inner.close(failing: error)
            }
            waiters.resume(throwing: error)
        }
    }

    // MARK: State for the streams

    /// The error the connection failed with, once it failed.
    package var error: (any Error)? { state.withLock { $0.error } }

    /// What the handshake negotiated; nil until it has finished.
    package var info: TLSConnectionInfo? { state.withLock { $0.info } }
}
