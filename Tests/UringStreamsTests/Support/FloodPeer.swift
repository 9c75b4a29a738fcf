import Glibc

/// A client that writes whenever its socket is writable and reads whatever echo is readable, never
/// waiting for one before the other (an upload, a pipelining client), on a thread of its own.
/// It checks every echoed byte against what it sent.
enum FloodPeer {
    struct Outcome: Sendable {
        var sent = 0
        var echoed = 0
        /// Whether every echoed byte matched the byte sent at that position.
        var intact = true
    }

    /// Floods `port` on 127.0.0.1 with `chunk`-byte writes while `keepSending()` is true, then stops
    /// writing, half-closes, and reads the echo until EOF or until `quietMilliseconds` pass without
    /// any. Blocking: call through `onThread`.
    static func run(
        port: Int, chunk: Int = 65_536, quietMilliseconds: Int32 = 5_000, keepSending: () -> Bool
    ) throws -> Outcome {
        let descriptor = try RawSocket.connectTCP(port: port)
        defer { RawSocket.close(descriptor) }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        // A period coprime to every power of two, so a shifted or repeated piece of the echo fails.
        let period = 251
        let pattern = (0..<(chunk + period)).map { UInt8(truncatingIfNeeded: $0 % period) }
        var outcome = Outcome()
        var buffer = [UInt8](repeating: 0, count: chunk)
        var sending = true
        while true {
            if sending && !keepSending() {
                sending = false
                RawSocket.shutdownWrite(descriptor)
            }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN) | (sending ? Int16(POLLOUT) : 0), revents: 0)
            let ready = poll(&poller, 1, sending ? 100 : quietMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw SystemCallFailed(call: "poll", errno: errno)
            }
            if ready == 0 {
                if sending { continue }
                return outcome  // the echo went quiet: the caller compares sent with echoed
            }
            if poller.revents & Int16(POLLOUT) != 0 && sending {
                let start = outcome.sent % period
                let written = pattern.withUnsafeBytes {
                    send(descriptor, $0.baseAddress! + start, chunk, Int32(MSG_NOSIGNAL))
                }
                if written > 0 {
                    outcome.sent += written
                } else if errno != EAGAIN && errno != EINTR {
                    throw SystemCallFailed(call: "send", errno: errno)
                }
            }
            if poller.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress!, $0.count, 0) }
                if received == 0 { return outcome }
                if received < 0 {
                    if errno == EAGAIN || errno == EINTR { continue }
                    throw SystemCallFailed(call: "recv", errno: errno)
                }
                // One memcmp against the pattern (which is a period longer than any receive): a
                // check per byte kept this thread busy enough to slow the whole suite under load.
                let matches = buffer.withUnsafeBytes { echoed in
                    pattern.withUnsafeBytes {
                        memcmp(echoed.baseAddress!, $0.baseAddress! + outcome.echoed % period, received) == 0
                    }
                }
                if !matches { outcome.intact = false }
                outcome.echoed += received
            }
        }
    }
}

/// The running kernel's version, for bounds that depend on kernel features.
struct KernelVersion: Comparable, Sendable {
    let major: Int
    let minor: Int

    init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    static let current: KernelVersion = {
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return KernelVersion(parts.first ?? 0, parts.count > 1 ? parts[1] : 0)
    }()

    static func < (a: KernelVersion, b: KernelVersion) -> Bool {
        (a.major, a.minor) < (b.major, b.minor)
    }
}

/// The most a TCP socket's receive buffer grows to (the third value of `tcp_rmem`).
let socketReceiveBufferMaximum: Int = {
    guard let file = fopen("/proc/sys/net/ipv4/tcp_rmem", "r") else { return 6 << 20 }
    defer { fclose(file) }
    var line = [UInt8](repeating: 0, count: 128)
    guard
        line.withUnsafeMutableBufferPointer({ buffer in
            buffer.withMemoryRebound(to: CChar.self) { fgets($0.baseAddress, Int32($0.count), file) != nil }
        })
    else { return 6 << 20 }
    let values = String(decoding: line.prefix { $0 != 0 }, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        .compactMap { Int($0) }
    return values.count == 3 ? values[2] : 6 << 20
}()
