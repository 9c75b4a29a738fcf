import Foundation
import Glibc
import Synchronization
import Testing

@_spi(UringInternals) @testable import UringRuntime

/// Name resolution: `getaddrinfo` blocks (for seconds when a DNS server does not answer), so the
/// lookups here are stand-ins that block until the test lets them go.
@Suite(.timeLimit(.minutes(1)))
struct ResolverTests {
    /// Lookups that block until `release()`; counts how many are blocked at once.
    final class BlockedLookUps: Sendable {
        private let gate = Locked<(open: Bool, blocked: Int)>((false, 0))
        /// When each host's lookup began, on the thread that runs it.
        let started = Locked<[String: ContinuousClock.Instant]>([:])

        var blocked: Int { gate.withLock { $0.blocked } }

        func lookUp(_ host: String?, _ port: Int, _: AddressFamily, _: Bool) -> Result<[SocketAddress], StreamError> {
            let now = ContinuousClock.now
            started.withLock { $0[host ?? ""] = now }
            gate.withLock { $0.blocked += 1 }
            while !gate.withLock({ $0.open }) { usleep(1_000) }
            gate.withLock { $0.blocked -= 1 }
            return .success([try! SocketAddress(host: "127.0.0.1", port: port)])
        }

        func release() { gate.withLock { $0.open = true } }
    }

    /// asyncio's getaddrinfo runs in an executor and a cancelled caller does not wait for it: a
    /// timed-out connect must not hang on a lookup that hangs.
    @Test func cancellingTheCallerReturnsWhileTheLookupStillBlocks() async throws {
        try await withDeadline { () async throws in
            let lookUps = BlockedLookUps()
            defer { lookUps.release() }
            let resolving = Task {
                try await Resolver.resolve(
                    host: "blocked.invalid", port: 80, family: .unspecified, passive: false, lookUp: lookUps.lookUp)
            }
            #expect(try await eventually { lookUps.blocked == 1 })
            let start = ContinuousClock.now
            resolving.cancel()
            await #expect(throws: CancellationError.self) { _ = try await resolving.value }
            #expect(ContinuousClock.now - start < .seconds(2))
            #expect(lookUps.blocked == 1, "the lookup itself goes on in the background")
        }
    }

    /// A lookup that finishes after its caller was cancelled is dropped; the next one works.
    @Test func aLookupFinishingAfterTheCancelIsDropped() async throws {
        try await withDeadline {
            let lookUps = BlockedLookUps()
            let resolving = Task {
                try await Resolver.resolve(
                    host: "late.invalid", port: 80, family: .unspecified, passive: false, lookUp: lookUps.lookUp)
            }
            #expect(try await eventually { lookUps.blocked == 1 })
            resolving.cancel()
            await #expect(throws: CancellationError.self) { _ = try await resolving.value }
            lookUps.release()
            #expect(try await eventually { lookUps.blocked == 0 })
            let addresses = try await Resolver.resolve(
                host: "now.invalid", port: 81, family: .unspecified, passive: false, lookUp: lookUps.lookUp)
            #expect(addresses == [try SocketAddress(host: "127.0.0.1", port: 81)])
        }
    }

    /// Blocked lookups hold threads of the library's own: more of them than the cooperative pool
    /// has threads all run at once, and tasks still run meanwhile. On Linux, Dispatch's default
    /// root queue is the pool Swift's tasks run on, so lookups queued there took its threads.
    @Test func blockedLookupsLeaveTheCooperativePoolFree() async throws {
        try await withDeadline {
            let lookUps = BlockedLookUps()
            defer { lookUps.release() }
            let count = ProcessInfo.processInfo.activeProcessorCount + 2
            let asked = Locked<[String: ContinuousClock.Instant]>([:])
            let resolving = (0..<count).map { i in
                Task {
                    let now = ContinuousClock.now
                    asked.withLock { $0["blocked\(i).invalid"] = now }
                    return try await Resolver.resolve(
                        host: "blocked\(i).invalid", port: 80, family: .unspecified, passive: false,
                        lookUp: lookUps.lookUp)
                }
            }
            #expect(try await eventually { lookUps.blocked == count }, "only \(lookUps.blocked) of \(count) started")
            // Each got a thread at once (Dispatch added threads for them only after seconds).
            // Measured from the asking task to the lookup's own thread, so that other suites
            // keeping the cooperative pool busy on a loaded machine do not count.
            let (askedAt, startedAt) = (asked.withLock { $0 }, lookUps.started.withLock { $0 })
            for (host, askedTime) in askedAt {
                let delay = startedAt[host].map { $0 - askedTime }
                #expect(delay.map { $0 < .seconds(1) } == true, "\(host) waited \(String(describing: delay))")
            }
            // With every lookup blocked, tasks on the cooperative pool still run (were the
            // lookups on its threads, this would wait for them until the deadline).
            let values = await withTaskGroup(of: Int.self) { group in
                for i in 0..<8 { group.addTask { i } }
                return await group.reduce(0, +)
            }
            #expect(values == 28)
            #expect(lookUps.blocked == count)
            lookUps.release()
            for task in resolving { _ = try await task.value }
        }
    }

    /// Work beyond the thread limit waits for a thread; threads idle past their time end, and
    /// later work starts new ones.
    @Test func blockingThreadsQueueBeyondTheirLimitAndEndWhenIdle() async throws {
        try await withDeadline { () async throws in
            let threads = BlockingThreads(limit: 2, idleSeconds: 1)
            let lookUps = BlockedLookUps()
            let ran = Atomic<Int>(0)
            for _ in 0..<2 { threads.run { _ = lookUps.lookUp(nil, 1, .unspecified, false) } }
            threads.run { ran.add(1, ordering: .relaxed) }
            #expect(try await eventually { lookUps.blocked == 2 })
            try await Task.sleep(for: .milliseconds(50))
            #expect(ran.load(ordering: .relaxed) == 0, "a third thread started past the limit")
            lookUps.release()
            #expect(try await eventually { ran.load(ordering: .relaxed) == 1 })
            try await Task.sleep(for: .milliseconds(1_500))
            threads.run { ran.add(1, ordering: .relaxed) }
            #expect(try await eventually { ran.load(ordering: .relaxed) == 2 })
        }
    }

    @Test func theSystemResolverFindsLocalhost() async throws {
        try await withDeadline {
            let addresses = try await Resolver.resolve(host: "localhost", port: 80, family: .inet, passive: false)
            #expect(addresses.contains(try SocketAddress(host: "127.0.0.1", port: 80)))
        }
    }
}
