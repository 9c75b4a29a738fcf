import Glibc
import Synchronization
import Testing

@testable import UringRing
@testable import UringRuntime

/// Fails instead of hanging: runs `body` and throws `TimedOut` after `seconds`, without waiting
/// for a body that ignores cancellation.
func withDeadline<T: Sendable>(_ seconds: Double = 10, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    struct TimedOut: Error {}
    let outcome = Mutex<UnsafeContinuation<T, any Error>?>(nil)
    let work = Mutex<Task<Void, Never>?>(nil)
    return try await withUnsafeThrowingContinuation { continuation in
        outcome.withLock { $0 = continuation }
        let task = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0.take() }?.resume(with: result)
        }
        work.withLock { $0 = task }
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            if let waiting = outcome.withLock({ $0.take() }) {
                work.withLock { $0 }?.cancel()
                waiting.resume(throwing: TimedOut())
            }
        }
    }
}

/// A connected pair of Unix stream sockets.
func socketPair() -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
    return (fds[0], fds[1])
}

/// What a transport reported, for assertions.
final class RecordingDelegate: StreamTransportDelegate, @unchecked Sendable {
    // Sendable: `events` is a Mutex; the delegate methods run on the loop thread.
    enum Event: Equatable, Sendable {
        case data([UInt8]), eof, lost(String?)
    }

    let events = Mutex<[Event]>([])

    func transport(_ transport: StreamTransport, received bytes: Bytes) {
        events.withLock { $0.append(.data(Array(bytes))) }
    }

    func transportReceivedEOF(_ transport: StreamTransport) {
        events.withLock { $0.append(.eof) }
    }

    func transport(_ transport: StreamTransport, connectionLost error: (any Error)?) {
        events.withLock { $0.append(.lost(error.map { "\($0)" })) }
    }

    /// Waits until an event matching `predicate` was recorded.
    func waitFor(_ predicate: @escaping (Event) -> Bool) async throws {
        for _ in 0..<2500 {
            if events.withLock({ $0.contains(where: predicate) }) { return }
            try await Task.sleep(for: .milliseconds(2))
        }
        Issue.record("event never came; saw \(events.withLock { $0 })")
    }
}

/// A one-loop group whose ring is `ring`.
func scriptedGroup(_ ring: ScriptedRing) throws -> EventLoopGroup {
    EventLoopGroup(loopCount: 1, configuration: .init(), makeRing: { ring })
}

/// Polls `condition` until it holds or about five seconds pass.
func eventually(_ condition: () -> Bool) async throws -> Bool {
    for _ in 0..<2500 {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}
