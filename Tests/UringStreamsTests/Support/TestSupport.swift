// Helpers shared by the UringStreams test suites: a deadline so a hang fails
// fast, temporary directories for Unix sockets, small thread-safe boxes, and
// raw blocking sockets (Glibc) for peers that must not depend on the library.

import Foundation
import Glibc
import Synchronization
import Testing
@_spi(UringInternals) import UringRuntime
import UringStreams

// MARK: - Deadline

struct DeadlineExceeded: Error, CustomStringConvertible {
    let seconds: Double
    var description: String { "the test body did not finish within \(seconds) s" }
}

/// Hands the caller's continuation to whichever of body and timer finishes first.
private final class DeadlineRace<Value: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Value, any Error>?
        var bodyTask: Task<Void, Never>?
        var timerTask: Task<Void, Never>?
    }

    private let state = UringRuntime.Locked(State())

    func start(
        continuation: CheckedContinuation<Value, any Error>, seconds: Double,
        body: @escaping @Sendable () async throws -> Value
    ) {
        state.withLock { $0.continuation = continuation }
        // `Task {}` (not detached) so the body keeps Swift Testing's task-locals
        // and its `#expect` failures are attributed to the running test.
        let bodyTask = Task {
            let result: Result<Value, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            self.finish(result)
        }
        let timerTask = Task {
            do { try await Task.sleep(for: .seconds(seconds)) } catch { return }  // cancelled: body won
            self.finish(.failure(DeadlineExceeded(seconds: seconds)))
        }
        let finishedAlready = state.withLock { state -> Bool in
            guard state.continuation != nil else { return true }
            state.bodyTask = bodyTask
            state.timerTask = timerTask
            return false
        }
        if finishedAlready {
            bodyTask.cancel()
            timerTask.cancel()
        }
    }

    func finish(_ result: Result<Value, any Error>) {
        let (continuation, bodyTask, timerTask) = state.withLock { state in
            defer { state = State() }
            return (state.continuation, state.bodyTask, state.timerTask)
        }
        guard let continuation else { return }
        continuation.resume(with: result)
        // Cancelling a finished task is a no-op; a stuck body is told to stop
        // but never awaited.
        bodyTask?.cancel()
        timerTask?.cancel()
    }
}

/// Runs `body` in its own task and throws `DeadlineExceeded` (cancelling that
/// task) when it has not finished after `seconds`, without waiting for it.
@discardableResult
func withDeadline<T: Sendable>(
    _ seconds: Double = 10, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let race = DeadlineRace<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            race.start(continuation: continuation, seconds: seconds, body: body)
        }
    } onCancel: {
        race.finish(.failure(CancellationError()))
    }
}

// MARK: - Where the code runs

/// Where a test runs its stream calls: from an ordinary task (the library then
/// uses `EventLoopGroup.shared`) or on a private loop (the on-loop fast path).
enum Placement: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case offLoop
    case onPrivateLoop

    var testDescription: String { rawValue }

    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        switch self {
        case .offLoop:
            return try await body()
        case .onPrivateLoop:
            return try await onFreshLoop(body)
        }
    }
}

/// Runs `body` with a task executor preference for the only loop of a new
/// group, then shuts that group down.
func onFreshLoop<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let group = EventLoopGroup(loopCount: 1)
    let loop = group.next()
    let result: T
    do {
        result = try await withTaskExecutorPreference(loop) { try await body() }
    } catch {
        try? await group.shutdown()
        throw error
    }
    try await group.shutdown()
    return result
}

// MARK: - Bytes and text

func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }

func text(_ bytes: some Sequence<UInt8>) -> String { String(decoding: Array(bytes), as: UTF8.self) }

/// A deterministic, non-repeating byte pattern for large transfers (splitmix64, eight bytes a
/// step), so a shifted, repeated or reordered piece of a transfer shows. Written straight into the
/// array's memory: a closure per byte took unoptimised (debug) builds seconds per 16 MiB, on a
/// thread of the cooperative pool that every other test was waiting for.
func patternBytes(count: Int, seed: UInt32 = 0x9E37_79B9) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        let raw = UnsafeMutableRawBufferPointer(buffer)
        var state = UInt64(seed)
        var offset = 0
        while offset < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var word = state
            word = (word ^ (word >> 30)) &* 0xBF58_476D_1CE4_E5B9
            word = (word ^ (word >> 27)) &* 0x94D0_49BB_1331_11EB
            word ^= word >> 31
            if count - offset >= 8 {
                raw.storeBytes(of: word.littleEndian, toByteOffset: offset, as: UInt64.self)
                offset += 8
            } else {
                raw[offset] = UInt8(truncatingIfNeeded: word)
                offset += 1
            }
        }
        initialized = count
    }
}

