import Logging
import Synchronization

/// A swift-log handler that keeps every entry in memory, so a test can assert what was logged.
final class RecordingLogHandler: Sendable {
    struct Entry: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }

    private let stored = Mutex<[Entry]>([])

    var entries: [Entry] { stored.withLock { $0 } }

    /// A logger, at `level`, that records into this handler.
    func logger(level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: "test") { _ in Handler(recorder: self) }
        logger.logLevel = level
        return logger
    }

    /// The entries whose message contains `text`.
    func entries(containing text: String) -> [Entry] {
        entries.filter { $0.message.contains(text) }
    }

    private struct Handler: LogHandler {
        let recorder: RecordingLogHandler
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var all = metadata
            if let extra = event.metadata { all.merge(extra) { $1 } }
            let entry = Entry(
                level: event.level, message: event.message.description, metadata: all.mapValues { "\($0)" })
            recorder.stored.withLock { $0.append(entry) }
        }
    }
}
