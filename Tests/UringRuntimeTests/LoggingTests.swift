import Glibc
import Logging
import Synchronization
import Testing

@testable import UringRing
@testable import UringRuntime

/// What the runtime logs: failed accepts and their back-off, rejected environment values, rings
/// that cannot be made, a loop's start and stop; and what it counts for the metrics bridge.
@Suite(.timeLimit(.minutes(1)))
struct LoggingTests {
    /// A failed accept is logged at error (asyncio: "Error on transport creation") and counted;
    /// out of descriptors (EMFILE), the listener says it waits a second before accepting again.
    @Test(arguments: [EPERM, EMFILE])
    func failedAcceptsAreLoggedAndCounted(errno code: Int32) async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let recorder = RecordingLogHandler()
            let (listening, other) = socketPair()
            defer { close(other) }
            let listener = Listener(
                loop: loop, descriptor: ListeningDescriptor(listening), logger: recorder.logger(),
                onAccept: { close($0) }, onClosed: {})
            loop.execute { listener.start() }
            #expect(try await eventually { ring.submissions.contains { $0.description == "accept" } })
            let accept = ring.submissions.first { $0.description == "accept" }!
            ring.complete(accept.userData, result: -code)
            #expect(try await eventually { !recorder.entries(containing: "accept failed").isEmpty })
            let entry = recorder.entries(containing: "accept failed")[0]
            #expect(entry.level == .error)
            #expect(entry.metadata["error"]?.contains(String(cString: strerror(code))) == true)
            if code == EMFILE { #expect(entry.message.contains("again in 1 s")) }
            #expect(try await eventually { loop.statistics.acceptErrors == 1 })
            loop.execute { listener.close() }
            try await group.shutdown()
        }
    }

    @Test func rejectedEnvironmentValuesAreLoggedOnceByTheGroup() async throws {
        let environment = [
            "URINGSTREAMS_RECEIVE_BUFFER_COUNT": "100",  // not a power of two
            "URINGSTREAMS_RING_ENTRIES": "lots",
            "URINGSTREAMS_RECEIVE_BUFFER_SIZE": "4096",
        ]
        let configuration = EventLoop.Configuration(environment: { environment[$0] })
        #expect(configuration.receiveBufferSize == 4096)
        #expect(
            configuration.receiveBufferCount == EventLoop.Configuration(environment: { _ in nil }).receiveBufferCount)
        let recorder = RecordingLogHandler()
        let group = EventLoopGroup(loopCount: 2, configuration: configuration, logger: recorder.logger())
        try await group.shutdown()
        let rejected = recorder.entries(containing: "configuration rejected")
        #expect(rejected.count == 2)
        #expect(rejected.allSatisfy { $0.level == .warning })
        let settings = rejected.compactMap { $0.metadata["setting"] }.sorted()
        #expect(settings.first?.hasPrefix("URINGSTREAMS_RECEIVE_BUFFER_COUNT=100 ignored") == true)
        #expect(settings.last?.hasPrefix("URINGSTREAMS_RING_ENTRIES=lots ignored") == true)
    }

    /// `NAME= command` is how a shell clears a variable for one command: an empty value is the
    /// default, with nothing logged.
    @Test func emptyEnvironmentValuesCountAsUnset() {
        let configuration = EventLoop.Configuration(environment: { $0.hasPrefix("URINGSTREAMS_") ? "" : nil })
        let defaults = EventLoop.Configuration(environment: { _ in nil })
        #expect(configuration.rejectedEnvironment.isEmpty)
        #expect(configuration.backend == defaults.backend)
        #expect(configuration.receiveBufferCount == defaults.receiveBufferCount)
        #expect(configuration.ringEntries == defaults.ringEntries)
    }

    @Test func aRingThatCannotBeMadeIsAWarningAndLoopsLogStartAndStopAtDebug() async throws {
        let recorder = RecordingLogHandler()
        // Not the process's environment: a URINGSTREAMS_* value there could add a warning.
        let group = EventLoopGroup(
            loopCount: 1, configuration: .init(environment: { _ in nil }),
            makeRing: { () throws(RingError) -> any RingBackend in throw RingError.unavailable(reason: "not here") },
            logger: recorder.logger())
        let loop = group.next()
        try await group.shutdown()
        let warnings = recorder.entries(containing: "io_uring set-up failed")
        #expect(warnings.count == 1)
        #expect(warnings.first?.level == .warning)
        #expect(warnings.first?.metadata["loop"] == "\(loop.id)")
        #expect(recorder.entries.contains { $0.message == "event loop started" && $0.level == .debug })
        #expect(recorder.entries.contains { $0.message == "event loop stopped" && $0.level == .debug })
        // Nothing at info or above apart from the warning: a disabled-by-default logger is the
        // default, but an enabled one must stay quiet in normal operation too.
        let loud = recorder.entries.filter { $0.level > .debug }
        #expect(loud.count == 1, "above debug: \(loud.map { "\($0.level) \($0.message) \($0.metadata)" })")
    }
}