/// Whether `a` and `b` hold the same bytes, compared with one memcmp: `==` on arrays goes element
/// by element through generic code in unoptimised builds (a quarter of a second per 16 MiB).
func sameBytes(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    let compared = a.withContiguousStorageIfAvailable { left in
        b.withContiguousStorageIfAvailable { right in
            left.count == 0 || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0
        }
    }
    guard let result = compared ?? nil else { return a.elementsEqual(b) }
    return result
}

/// What a reader still holds: feeds EOF, then reads everything. Call last.
func remainingText(of reader: StreamReader) async throws -> String {
    reader.feedEOF()
    return text(try await reader.read())
}

func isInvalidArgument(_ error: StreamError?) -> Bool {
    if case .invalidArgument = error { return true }
    return false
}

struct SampleError: Error, Equatable {
    let tag: String
}

// MARK: - Small concurrency helpers

/// A value shared between tasks, guarded by the library's pthread lock (which ThreadSanitizer
/// sees, unlike `Synchronization.Mutex` on Linux).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: UringRuntime.Locked<Value>

    init(_ value: Value) { mutex = UringRuntime.Locked(value) }

    var value: Value { mutex.withLock { $0 } }

    func set(_ newValue: Value) { mutex.withLock { $0 = newValue } }

    @discardableResult
    func update<R: Sendable>(_ body: (inout Value) -> R) -> R {
        mutex.withLock { value in body(&value) }
    }
}

/// An unbounded queue of values from callbacks (e.g. `clientConnected`) to the test.
final class Mailbox<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiters: [CheckedContinuation<Element, Never>] = []
    }

    private let state = UringRuntime.Locked(State())

    func send(_ element: Element) {
        let waiter = state.withLock { state -> CheckedContinuation<Element, Never>? in
            if state.waiters.isEmpty {
                state.items.append(element)
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: element)
    }

    func receive() async -> Element {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Element? in
                if state.items.isEmpty {
                    state.waiters.append(continuation)
                    return nil
                }
                return state.items.removeFirst()
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
func eventually(
    timeout: Duration = .seconds(5), _ condition: @Sendable () -> Bool
) async throws -> Bool {
    let clock = ContinuousClock()
    let end = clock.now.advanced(by: timeout)
    while clock.now < end {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

/// Gives other tasks and the loops time to act, for "has not happened yet" checks.
func settle(_ milliseconds: Int = 100) async throws {
    try await Task.sleep(for: .milliseconds(milliseconds))
}

/// Runs blocking work on a dedicated thread so it never occupies a thread of
/// the cooperative pool (which the library's callers also need).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.start()
    }
}

// MARK: - Temporary directories

/// A fresh directory under /tmp (short, so Unix socket paths fit in
/// `sun_path`), removed when the last reference goes.
final class TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/uring-tests-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!)
        }
        guard let created else { throw SystemCallFailed(call: "mkdtemp", errno: errno) }
        path = String(cString: created)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}

func fileExists(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0
}

// MARK: - Raw sockets

struct SystemCallFailed: Error, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}

/// Blocking socket calls straight to Glibc, for peers that must not depend on
/// the code under test. Call them through `onThread` when they can block.
enum RawSocket {
    static let streamType = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

