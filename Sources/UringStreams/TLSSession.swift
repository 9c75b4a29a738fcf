internal import CTLS
internal import Glibc

/// One TLS connection layered on a `StreamTransport`, driven through two memory BIOs as asyncio's
/// `sslproto.py` drives `ssl.MemoryBIO`: ciphertext the transport receives goes into the input
/// BIO and comes out as plaintext for the reader; plaintext the writer writes comes out of the
/// output BIO as ciphertext for the transport. All socket I/O stays on the transport (io_uring).
///
/// Received data arrives on the loop thread (through `StreamReaderProtocol`); writes come from any
/// thread. One lock serialises every use of the OpenSSL object, and ciphertext is handed to the
/// transport under that lock, so records reach the socket in the order they were made.
final class TLSSession: @unchecked Sendable {
    // Sendable: `ssl` (and its BIOs) are used only inside `state.withLock`; everything else is
    // immutable or thread-safe (transport, reader).

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
        /// close() was called: the transport closes once the peer's close_notify (or EOF) came.
        var closing = false
        /// The peer's close_notify or end of file arrived.
        var peerClosed = false
        /// Aborts the connection when closing takes longer than the shutdown timeout.
        var shutdownTimer: Task<Void, Never>?
        var droppedWrite = false
        var handshakeWaiter: UnsafeContinuation<Void, any Error>?
        var info: TLSConnectionInfo?
    }

    let transport: StreamTransport
    let reader: StreamReader
    let context: TLSContext
    /// The name sent in SNI and verified (clients only).
    let serverHostname: String?
    /// How long ``close()`` waits for the peer's close_notify and for queued data to leave.
    let shutdownTimeout: Duration
    private let ssl: OpaquePointer
    private let input: OpaquePointer
    private let output: OpaquePointer
    private let state = Locked(State())

    /// Ciphertext or plaintext taken from OpenSSL at once; a TLS record carries at most 16 KiB.
    private static let recordSize = 16 * 1024
    /// The most plaintext one chunk holds (the transport's receive buffers are this large).
    private static let largestChunk = 256 * 1024

    /// A connection in the handshake phase; ``start()`` sends the first flight.
    ///
    /// - Parameters:
    ///   - serverHostname: For a client: the name for SNI (omitted for IP addresses) and for
    ///     verification (a DNS name or an IP address). Required when the client verifies.
    /// - Throws: ``StreamError/invalidArgument(_:)`` when a verifying client has no name, or
    ///   OpenSSL cannot make the connection object.
    init(
        context: TLSContext, transport: StreamTransport, reader: StreamReader, serverHostname: String?,
        shutdownTimeout: Duration = TLSRequest.defaultShutdownTimeout
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
        self.transport = transport
        self.reader = reader
        self.context = context
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

    /// Sends the client's first flight (a server waits for it); on the loop thread, once received
    /// data is routed to this session.
    func start() {
        var outcome = Outcome()
        state.withLock { state in advanceHandshake(&state, &outcome) }
        finish(outcome)
    }

    /// Waits until the handshake has finished.
    ///
    /// - Parameter timeout: The deadline; when it passes first the connection is aborted.
    /// - Throws: ``StreamError/timedOut``; ``StreamError/tlsHandshakeFailed(_:)``,
    ///   ``StreamError/tlsCertificateRejected(_:)``; the transport's error; `CancellationError`
    ///   (the connection is aborted).
    func waitForHandshake(timeout: Duration) async throws {
        let loop = transport.loop
        let timer = Task(executorPreference: loop) { [weak self] in
            do { try await loop.sleep(for: timeout) } catch { return }
            self?.fail(StreamError.timedOut)
        }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                enum Check { case wait, ready, fail(any Error) }
                let check = state.withLock { state -> Check in
                    switch state.phase {
                    case .established: return .ready
                    case .failed: return .fail(state.error ?? StreamError.connectionReset)
                    case .handshaking:
                        if Task.isCancelled { return .fail(CancellationError()) }
                        state.handshakeWaiter = continuation
                        return .wait
                    }
                }
                switch check {
                case .wait: break
                case .ready: continuation.resume()
                case .fail(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            fail(CancellationError())
        }
    }

    /// What a step under the lock leaves to do outside it: feeding the reader, resuming the
    /// handshake's waiter and closing never happen under the session's lock.
    private struct Outcome {
        var plaintext: [Bytes] = []
        var endOfStream = false
        var handshakeDone: UnsafeContinuation<Void, any Error>?
        var failure: (error: any Error, waiter: UnsafeContinuation<Void, any Error>?)?
        /// Abort rather than close after a failure: nothing worth sending is queued.
        var abort = false
        /// close() waited for the peer's close_notify, which has come: close the transport.
        var closeTransport = false
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
            outcome.handshakeDone = state.handshakeWaiter.take()
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

    // MARK: Receiving

    /// Ciphertext from the transport; on the loop thread.
    func received(_ bytes: Bytes) {
        var outcome = Outcome()
        state.withLock { state in
            guard state.phase != .failed else { return }
            bytes.withUnsafeBytes { raw in
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
    /// (which pauses the transport) bounds the rest.
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
                outcome.endOfStream = true
                peerClosed(&state, &outcome)
                return
            default:
                fail(TLSError.current(ssl: ssl), &state, &outcome)
                return
            }
        }
    }

    /// The transport saw end of file; on the loop thread. Mid-handshake that fails the handshake;
    /// afterwards it ends the stream even without close_notify, as asyncio does (many servers
    /// close without it).
    func receivedEOF() {
        var outcome = Outcome()
        state.withLock { state in
            switch state.phase {
            case .handshaking:
                fail(
                    StreamError.tlsHandshakeFailed("the peer closed the connection during the handshake"), &state,
                    &outcome)
            case .established:
                outcome.endOfStream = true
                peerClosed(&state, &outcome)
            case .failed:
                break
            }
        }
        finish(outcome)
    }

    /// The transport closed; on the loop thread. A handshake still waiting fails with the
    /// transport's error.
    func connectionLost(_ error: (any Error)?) {
        var outcome = Outcome()
        let timer = state.withLock { $0.shutdownTimer.take() }
        timer?.cancel()
        state.withLock { state in
            guard state.phase == .handshaking else { return }
            fail(
                error ?? StreamError.tlsHandshakeFailed("the connection closed during the handshake"), &state, &outcome)
        }
        finish(outcome)
    }

    // MARK: Writing

    /// Encrypts `bytes` and queues the records on the transport; from any thread. Before the
    /// handshake has finished the plaintext waits; after close() or writeEOF() it is dropped.
    func write(_ bytes: Bytes) {
        guard bytes.count > 0 else { return }
        bytes.withUnsafeBytes { write($0, keeping: bytes) }
    }

    /// Encrypts `data` straight from the caller's memory: only plaintext that has to wait for the
    /// handshake is copied.
    func write(_ data: some Collection<UInt8>) {
        guard !data.isEmpty else { return }
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

    /// Moves what OpenSSL produced (records, alerts) to the transport; under the lock, so the
    /// transport's queue has records in the order OpenSSL made them.
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
        transport.write(bytes)
    }

    /// Queues close_notify once; under the lock.
    private func sendCloseNotify(_ state: inout State) {
        guard state.phase == .established, !state.closeNotifySent else { return }
        state.closeNotifySent = true
        ERR_clear_error()
        // 0 means "sent, the peer's has not come": we do not wait for it (see docs/tls.md).
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
        flushOutput()
    }

    /// Sends close_notify after what is queued; later writes are dropped. The transport stays open
    /// for reading (TLS has no half-close of its own; asyncio refuses `write_eof` over TLS).
    func writeEOF() {
        state.withLock { state in
            guard !state.writeShut else { return }
            state.writeShut = true
            sendCloseNotify(&state)
        }
    }

    /// Sends close_notify, waits for the peer's (or its end of file), then closes the transport
    /// once what is queued has gone; aborts with ``StreamError/timedOut`` when all that takes
    /// longer than the shutdown timeout (asyncio `close()` on an SSL transport, with
    /// `ssl_shutdown_timeout`).
    func close() {
        let closeNow = state.withLock { state -> Bool? in
            state.writeShut = true
            sendCloseNotify(&state)
            guard !state.closing else { return nil }
            state.closing = true
            return state.phase != .established || state.peerClosed
        }
        guard let closeNow else { return }
        if closeNow { transport.close() }
        // Also when closing now: a peer that stops reading would keep the queue from draining.
        let transport = self.transport
        let timeout = shutdownTimeout
        let timer = Task(executorPreference: transport.loop) {
            do { try await transport.loop.sleep(for: timeout) } catch { return }
            transport.abort(failing: StreamError.timedOut)
        }
        let lost = state.withLock { state -> Bool in
            state.shutdownTimer = timer
            return transport.isLost
        }
        if lost { timer.cancel() }
    }

    /// The peer ended its side (close_notify or end of file); under the lock.
    private func peerClosed(_ state: inout State, _ outcome: inout Outcome) {
        guard !state.peerClosed else { return }
        state.peerClosed = true
        if state.closing { outcome.closeTransport = true }
    }

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
        outcome.failure = (error, state.handshakeWaiter.take())
    }

    /// Does outside the lock what a step decided: feed the reader, resume the handshake's waiter,
    /// and on failure send what alert OpenSSL queued and close.
    private func finish(_ outcome: Outcome) {
        for bytes in outcome.plaintext { reader.feed(bytes) }
        if outcome.endOfStream { reader.feedEOF() }
        if outcome.closeTransport { transport.close() }
        outcome.handshakeDone?.resume()
        if let (error, waiter) = outcome.failure {
            reader.setException(error)
            if outcome.abort {
                transport.abort()
            } else {
                // Close, not abort: the alert OpenSSL queued (e.g. unknown CA) should reach the peer.
                transport.close()
            }
            waiter?.resume(throwing: error)
        }
    }

    // MARK: State for the writer

    /// The error the connection failed with, once it failed.
    var error: (any Error)? { state.withLock { $0.error } }

    /// Whether a write was dropped (after close, writeEOF or a failure): drain reports it.
    var droppedWrite: Bool { state.withLock { $0.droppedWrite } }

    /// What the handshake negotiated; nil until it has finished.
    var info: TLSConnectionInfo? { state.withLock { $0.info } }
}
