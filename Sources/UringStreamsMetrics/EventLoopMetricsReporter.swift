import Metrics
import UringStreams

/// Reports what a group's loops do (``EventLoop/Statistics``) to swift-metrics: counters and
/// one gauge, each with a `loop` dimension naming the loop.
///
/// Opt-in and off the hot path: the loops count in plain fields on their own threads as always,
/// and each loop is sampled by a task of its own, on that loop, every `interval`, so reporting
/// takes no lock per message and no thread hop; a sample turns the growth since the last one into
/// counter increments.
///
/// Reported, each label after `labelPrefix` and an underscore: `bytes_received`,
/// `bytes_copied_on_receive`, `bytes_sent`, `bytes_copied_on_send`, `submissions`, `enter_calls`,
/// `completions`, `buffer_exhaustions` (receives that found the buffer ring empty),
/// `receive_rearms`, `zero_copy_sends`, `zero_copy_fallbacks`, `connections_accepted`,
/// `connections_closed`, `accept_errors` and `tls_handshake_failures` as counters, and
/// `open_connections` (accepted and not yet closed) as a gauge.
///
/// ```swift
/// let reporter = EventLoopMetricsReporter(group: group)
/// async let reporting: Void = reporter.run()  // until cancelled
/// ```
///
/// asyncio has no metrics of its own; this is what SwiftNIO users get from a metrics handler.
public struct EventLoopMetricsReporter: Sendable {
    /// The loops reported.
    public let loops: [EventLoop]
    /// The time between two samples of a loop.
    public let interval: Duration
    private let labelPrefix: String
    private let factory: (any MetricsFactory)?

    /// A reporter for every loop of `group`.
    ///
    /// - Parameters:
    ///   - group: The loops to report.
    ///   - interval: The time between two samples of each loop; default 10 s.
    ///   - labelPrefix: What every metric's label starts with; default `uringstreams`.
    ///   - factory: The metrics backend; nil (the default) means the one bootstrapped with
    ///     `MetricsSystem.bootstrap`.
    public init(
        group: EventLoopGroup, interval: Duration = .seconds(10), labelPrefix: String = "uringstreams",
        factory: (any MetricsFactory)? = nil
    ) {
        self.init(loops: group.loops, interval: interval, labelPrefix: labelPrefix, factory: factory)
    }

    /// A reporter for the given loops (for example the loop ``EventLoop/run(logger:_:)`` made,
    /// ``EventLoop/current``).
    ///
    /// - Parameters:
    ///   - loops: The loops to report.
    ///   - interval: The time between two samples of each loop; default 10 s.
    ///   - labelPrefix: What every metric's label starts with; default `uringstreams`.
    ///   - factory: The metrics backend; nil means the bootstrapped one.
    public init(
        loops: [EventLoop], interval: Duration = .seconds(10), labelPrefix: String = "uringstreams",
        factory: (any MetricsFactory)? = nil
    ) {
        self.loops = loops
        self.interval = interval
        self.labelPrefix = labelPrefix
        self.factory = factory
    }

    /// Samples every loop every ``interval`` until the calling task is cancelled, then samples
    /// each once more (so what happened up to the cancellation is reported) and returns.
    ///
    /// Each loop's sampling runs as a child task on that loop and sleeps on the loop's own timer.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for loop in loops {
                group.addTask(executorPreference: loop) { await report(loop) }
            }
        }
    }

    /// The statistics that only grow, and the label of each (computed: key paths are not
    /// Sendable, so a stored static list would be shared mutable state to the compiler).
    private static var counted: [(name: String, value: KeyPath<EventLoop.Statistics, Int>)] {
        [
            ("bytes_received", \.bytesReceived),
            ("bytes_copied_on_receive", \.bytesCopiedOnReceive),
            ("bytes_sent", \.bytesSent),
            ("bytes_copied_on_send", \.bytesCopiedOnSend),
            ("submissions", \.submissions),
            ("enter_calls", \.enterCalls),
            ("completions", \.completions),
            ("buffer_exhaustions", \.bufferExhaustions),
            ("receive_rearms", \.receiveRearms),
            ("zero_copy_sends", \.zeroCopySends),
            ("zero_copy_fallbacks", \.zeroCopyFallbacks),
            ("connections_accepted", \.connectionsAccepted),
            ("connections_closed", \.connectionsClosed),
            ("accept_errors", \.acceptErrors),
            ("tls_handshake_failures", \.tlsHandshakeFailures),
        ]
    }

    /// Samples `loop` until cancelled; runs on `loop`, where reading its statistics publishes the
    /// current ones and the previous sample is this task's own.
    private func report(_ loop: EventLoop) async {
        let dimensions = [("loop", "\(loop.id)")]
        let counters = Self.counted.map { name, value in
            (counter: makeCounter("\(labelPrefix)_\(name)", dimensions), value: value)
        }
        let openConnections = makeGauge("\(labelPrefix)_open_connections", dimensions)
        var previous = EventLoop.Statistics()
        func sample() {
            let now = loop.statistics
            for (counter, value) in counters {
                let growth = now[keyPath: value] - previous[keyPath: value]
                if growth > 0 { counter.increment(by: Int64(growth)) }
            }
            openConnections.record(now.connectionsAccepted - now.connectionsClosed)
            previous = now
        }
        while true {
            sample()
            do {
                do {
                    try await loop.sleep(for: interval)
                } catch  where !(error is CancellationError) {
                    // A loop without io_uring has no timer of its own; it still runs this task.
                    try await Task.sleep(for: interval)
                }
            } catch {
                // Cancelled: report what happened since the last sample, then stop.
                sample()
                return
            }
        }
    }

    private func makeCounter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        if let factory { return Counter(label: label, dimensions: dimensions, factory: factory) }
        return Counter(label: label, dimensions: dimensions)
    }

    private func makeGauge(_ label: String, _ dimensions: [(String, String)]) -> Gauge {
        if let factory { return Gauge(label: label, dimensions: dimensions, factory: factory) }
        return Gauge(label: label, dimensions: dimensions)
    }
}
