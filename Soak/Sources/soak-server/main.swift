import ArgumentParser
import CSoakHeap
import Dispatch
import Glibc
import Synchronization
import UringStreams

/// The server the soak driver (`soak`) runs as a child process: one UringStreams server in one of
/// three modes, printing `ready pid=PID port=PORT fds=N` once it accepts, and one `stats {...}`
/// line (JSON) on standard output for every SIGUSR1, so the driver can read the server's own
/// counters next to what it samples from /proc.
@main
struct SoakServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak-server", abstract: "A UringStreams server for the soak driver.")

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        /// `read(readSize)`, write, drain: asyncio's echo loop.
        case echo
        /// `readLine()`, write, drain; a line over the limit is counted and dropped, and reading
        /// goes on (the slow-loris and line-flood scenarios).
        case line
        /// Like echo, with a sleep on the loop before each write: a consumer slower than its peer,
        /// so readers hold receive buffers (the ENOBUFS scenario).
        case slow
    }

    @Option(help: "echo, line or slow.") var mode = Mode.echo
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port; 0 picks a free one.") var port = 0
    @Option(help: "Event loops (threads).") var loops = 1
    @Option(help: "The readers' limit.") var limit = 65_536
    @Option(help: "Bytes each read asks for (echo and slow modes).") var readSize = 65_536
    @Option(help: "Listen backlog.") var backlog = 4096
    @Option(help: "Slow mode: microseconds slept before each write.") var slowDelay = 2000
    @Option(help: "Once serving, lower RLIMIT_NOFILE to the descriptors open now plus this many.")
    var fdHeadroom: Int?
    @Option(help: "Submission queue entries per ring (completion queue: 8 times as many).")
    var ringEntries: UInt32?
    @Option(help: "Receive buffers per loop (a power of two).") var receiveBufferCount: Int?
    @Option(help: "Bytes per receive buffer.") var receiveBufferSize: Int?
    @Option(help: "Bytes one multishot receive takes before it is armed again; 0 for no limit.")
    var multishotReceiveLimit: Int?

    func run() async throws {
        // The environment overrides first, then the flags: the driver passes flags, a person may
        // still tune the rest from the environment.
        var configuration = EventLoop.Configuration()
        if let ringEntries { configuration.ringEntries = ringEntries }
        if let receiveBufferCount { configuration.receiveBufferCount = receiveBufferCount }
        if let receiveBufferSize { configuration.receiveBufferSize = receiveBufferSize }
        if let multishotReceiveLimit { configuration.multishotReceiveLimit = multishotReceiveLimit }
        let group = EventLoopGroup(loopCount: loops, configuration: configuration)
        if let reason = group.unavailableReason { throw reason }

        let handler = Handler(mode: mode, readSize: readSize, slowDelay: .microseconds(slowDelay))
        // Not accepting yet: the kernel reads RLIMIT_NOFILE when an accept is submitted, so a
        // multishot accept armed before the limit is lowered would go on with the old one.
        let server = try await startServer(
            host: host, port: port, limit: limit, backlog: backlog, startServing: false, on: group
        ) { reader, writer in
            await handler.serve(reader, writer)
        }
        // Made before the descriptors are counted: Dispatch opens its own (epoll, eventfd) for them.
        let signalSources = handleSignals(server: server, group: group)
        if let fdHeadroom { try lowerDescriptorLimit(headroom: fdHeadroom) }
        try await server.startServing()
        emit(
            "ready pid=\(getpid()) port=\(server.addresses.first?.port ?? 0) fds=\(openDescriptorCount()) "
                + "nofile=\(currentDescriptorLimit())")
        try? await server.serveForever()
        signalSources.forEach { $0.cancel() }
        emit("stats " + statisticsJSON(group))
    }
}

/// What the server counts, readable from the signal handler's thread.
final class Counters: Sendable {
    let accepted = Atomic<Int>(0)
    /// Handlers running: a connection counts until its socket is closed.
    let open = Atomic<Int>(0)
    let resets = Atomic<Int>(0)
    let limitOverruns = Atomic<Int>(0)
    let otherErrors = Atomic<Int>(0)
    let linesEchoed = Atomic<Int>(0)
    let bytesEchoed = Atomic<Int>(0)
}

let counters = Counters()

/// The connection handler of each mode.
struct Handler: Sendable {
    let mode: SoakServer.Mode
    let readSize: Int
    let slowDelay: Duration