    static func pair() throws -> (Int32, Int32) {
        var descriptors: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, streamType, 0, &descriptors) == 0 else {
            throw SystemCallFailed(call: "socketpair", errno: errno)
        }
        return (descriptors[0], descriptors[1])
    }

    /// A TCP socket bound to 127.0.0.1 (or ::1) on an ephemeral port.
    static func tcpLoopback(ipv6: Bool = false, listening: Bool) throws -> (descriptor: Int32, port: Int) {
        let descriptor = socket(ipv6 ? AF_INET6 : AF_INET, streamType, 0)
        guard descriptor >= 0 else { throw SystemCallFailed(call: "socket", errno: errno) }
        do {
            try bindLoopback(descriptor, ipv6: ipv6, port: 0)
            if listening, listen(descriptor, 64) != 0 { throw SystemCallFailed(call: "listen", errno: errno) }
            return (descriptor, try localPort(of: descriptor))
        } catch {
            Glibc.close(descriptor)
            throw error
        }
    }

    static func bindLoopback(_ descriptor: Int32, ipv6: Bool, port: Int) throws {
        let result: Int32
        if ipv6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = UInt16(port).bigEndian
            _ = inet_pton(AF_INET6, "::1", &address.sin6_addr)
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            _ = inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard result == 0 else { throw SystemCallFailed(call: "bind", errno: errno) }
    }

    static func localPort(of descriptor: Int32) throws -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { throw SystemCallFailed(call: "getsockname", errno: errno) }
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { pointer in
            if family == AF_INET6 {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                Int(UInt16(bigEndian: $0.pointee.sin_port))
            }
        }
    }

    /// A port that nothing listens on right now (bound, then released), for a server to bind by
    /// number. Not for a connect that must be refused: use ``withRefusingPort(_:)``.
    static func unusedPort() throws -> Int {
        let (descriptor, port) = try tcpLoopback(listening: false)
        Glibc.close(descriptor)
        return port
    }

    /// Runs `body` with a loopback port that refuses connections until it returns: its socket is
    /// bound and never listens, so the kernel resets a connect and gives the port to no one else.
    /// A port that was only freed may be taken at once by a parallel test's listener.
    @discardableResult
    static func withRefusingPort<R>(_ body: (Int) async throws -> R) async throws -> R {
        let (descriptor, port) = try tcpLoopback(listening: false)
        defer { Glibc.close(descriptor) }
        return try await body(port)
    }

    /// The descriptors of this process bound to TCP `port`, found by asking each open one (a
    /// server may have one per loop).
    static func descriptors(boundToPort port: Int) -> [Int32] {
        (Int32(0)..<4096).filter { fd in fcntl(fd, F_GETFD) >= 0 && (try? localPort(of: fd)) == port }
    }

    static func withUnixAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { throw SystemCallFailed(call: "sockaddr_un", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    static func unixBound(path: String, listening: Bool) throws -> Int32 {
        let descriptor = socket(AF_UNIX, streamType, 0)
        guard descriptor >= 0 else { throw SystemCallFailed(call: "socket", errno: errno) }
        let bound = try withUnixAddress(path) { bind(descriptor, $0, $1) }
        guard bound == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw SystemCallFailed(call: "bind", errno: code)
        }
        if listening, listen(descriptor, 64) != 0 {
            let code = errno
            Glibc.close(descriptor)
            throw SystemCallFailed(call: "listen", errno: code)
        }
        return descriptor
    }

    static func connectTCP(port: Int) throws -> Int32 {
        let descriptor = socket(AF_INET, streamType, 0)
        guard descriptor >= 0 else { throw SystemCallFailed(call: "socket", errno: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        _ = inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw SystemCallFailed(call: "connect", errno: code)
        }
        return descriptor
    }

    static func connectUnix(path: String) throws -> Int32 {
        let descriptor = socket(AF_UNIX, streamType, 0)
        guard descriptor >= 0 else { throw SystemCallFailed(call: "socket", errno: errno) }
        let result = try withUnixAddress(path) { connect(descriptor, $0, $1) }
        guard result == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw SystemCallFailed(call: "connect", errno: code)
        }
        return descriptor
    }

    static func close(_ descriptor: Int32) {
        _ = Glibc.close(descriptor)
    }

    /// Sets SO_LINGER {on, 0 s}: closing then sends a TCP peer RST instead of FIN.
    static func setResetOnClose(_ descriptor: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }

    static func shutdownWrite(_ descriptor: Int32) {
        _ = shutdown(descriptor, Int32(SHUT_WR))
    }

    /// Sends everything; MSG_NOSIGNAL so a closed peer cannot kill the test process.
    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { raw in
                send(descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                throw SystemCallFailed(call: "send", errno: errno)
            }
            offset += sent
        }
    }

    /// One `recv` of up to `maximum` bytes: nil when nothing came within the
    /// timeout, an empty array at EOF.
    static func read(_ descriptor: Int32, upTo maximum: Int = 65_536, timeoutMilliseconds: Int32 = 5_000) throws
        -> [UInt8]?
    {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&poller, 1, timeoutMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw SystemCallFailed(call: "poll", errno: errno)
            }
            if ready == 0 { return nil }
            break
        }
        var buffer = [UInt8](repeating: 0, count: maximum)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress!, maximum, 0) }
            if received < 0 {
                if errno == EINTR { continue }
                throw SystemCallFailed(call: "recv", errno: errno)
            }
            return Array(buffer[..<received])
        }
    }

    /// Reads until EOF; throws `DeadlineExceeded` if the peer goes quiet first.
    static func readToEOF(_ descriptor: Int32, timeoutMilliseconds: Int32 = 5_000) throws -> [UInt8] {
        var collected: [UInt8] = []
        while true {
            guard let chunk = try read(descriptor, timeoutMilliseconds: timeoutMilliseconds) else {
                throw DeadlineExceeded(seconds: Double(timeoutMilliseconds) / 1000)
            }
            if chunk.isEmpty { return collected }
            collected += chunk
        }
    }

    /// Reads exactly `count` bytes (fewer only at EOF).
    static func readExactly(_ descriptor: Int32, count: Int, timeoutMilliseconds: Int32 = 5_000) throws -> [UInt8] {
        var collected: [UInt8] = []
        while collected.count < count {
            guard
                let chunk = try read(
                    descriptor, upTo: min(65_536, count - collected.count), timeoutMilliseconds: timeoutMilliseconds)
            else {
                throw DeadlineExceeded(seconds: Double(timeoutMilliseconds) / 1000)
            }
            if chunk.isEmpty { break }
            collected += chunk
        }
        return collected
    }

    /// Reads until `terminator` has arrived (or EOF); returns all bytes read.
    static func readUntil(_ descriptor: Int32, terminator: [UInt8], timeoutMilliseconds: Int32 = 5_000) throws
        -> [UInt8]
    {
        var collected: [UInt8] = []
        while !collected.ends(with: terminator) {
            guard let chunk = try read(descriptor, upTo: 1, timeoutMilliseconds: timeoutMilliseconds) else {
                throw DeadlineExceeded(seconds: Double(timeoutMilliseconds) / 1000)
            }
            if chunk.isEmpty { break }
            collected += chunk
        }
        return collected
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && sameBytes(self[(count - suffix.count)...], suffix)
    }
}

