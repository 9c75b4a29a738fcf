// What the TLS tests need from outside the library: certificates made at test time with the
// `openssl` command (nothing private is committed), and peers nobody here wrote: Python's `ssl`
// and `asyncio`, and `openssl s_server` / `s_client`, run as child processes.

import Foundation
import Glibc
import TestChildProcesses
import Testing
import UringStreams

// MARK: - Tools

/// Whether the peers' tools are installed, each found out once. The checks run processes, so they
/// run on a thread of their own and the tests' conditions await them: as static `Bool`s evaluated
/// in `.enabled(if:)`, the first check blocked a thread of the cooperative pool in
/// `waitUntilExit`, and the one-time initialisation blocked every other thread asking meanwhile.
enum Tools {
    static let openssl = check(["openssl", "version"])
    static let pythonSSL = check(["python3", "-c", "import ssl, asyncio"])
    /// asyncio's `StreamWriter.start_tls` came in Python 3.11.
    static let pythonStartTLS = Task {
        guard await pythonSSL.value else { return false }
        return await check(["python3", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]).value
    }

    private static func check(_ arguments: [String]) -> Task<Bool, Never> {
        Task { (try? await onThread { works(arguments) }) == true }
    }

    /// Whether `arguments` run and exit with 0. Blocking: runs and waits for a process.
    private static func works(_ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try ChildProcesses.run(process) } catch { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}

extension Trait where Self == ConditionTrait {
    static var needsOpenSSL: Self {
        .enabled("needs the openssl command; scripts/setup-deps test installs it") { await Tools.openssl.value }
    }

    static var needsOpenSSLAndPython: Self {
        .enabled("needs python3 with ssl and the openssl command; scripts/setup-deps test installs them") {
            guard await Tools.openssl.value else { return false }
            return await Tools.pythonSSL.value
        }
    }

    static var needsOpenSSLAndPythonStartTLS: Self {
        .enabled("needs python3 3.11+ (StreamWriter.start_tls) with ssl and the openssl command") {
            guard await Tools.openssl.value else { return false }
            return await Tools.pythonStartTLS.value
        }
    }
}

struct ToolFailed: Error, CustomStringConvertible {
    let description: String
}

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
func run(_ arguments: [String], in directory: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try ChildProcesses.run(process)
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw ToolFailed(description: "\(arguments.joined(separator: " ")) failed: \(text)")
    }
    return text
}

// MARK: - Certificates

/// A test CA and certificates it signed, made with the openssl command in a temporary directory
/// (removed with this object). Keys are P-256: fast to generate.
final class TLSFixtures: Sendable {
    let directory: TemporaryDirectory
    /// The CA that signed every certificate below.
    let caFile: String
    /// A second CA that signed nothing here: trusting only it must fail.
    let otherCAFile: String
    /// For "localhost" and 127.0.0.1, valid for 30 days.
    let serverCertificate: String
    let serverKey: String
    /// The same names and key, valid only in January 2020.
    let expiredCertificate: String
    /// A client certificate (extendedKeyUsage clientAuth).
    let clientCertificate: String
    let clientKey: String

    init() throws {
        let directory = try TemporaryDirectory()
        self.directory = directory
        let path = directory.path
        func file(_ name: String) -> String { directory.file(name) }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        func makeCA(_ name: String) throws {
            try run(
                ["openssl", "req", "-x509"] + ec + [
                    "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "30", "-subj", "/CN=UringStreams \(name)",
                ], in: path)
        }
        try makeCA("ca")
        try makeCA("other-ca")
        try run(
            ["openssl", "req"] + ec + [
                "-keyout", "server.key", "-out", "server.csr", "-subj", "/O=UringStreams/CN=localhost",
            ],
            in: path)
        try run(
            ["openssl", "req"] + ec + ["-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=test client"],
            in: path)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: file("server.ext"), atomically: true, encoding: .utf8)
        try "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
            .write(toFile: file("client.ext"), atomically: true, encoding: .utf8)
        let sign = ["openssl", "x509", "-req", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30"]
        try run(sign + ["-in", "server.csr", "-out", "server.pem", "-extfile", "server.ext"], in: path)
        try run(sign + ["-in", "client.csr", "-out", "client.pem", "-extfile", "client.ext"], in: path)
        // `openssl ca` is the command that can set validity dates in the past.
        try "".write(toFile: file("index.txt"), atomically: true, encoding: .utf8)
        try "01\n".write(toFile: file("serial"), atomically: true, encoding: .utf8)
        try """
        [ca]
        default_ca = test
        [test]
        database = index.txt
        new_certs_dir = .
        serial = serial
        default_md = sha256
        policy = anything
        unique_subject = no
        [anything]
        commonName = supplied
        """.write(toFile: file("ca.cnf"), atomically: true, encoding: .utf8)
        try run(
            [
                "openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", "server.csr", "-out", "expired.pem", "-startdate", "20200101000000Z", "-enddate",
                "20200201000000Z", "-extfile", "server.ext",
            ], in: path)
        caFile = file("ca.pem")
        otherCAFile = file("other-ca.pem")
        serverCertificate = file("server.pem")
        serverKey = file("server.key")
        expiredCertificate = file("expired.pem")
        clientCertificate = file("client.pem")
        clientKey = file("client.key")
    }