    func serve(_ reader: StreamReader, _ writer: StreamWriter) async {
        counters.accepted.add(1, ordering: .relaxed)
        counters.open.add(1, ordering: .relaxed)
        do {
            switch mode {
            case .echo, .slow: try await echo(reader, writer)
            case .line: try await lines(reader, writer)
            }
        } catch StreamError.connectionReset, StreamError.brokenPipe {
            // The RST cycles and clients that abort end here; that is expected.
            counters.resets.add(1, ordering: .relaxed)
        } catch {
            // The first few are printed (to the driver's log); a flood of them would drown it.
            if counters.otherErrors.add(1, ordering: .relaxed).newValue <= 20 {
                emitError("connection error: \(error)")
            }
        }
        writer.close()
        try? await writer.waitClosed()
        counters.open.subtract(1, ordering: .relaxed)
    }

    private func echo(_ reader: StreamReader, _ writer: StreamWriter) async throws {
        while true {
            let data = try await reader.read(readSize)
            if data.isEmpty { return }
            if mode == .slow { try await EventLoop.current?.sleep(for: slowDelay) }
            writer.write(data)
            counters.bytesEchoed.add(data.count, ordering: .relaxed)
            try await writer.drain()
        }
    }

    private func lines(_ reader: StreamReader, _ writer: StreamWriter) async throws {
        while true {
            let line: Bytes
            do {
                line = try await reader.readLine()
            } catch is LimitOverrunError {
                // readLine already dropped what overran (asyncio's readline); keep serving, so a
                // flood without separators runs for as long as the client sends.
                counters.limitOverruns.add(1, ordering: .relaxed)
                continue
            }
            if line.isEmpty { return }
            writer.write(line)
            counters.linesEchoed.add(1, ordering: .relaxed)
            counters.bytesEchoed.add(line.count, ordering: .relaxed)
            try await writer.drain()
        }
    }
}

/// SIGUSR1 prints statistics; SIGINT and SIGTERM close the server so `serveForever()` returns.
private func handleSignals(server: Server, group: EventLoopGroup) -> [any DispatchSourceSignal] {
    let stop = [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { server.close() }
        source.resume()
        return source
    }
    signal(SIGUSR1, SIG_IGN)
    let statistics = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
    statistics.setEventHandler { emit("stats " + statisticsJSON(group)) }
    statistics.resume()
    return stop + [statistics]
}

/// The loops' statistics, the handler counters and the heap in use, as one JSON object.
private func statisticsJSON(_ group: EventLoopGroup) -> String {
    let stats = group.statistics
    let fields: [(String, Int)] = [
        ("accepted", counters.accepted.load(ordering: .relaxed)),
        ("open", counters.open.load(ordering: .relaxed)),
        ("resets", counters.resets.load(ordering: .relaxed)),
        ("limitOverruns", counters.limitOverruns.load(ordering: .relaxed)),
        ("otherErrors", counters.otherErrors.load(ordering: .relaxed)),
        ("linesEchoed", counters.linesEchoed.load(ordering: .relaxed)),
        ("bytesEchoed", counters.bytesEchoed.load(ordering: .relaxed)),
        ("submissions", stats.submissions), ("enterCalls", stats.enterCalls), ("completions", stats.completions),
        ("bytesReceived", stats.bytesReceived), ("bytesSent", stats.bytesSent),
        ("bytesCopiedOnReceive", stats.bytesCopiedOnReceive), ("bytesCopiedOnSend", stats.bytesCopiedOnSend),
        ("bufferExhaustions", stats.bufferExhaustions), ("receiveRearms", stats.receiveRearms),
        ("zeroCopySends", stats.zeroCopySends),
        // malloc's view: what the heap hands out now (small blocks plus mmapped large ones).
        ("heapInUse", soak_heap_in_use()),
        ("fds", openDescriptorCount()),
    ]
    return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
}

/// Sets the soft RLIMIT_NOFILE to the descriptors open now plus `headroom`: the EMFILE scenario
/// needs the server to run out of descriptors at a number the driver knows.
private func lowerDescriptorLimit(headroom: Int) throws {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    // A new descriptor takes the lowest free number below the limit, and descriptors at or above
    // it (inherited ones, say) take no room: the limit is the smallest L with `headroom` free
    // numbers below it.
    let open = openDescriptors()
    var candidate = headroom
    while candidate - open.filter({ $0 < candidate }).count < headroom { candidate += 1 }
    limit.rlim_cur = rlim_t(candidate)
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
        throw StreamError.system(errno: errno, operation: "setrlimit(RLIMIT_NOFILE)")
    }
}

private func currentDescriptorLimit() -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(limit.rlim_cur)
}

private func openDescriptors() -> [Int32] {
    guard let directory = opendir("/proc/self/fd") else { return [] }
    defer { closedir(directory) }
    let own = dirfd(directory)
    var result: [Int32] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let fd = Int32(name), fd != own { result.append(fd) }
    }
    return result
}

private func openDescriptorCount() -> Int { openDescriptors().count }

/// One line on standard output in one write, so lines from different threads never interleave.
private func emit(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(1, $0, strlen($0)) }
}

private func emitError(_ line: String) {
    let text = "soak-server: " + line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}
