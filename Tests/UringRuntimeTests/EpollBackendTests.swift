import Glibc
import Logging
import Testing

@testable import UringRing
@testable import UringRuntime

/// The epoll backend against the completions io_uring would post for the same operations, driven
/// directly (no loop) over socket pairs; and how a loop chooses its backend.
@Suite(.timeLimit(.minutes(1)))
struct EpollBackendTests {
    /// Submits what is prepared, waiting for at least `count` completions, and returns them.
    private func completions(_ backend: EpollBackend, atLeast count: Int) throws -> [Completion] {
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 64)
        defer { buffer.deallocate() }
        var result: [Completion] = []
        repeat {
            try backend.submit(waitingFor: count - result.count)
            let reaped = backend.reap(into: buffer)
            result += buffer[0..<reaped]
        } while result.count < count
        return result
    }

    /// A buffer ring of `count` buffers of `size` bytes, filled as the loop's pool fills it.
    private func bufferRing(_ backend: EpollBackend, count: Int, size: Int, incremental: Bool) throws -> (
        ProvidedBufferRingMemory, UnsafeMutableRawPointer
    ) {
        let ring = try backend.registerBufferRing(entries: count, group: 0, incremental: incremental)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * size, alignment: 16)
        for id in 0..<count { ring.addBuffer(storage + id * size, length: size, id: UInt16(id), offset: id) }
        ring.advance(by: count)
        return (ring, storage)
    }

    @Test func multishotReceivesConsumeIncrementalBuffersAndEndAtEndOfFile() throws {
        let backend = try EpollBackend()
        let (ring, storage) = try bufferRing(backend, count: 2, size: 64, incremental: true)
        defer { storage.deallocate() }
        let (ours, peer) = socketPair()
        defer { close(ours) }
        backend.prepare(.receiveMultishot(fd: ours, bufferGroup: 0, bundle: false, totalLimit: 0), userData: 7)
        #expect(try completions(backend, atLeast: 0).isEmpty)

        _ = write(peer, "hello", 5)
        let first = try completions(backend, atLeast: 1)
        #expect(
            first == [
                Completion(
                    userData: 7, result: 5,
                    flags: CompletionFlags.buffer | CompletionFlags.more | CompletionFlags.bufferMore)
            ])
        #expect(String(decoding: UnsafeRawBufferPointer(start: storage, count: 5), as: UTF8.self) == "hello")

        // The rest of the same buffer takes the next receive, right after the first.
        _ = write(peer, "world", 5)
        let second = try completions(backend, atLeast: 1)
        #expect(second.first?.result == 5)
        #expect(second.first?.bufferID == 0)
        #expect(String(decoding: UnsafeRawBufferPointer(start: storage + 5, count: 5), as: UTF8.self) == "world")
        #expect(ring.entry(at: 0).length == 54)

        close(peer)
        let end = try completions(backend, atLeast: 1)
        #expect(end == [Completion(userData: 7, result: 0)])
    }

    @Test func aReceiveWithoutFreeBuffersEndsWithENOBUFSAndALimitedOneEndsAtItsLimit() throws {
        let backend = try EpollBackend()
        let (_, storage) = try bufferRing(backend, count: 1, size: 16, incremental: false)
        defer { storage.deallocate() }
        let (ours, peer) = socketPair()
        defer {
            close(ours)
            close(peer)
        }
        _ = write(peer, String(repeating: "x", count: 40), 40)
        backend.prepare(.receiveMultishot(fd: ours, bufferGroup: 0, bundle: false, totalLimit: 0), userData: 1)
        let results = try completions(backend, atLeast: 2)
        #expect(results.map(\.result) == [16, -ENOBUFS])
        #expect(results[0].hasMore && !results[1].hasMore)

        let limited = try EpollBackend()
        let (_, more) = try bufferRing(limited, count: 4, size: 16, incremental: false)
        defer { more.deallocate() }
        limited.prepare(.receiveMultishot(fd: ours, bufferGroup: 0, bundle: false, totalLimit: 20), userData: 2)
        let capped = try completions(limited, atLeast: 2)
        #expect(capped.map(\.result) == [16, 4])
        #expect(capped[0].hasMore && !capped[1].hasMore)
    }

    /// io_uring copies a send's header when it takes the submission, so the loop reuses its
    /// scratch header at once; a send that has to wait must not read the caller's header later.
    @Test func aSendThatWaitsKeepsItsOwnCopyOfTheHeader() throws {
        let backend = try EpollBackend()
        let (ours, peer) = socketPair()
        defer {
            close(ours)
            close(peer)
        }
        var small: Int32 = 4096
        setsockopt(ours, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        let payload = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { payload.deallocate() }
        payload.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 1 << 20)
        // Fill the socket until a send would block.
        while send(ours, payload, 65536, Int32(MSG_DONTWAIT)) > 0 {}
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        let header = UnsafeMutablePointer<msghdr>.allocate(capacity: 1)
        defer {
            iovecs.deallocate()
            header.deallocate()
        }
        iovecs.initialize(to: iovec(iov_base: payload, iov_len: 100))
        header.initialize(to: msghdr())
        header.pointee.msg_iov = iovecs
        header.pointee.msg_iovlen = 1
        backend.prepare(.sendMessage(fd: ours, message: UnsafeMutableRawPointer(header), flags: 0), userData: 9)
        try backend.submit(waitingFor: 0)
        #expect(backend.pendingSubmissions == 0)
        // The caller reuses its header for something else.
        iovecs.pointee = iovec(iov_base: nil, iov_len: 0)
        header.pointee.msg_iovlen = 0
        // Drain the peer so the waiting send can go.
        let sink = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { sink.deallocate() }
        while recv(peer, sink, 1 << 20, Int32(MSG_DONTWAIT)) > 0 {}
        let results = try completions(backend, atLeast: 1)
        #expect(results == [Completion(userData: 9, result: 100)])
    }

    @Test func timeoutsExpireInOrderAndCancelsAnswerAsIoUringDoes() throws {
        let backend = try EpollBackend()
        let spec = UnsafeMutablePointer<Int64>.allocate(capacity: 4)
        defer { spec.deallocate() }
        spec[0] = 0
        spec[1] = 30_000_000
        spec[2] = 0
        spec[3] = 5_000_000
        let start = ContinuousClock.now
        backend.prepare(.timeout(timespec: UnsafeMutableRawPointer(spec)), userData: 1)
        backend.prepare(.timeout(timespec: UnsafeMutableRawPointer(spec + 2)), userData: 2)
        backend.prepare(.timeout(timespec: UnsafeMutableRawPointer(spec)), userData: 3)
        backend.prepare(.cancel(target: 3), userData: 4)
        backend.prepare(.cancel(target: 99), userData: 5)
        let results = try completions(backend, atLeast: 5)
        #expect(ContinuousClock.now - start >= .milliseconds(30))
        #expect(
            results == [
                Completion(userData: 3, result: -ECANCELED), Completion(userData: 4, result: 0),
                Completion(userData: 5, result: -ENOENT), Completion(userData: 2, result: -ETIME),
                Completion(userData: 1, result: -ETIME),
            ])
    }

    @Test func cancellingAWaitingReceiveEndsIt() throws {
        let backend = try EpollBackend()
        let (_, storage) = try bufferRing(backend, count: 1, size: 16, incremental: false)
        defer { storage.deallocate() }
        let (ours, peer) = socketPair()
        defer {
            close(ours)
            close(peer)
        }
        backend.prepare(.receiveMultishot(fd: ours, bufferGroup: 0, bundle: false, totalLimit: 0), userData: 1)
        backend.prepare(.cancelEverything, userData: 2)
        let results = try completions(backend, atLeast: 2)
        #expect(results == [Completion(userData: 1, result: -ECANCELED), Completion(userData: 2, result: 1)])
    }

    // MARK: Choosing the backend

    @Test func theEnvironmentChoosesTheBackendAndABadValueIsReported() {
        for (text, expected) in [("epoll", EventLoop.Backend.epoll), ("io_uring", .ioUring), ("AUTOMATIC", .automatic)]
        {
            let configuration = EventLoop.Configuration(environment: { $0 == "URINGSTREAMS_BACKEND" ? text : nil })
            #expect(configuration.backend == expected)
            #expect(configuration.rejectedEnvironment.isEmpty)
        }
        let bad = EventLoop.Configuration(environment: { $0 == "URINGSTREAMS_BACKEND" ? "kqueue" : nil })
        #expect(bad.backend == .automatic)
        #expect(bad.rejectedEnvironment.first?.hasPrefix("URINGSTREAMS_BACKEND=kqueue ignored") == true)
    }

    @Test func automaticFallsBackOnlyWhenIoUringIsBlocked() throws {
        let blocked = EventLoop.backendFactory(.automatic) { () throws(RingError) -> any RingBackend in
            throw RingError.unavailable(reason: "seccomp says no")
        }
        let fallback = try blocked()
        #expect(fallback.kind == .epoll)
        #expect((fallback as? EpollBackend)?.fallbackReason?.contains("seccomp says no") == true)

        // Out of descriptors is not a verdict on io_uring: the loop retries it later.
        let exhausted = EventLoop.backendFactory(.automatic) { () throws(RingError) -> any RingBackend in
            throw RingError.system(errno: EMFILE, operation: "io_uring_setup")
        }
        #expect(throws: RingError.self) { try exhausted() }

        let forced = EventLoop.backendFactory(.ioUring) { () throws(RingError) -> any RingBackend in
            throw RingError.unavailable(reason: "seccomp says no")
        }
        #expect(throws: RingError.self) { try forced() }
        let epoll = EventLoop.backendFactory(.epoll) { () throws(RingError) -> any RingBackend in
            throw RingError.unavailable(reason: "io_uring must not be tried")
        }
        #expect(try epoll().kind == .epoll)
    }

    @Test func aGroupWhoseIoUringIsBlockedUsesEpollAndSaysSoOnce() async throws {
        let recorder = RecordingLogHandler()
        let group = EventLoopGroup(
            loopCount: 2, configuration: .init(),
            makeRing: EventLoop.backendFactory(.automatic) { () throws(RingError) -> any RingBackend in
                throw RingError.unavailable(reason: "blocked by a test")
            },
            logger: recorder.logger())
        #expect(group.unavailableReason == nil)
        for loop in group.loops {
            #expect(loop.backend == .epoll)
            #expect(loop.statistics.backend == .epoll)
        }
        let notices = recorder.entries(containing: "uses the epoll backend")
        #expect(notices.count == 1)
        #expect(notices.first?.level == .notice)
        #expect(notices.first?.metadata["reason"]?.contains("blocked by a test") == true)
        // A loop on the fallback still sleeps on its timer.
        let loop = group.next()
        try await withTaskExecutorPreference(loop) { try await loop.sleep(for: .milliseconds(5)) }
        try await group.shutdown()
    }
}