    /// Makes the fixtures on a thread of their own: the openssl commands block, and the
    /// cooperative pool's few threads are everyone's.
    static func make() async throws -> TLSFixtures {
        try await onThread { try TLSFixtures() }
    }

    var server: TLSConfiguration {
        .server(certificateFile: serverCertificate, privateKeyFile: serverKey)
    }

    var client: TLSConfiguration {
        .client(trustRoots: .file(caFile))
    }
}

// MARK: - Child processes

/// A peer process: standard input is a pipe, standard output is read line by line with a
/// timeout, standard error goes to a file whose text failures include. Killed by stop() or deinit.
final class ChildProcess: @unchecked Sendable {
    // Sendable: the test uses one child from one task at a time; stop() only reads the process's
    // state, which Process guards itself.
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errorPath: String
    private var buffered: [UInt8] = []

    init(_ arguments: [String], in directory: TemporaryDirectory) throws {
        errorPath = directory.file("stderr-\(UInt32.random(in: 0...UInt32.max)).txt")
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory.path)
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        try ChildProcesses.run(process)
    }

    deinit {
        stop()
    }

    /// Kills the child. SIGKILL, not terminate()'s SIGTERM: Foundation starts children with most
    /// signals blocked (SIGTERM among them), so they would ignore it and outlive the test.
    func stop() {
        if process.isRunning { _ = kill(process.processIdentifier, SIGKILL) }
    }

    /// What the child wrote to standard error so far.
    var errorText: String {
        // Plain reads: Foundation's String(contentsOfFile:) leaked its buffer (LeakSanitizer) when
        // the child was still writing the file.
        let descriptor = open(errorPath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func write(_ text: String) throws {
        try input.fileHandleForWriting.write(contentsOf: Data(text.utf8))
    }

    func closeInput() throws {
        try input.fileHandleForWriting.close()
    }

    /// The next line of standard output without its newline; nil at end of output.
    /// - Throws: `DeadlineExceeded` when no line comes within `seconds`.
    func readLine(timeout seconds: Double = 10) throws -> String? {
        let fd = output.fileHandleForReading.fileDescriptor
        let end = Date().addingTimeInterval(seconds)
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let remaining = end.timeIntervalSinceNow
            guard remaining > 0 else { throw DeadlineExceeded(seconds: seconds) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(remaining * 1000) + 1) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 4096) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemCallFailed(call: "read", errno: errno)
            }
            if count == 0 {
                guard !buffered.isEmpty else { return nil }
                defer { buffered.removeAll() }
                return String(decoding: buffered, as: UTF8.self)
            }
            buffered += chunk[..<count]
        }
    }

    /// Reads lines until one satisfies `matches` (returned) or output ends (nil).
    func readLine(timeout seconds: Double = 10, where matches: (String) -> Bool) throws -> String? {
        while let line = try readLine(timeout: seconds) {
            if matches(line) { return line }
        }
        return nil
    }

    /// Waits for the child to exit; returns its status, or nil after `seconds` (then kills it).
    func waitForExit(timeout seconds: Double = 10) -> Int32? {
        let end = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > end {
                stop()
                return nil
            }
            usleep(10_000)
        }
        return process.terminationStatus
    }
}

// MARK: - Python peers