let isIPv6LoopbackAvailable: Bool = {
    guard let (descriptor, _) = try? RawSocket.tcpLoopback(ipv6: true, listening: false) else { return false }
    RawSocket.close(descriptor)
    return true
}()

// MARK: - A blocking server independent of the library

/// Accepts connections on its own thread and runs `handler` for each, one at a
/// time, closing the connection afterwards. Stands in for the stdlib servers
/// of CPython's test utilities, so client tests do not depend on `startServer`.
final class BlockingServer: Sendable {
    /// 0 for a Unix socket server.
    let port: Int
    private let listener: Int32

    init(unixPath: String? = nil, handler: @escaping @Sendable (Int32) -> Void) throws {
        if let unixPath {
            listener = try RawSocket.unixBound(path: unixPath, listening: true)
            port = 0
        } else {
            let bound = try RawSocket.tcpLoopback(listening: true)
            listener = bound.descriptor
            port = bound.port
        }
        let listener = self.listener
        let thread = Thread {
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    break  // stop() shut the listener down
                }
                // Close-on-exec, like every other descriptor here (Glibc's module has no accept4):
                // a child process a test starts (the TLS tests' Python and openssl peers) must not
                // inherit the connection and keep it open after this side closes it.
                _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
                handler(connection)
                RawSocket.close(connection)
            }
            RawSocket.close(listener)
        }
        thread.start()
    }

    /// Wakes the accept loop, which then closes the listener itself (closing it
    /// here could close a descriptor number another test reused meanwhile).
    func stop() {
        _ = shutdown(listener, Int32(SHUT_RDWR))
    }

    /// The reply CPython's test HTTP server gives to any request.
    static let httpReply = utf8("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nTest message")

    /// Reads one request (up to the blank line), answers `httpReply`.
    static func answerHTTP(_ connection: Int32) {
        guard let request = try? RawSocket.readUntil(connection, terminator: utf8("\r\n\r\n")),
            request.ends(with: utf8("\r\n\r\n"))
        else { return }
        try? RawSocket.writeAll(connection, httpReply)
    }
}

/// Sends the request CPython's HTTP tests send and returns the status line of the answer.
func requestHTTPStatus(_ reader: StreamReader, _ writer: StreamWriter) async throws -> String {
    writer.write("GET / HTTP/1.0\r\n\r\n")
    return text(try await reader.readLine())
}

// MARK: - Stream handlers shared by the suites

/// Echoes lines until EOF, then closes: the handler of CPython's echo servers.
func echoLinesUntilEOF(_ reader: StreamReader, _ writer: StreamWriter) async {
    do {
        while true {
            let line = try await reader.readLine()
            if line.isEmpty { break }
            writer.write(line)
            try await writer.drain()
        }
        writer.close()
        try await writer.waitClosed()
    } catch {
        writer.close()
    }
}

/// Echoes raw chunks until EOF, then closes; for bulk transfers.
func echoChunksUntilEOF(_ reader: StreamReader, _ writer: StreamWriter) async {
    do {
        while true {
            let chunk = try await reader.read(65_536)
            if chunk.isEmpty { break }
            writer.write(chunk)
            try await writer.drain()
        }
        writer.close()
        try await writer.waitClosed()
    } catch {
        writer.close()
    }
}

/// Sends `payload` in `chunkSize` pieces, draining after each, then writes EOF.
func sendAll(_ payload: [UInt8], through writer: StreamWriter, chunkSize: Int = 65_536) async throws {
    var start = 0
    while start < payload.count {
        let end = min(start + chunkSize, payload.count)
        writer.write(payload[start..<end])
        try await writer.drain()
        start = end
    }
    writer.writeEOF()
}

/// Writes one line and reads the echoed line back.
func roundTrip(_ line: String, reader: StreamReader, writer: StreamWriter) async throws -> String {
    writer.write(line)
    try await writer.drain()
    return text(try await reader.readLine())
}
