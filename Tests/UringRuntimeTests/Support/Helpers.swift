import Foundation
import Glibc
import Synchronization
import Testing

@testable import UringRing
@_spi(UringInternals) @testable import UringRuntime

/// Fails instead of hanging: runs `body` and throws `TimedOut` after `seconds`, without waiting
/// for a body that ignores cancellation.
struct TimedOut: Error {}

/// Whichever of the body and the timer finishes first resumes the waiting test.
private final class FirstFinisher<T: Sendable>: Sendable {
    private let continuation = Locked<UnsafeContinuation<T, any Error>?>(nil)

    init(_ continuation: UnsafeContinuation<T, any Error>) {
        self.continuation.withLock { $0 = continuation }
    }

    /// Returns false when the other side finished first.
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        guard let waiting = continuation.withLock({ $0.take() }) else { return false }
        waiting.resume(with: result)
        return true
    }
}

func withDeadline<T: Sendable>(_ seconds: Double = 10, _ body: @escaping @Sendable () async throws -> T) async throws
    -> T
{
    try await withUnsafeThrowingContinuation { continuation in
        let finisher = FirstFinisher(continuation)
        let work = Task {
            do { finisher.finish(.success(try await body())) } catch { finisher.finish(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            if finisher.finish(.failure(TimedOut())) { work.cancel() }
        }
    }
}

/// A connected pair of Unix stream sockets.
func socketPair() -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
    return (fds[0], fds[1])
}

/// What a transport reported to its protocol, for assertions. Keeps the write half open at end of
/// file, as the streams' protocol does.
final class RecordingDelegate: StreamProtocol, @unchecked Sendable {
    // Sendable: `events` is locked; the protocol methods run on the loop thread.
    enum Event: Equatable, Sendable {
        case made, data([UInt8]), eof, lost(String?), pauseWriting, resumeWriting
    }

    let events = Locked<[Event]>([])

    func connectionMade(_ transport: any Transport) {
        events.withLock { $0.append(.made) }
    }

    func dataReceived(_ data: Bytes) {
        events.withLock { $0.append(.data(Array(data))) }
    }

    func eofReceived() -> Bool {
        events.withLock { $0.append(.eof) }
        return true
    }

    func connectionLost(_ error: (any Error)?) {
        events.withLock { $0.append(.lost(error.map { "\($0)" })) }
    }

    func pauseWriting() {
        events.withLock { $0.append(.pauseWriting) }
    }

    func resumeWriting() {
        events.withLock { $0.append(.resumeWriting) }
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

/// A transport for connected socket `fd`, started on `loop`'s thread with `owner` as its protocol.
@discardableResult
func startedTransport(on loop: EventLoop, fileDescriptor fd: Int32, owner: RecordingDelegate) async -> SocketTransport {
    await withTaskExecutorPreference(loop) { () -> SocketTransport in
        let transport = SocketTransport(loop: loop, fileDescriptor: fd)
        transport.start(protocol: owner)
        return transport
    }
}

/// A one-loop group whose ring cannot be made, failing with `reason`.
func groupWithoutRing(_ reason: String) -> EventLoopGroup {
    EventLoopGroup(
        loopCount: 1, configuration: .init(),
        makeRing: { () throws(RingError) -> any RingBackend in throw RingError.unavailable(reason: reason) })
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

/// Runs blocking work (`EventLoop.run`, which holds its calling thread until main returns) on a
/// thread of its own: on one of the cooperative pool's few threads it would stall every other
/// test's tasks for as long.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