/// An asyncio TLS server (`asyncio.start_server(ssl=...)`) in a child process. Modes:
/// `echo` echoes bytes until EOF; `starttls` answers `STARTTLS\n` with `OK\n`, upgrades with
/// `writer.start_tls` and then echoes one line prefixed with `secure:`.
let pythonServerScript = #"""
    import asyncio, ssl, sys

    mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
    client_ca = sys.argv[4] if len(sys.argv) > 4 else None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)

    async def handle(reader, writer):
        try:
            if mode == "starttls":
                line = await reader.readline()
                if line != b"STARTTLS\n":
                    writer.close()
                    return
                writer.write(b"OK\n")
                await writer.drain()
                await writer.start_tls(context)
                line = await reader.readline()
                writer.write(b"secure:" + line)
                await writer.drain()
            else:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            writer.close()
            await writer.wait_closed()
        except Exception as error:
            print("handler:", repr(error), file=sys.stderr, flush=True)

    async def main():
        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, ssl=None if mode == "starttls" else context)
        print(server.sockets[0].getsockname()[1], flush=True)
        # Ends by itself should the test not stop it (a test has a minute at most).
        await asyncio.sleep(60)

    asyncio.run(main())
    """#

/// A blocking Python `ssl` client: sends one line, prints the TLS version, the line it got back,
/// and how the stream ended (`clean-eof` after close_notify; an `SSLError` name otherwise).
let pythonClientScript = #"""
    import socket, ssl, sys

    port, ca, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(cafile=ca)
    if len(sys.argv) > 5:
        context.load_cert_chain(sys.argv[4], sys.argv[5])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                print(tls.version(), flush=True)
                tls.sendall(b"hello from python\n")
                data = b""
                while True:
                    try:
                        chunk = tls.recv(4096)
                    except ssl.SSLError as error:
                        print(data.decode().strip(), flush=True)
                        print("unclean:", error.reason, flush=True)
                        break
                    if not chunk:
                        print(data.decode().strip(), flush=True)
                        print("clean-eof", flush=True)
                        break
                    data += chunk
    except Exception as error:
        print("failed:", type(error).__name__, error, flush=True)
    """#

extension TLSFixtures {
    /// Starts the asyncio server script (on a thread: it waits for the port); returns it and its port.
    func pythonServer(
        mode: String = "echo", certificate: String? = nil, requireClientCertificates: Bool = false
    ) async throws -> (ChildProcess, Int) {
        try await onThread {
            try self.startPythonServer(
                mode: mode, certificate: certificate, requireClientCertificates: requireClientCertificates)
        }
    }

    private func startPythonServer(
        mode: String, certificate: String?, requireClientCertificates: Bool
    ) throws -> (ChildProcess, Int) {
        let script = directory.file("server.py")
        try pythonServerScript.write(toFile: script, atomically: true, encoding: .utf8)
        var arguments = ["python3", script, mode, certificate ?? serverCertificate, serverKey]
        if requireClientCertificates { arguments.append(caFile) }
        let child = try ChildProcess(arguments, in: directory)
        guard let line = try child.readLine(), let port = Int(line) else {
            throw ToolFailed(description: "the Python server did not start: \(child.errorText)")
        }
        return (child, port)
    }

    /// Runs the Python client script against `port`; returns its output lines.
    func pythonClient(port: Int, name: String = "localhost", withCertificate: Bool = false) throws -> [String] {
        let script = directory.file("client.py")
        try pythonClientScript.write(toFile: script, atomically: true, encoding: .utf8)
        var arguments = ["python3", script, String(port), caFile, name]
        if withCertificate { arguments += [clientCertificate, clientKey] }
        let child = try ChildProcess(arguments, in: directory)
        var lines: [String] = []
        while let line = try child.readLine() { lines.append(line) }
        _ = child.waitForExit()
        return lines
    }
}

/// Whether `error` is ``StreamError/tlsCertificateRejected(_:)`` with a reason containing `text`.
func isCertificateRejection(_ error: (any Error)?, containing text: String) -> Bool {
    if case .tlsCertificateRejected(let reason) = error as? StreamError {
        return reason.localizedCaseInsensitiveContains(text)
    }
    return false
}

func isHandshakeFailure(_ error: (any Error)?) -> Bool {
    if case .tlsHandshakeFailed = error as? StreamError { return true }
    return false
}
