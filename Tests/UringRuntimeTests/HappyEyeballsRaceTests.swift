import Glibc
import Testing

@testable import UringRing
@testable import UringRuntime

/// The staggered race of `connect(toAnyOf:)` driven step by step through `ScriptedRing`: the
/// orderings a real kernel produces only by chance (a loser connecting while its cancellation is
/// on the way, a delay outliving every attempt).
@Suite(.timeLimit(.minutes(1)))
struct HappyEyeballsRaceTests {
    static let addresses = [
        try! SocketAddress(host: "127.0.0.1", port: 9), try! SocketAddress(host: "127.0.0.1", port: 10),
    ]

    /// Whether the socket the ring saw submitted is still open in this process.
    static func isOpen(_ recorded: ScriptedRing.Recorded) -> Bool {
        var info = stat()
        return fstat(recorded.fd!, &info) == 0 && UInt(info.st_ino) == recorded.inode
    }

    @Test func aLoserThatConnectsWhileBeingCancelledIsClosed() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let race = Task(executorPreference: loop) {
                try await loop.connect(
                    toAnyOf: Self.addresses, from: nil, happyEyeballsDelay: .seconds(3600), interleave: nil)
            }
            let first = try await ring.waitForSubmission { $0.description == "connect" }
            let delay = try await ring.waitForSubmission { $0.description == "timeout" }
            // The delay elapses: the second attempt starts while the first is still connecting.
            let seen = ring.submissions.count
            ring.complete(delay.userData, result: -ETIME)
            let second = try await ring.waitForSubmission(skipping: seen) { $0.description == "connect" }
            ring.complete(first.userData, result: 0)
            // The first wins; the second is cancelled, but connects before the cancel lands.
            _ = try await ring.waitForSubmission { $0.description == "cancel \(second.userData)" }
            ring.complete(second.userData, result: 0)
            let winner = try await race.value
            #expect(winner == first.fd)
            #expect(Self.isOpen(first))
            #expect(!Self.isOpen(second))
            close(winner)
            try await group.shutdown()
        }
    }

    @Test func aFailureStartsTheNextAttemptAndLeftoverDelaysEnd() async throws {
        try await withDeadline {
            let ring = ScriptedRing()
            let group = try scriptedGroup(ring)
            let loop = group.next()
            let race = Task(executorPreference: loop) {
                try await loop.connect(
                    toAnyOf: Self.addresses, from: nil, happyEyeballsDelay: .seconds(3600), interleave: nil)
            }
            let first = try await ring.waitForSubmission { $0.description == "connect" }
            let delay = try await ring.waitForSubmission { $0.description == "timeout" }
            // Refused: the next attempt starts without waiting for the hour-long delay. (Found by
            // position: its operation may reuse the finished first one's memory, hence user_data.)
            let seen = ring.submissions.count
            ring.complete(first.userData, result: -ECONNREFUSED)
            let second = try await ring.waitForSubmission(skipping: seen) { $0.description == "connect" }
            ring.complete(second.userData, result: -ECONNREFUSED)
            // Nothing is left to start: the race cancels the delay instead of waiting it out.
            _ = try await ring.waitForSubmission { $0.description == "cancel \(delay.userData)" }
            ring.complete(delay.userData, result: -ECANCELED)
            await #expect(throws: StreamError.connectionRefused) { try await race.value }
            #expect(!Self.isOpen(first))
            #expect(!Self.isOpen(second))
            try await group.shutdown()
        }
    }
}
