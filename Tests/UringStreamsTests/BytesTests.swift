// The value types of the spec: `Bytes` (section "Bytes"), `SocketAddress`
// (section "Addresses") and `StreamError`'s equality. No CPython cases map
// here one to one (Python's `bytes` is a builtin); the zero-copy lifetime
// tests guard what a `bytes` object gives for free: contents that never change.

import Glibc
import Testing
import UringStreams

@Suite(.timeLimit(.minutes(1)))
struct BytesTests {
    /// Bytes have no public initialiser: they come out of reads. Feeding in
    /// chunks makes the reader gather them, as a multi-segment value may.
    static func bytes(_ content: String, chunkSize: Int? = nil) async throws -> Bytes {
        let reader = StreamReader()
        let all = utf8(content)
        if let chunkSize {
            var start = 0
            while start < all.count {
                reader.feedData(all[start..<min(start + chunkSize, all.count)])
                start += chunkSize
            }
        } else {
            reader.feedData(all)
        }
        reader.feedEOF()
        return try await reader.read()
    }

    // MARK: Bytes

    @Test func comparesWithStringLiteralsAndByteArrays() async throws {
        try await withDeadline {
            let abc = try await Self.bytes("abc")
            let equalsLiteral = abc == "abc"
            let equalsOtherLiteral = abc == "abd"
            #expect(equalsLiteral)
            #expect(!equalsOtherLiteral)
            #expect(abc == utf8("abc"))
            #expect(!(abc == utf8("ab")))
            #expect(!(abc == utf8("abcd")))
        }
    }

    @Test func convertsToArraysAndStrings() async throws {
        try await withDeadline {
            let greeting = try await Self.bytes("grüß dich", chunkSize: 3)
            #expect(Array(greeting) == utf8("grüß dich"))
            #expect(String(decoding: greeting, as: UTF8.self) == "grüß dich")
        }
    }

    @Test func isARandomAccessCollectionOfBytes() async throws {
        try await withDeadline {
            let letters = try await Self.bytes("abcdef", chunkSize: 2)
            #expect(letters.count == 6)
            #expect(!letters.isEmpty)
            #expect(letters.first == UInt8(ascii: "a"))
            #expect(letters.last == UInt8(ascii: "f"))
            #expect(letters[letters.index(letters.startIndex, offsetBy: 3)] == UInt8(ascii: "d"))
            #expect(letters.distance(from: letters.startIndex, to: letters.endIndex) == 6)
            #expect(text(letters.reversed()) == "fedcba")
            #expect(text(letters.prefix(2)) == "ab")
            #expect(text(letters.dropFirst(4)) == "ef")
            let cIndex = try #require(letters.firstIndex(of: UInt8(ascii: "c")))
            #expect(text(letters[cIndex...]) == "cdef")
            #expect(letters.indices.count == 6)
        }
    }

    @Test func exposesItsStorageThroughWithUnsafeBytes() async throws {
        try await withDeadline {
            let letters = try await Self.bytes("unsafe bytes", chunkSize: 5)
            let copied = letters.withUnsafeBytes { Array($0) }
            #expect(copied == utf8("unsafe bytes"))
        }
    }

    @Test func exposesItsStorageThroughASpan() async throws {
        try await withDeadline {
            let letters = try await Self.bytes("span", chunkSize: 1)
            let span = letters.span
            let count = span.count
            let first = span[0]
            let last = span[count - 1]
            #expect(count == 4)
            #expect(first == UInt8(ascii: "s"))
            #expect(last == UInt8(ascii: "n"))
        }
    }

    @Test func equalContentsAreEqualAndHashAlike() async throws {
        try await withDeadline {
            let whole = try await Self.bytes("same contents")
            let gathered = try await Self.bytes("same contents", chunkSize: 4)
            let other = try await Self.bytes("other contents")
            #expect(whole == gathered)
            #expect(whole.hashValue == gathered.hashValue)
            #expect(whole != other)
            #expect(Set([whole, gathered, other]).count == 2)
        }
    }

    @Test func readsOfNothingReturnEmptyBytes() async throws {
        try await withDeadline {
            let reader = StreamReader()
            reader.feedData("x".utf8)
            let zero = try await reader.read(0)
            #expect(zero.isEmpty)
            #expect(zero.count == 0)
            #expect(Array(zero) == [])
            let equalsEmptyLiteral = zero == ""
            #expect(equalsEmptyLiteral)
            reader.feedEOF()
            _ = try await reader.read()
            let atEOF = try await reader.readLine()
            #expect(atEOF.isEmpty)
            #expect(atEOF == zero)
        }
    }

    @Test func crossesTasks() async throws {
        try await withDeadline {
            let letters = try await Self.bytes("sendable", chunkSize: 3)
            let seenElsewhere = await Task.detached { text(letters) }.value
            #expect(seenElsewhere == "sendable")
        }
    }

    @Test func contentsStayIntactWhileReceiveBuffersAreReused() async throws {
        try await withDeadline(20) {
            let (ours, peer) = try RawSocket.pair()
            defer { RawSocket.close(peer) }
            let (reader, writer) = try await openConnection(fileDescriptor: ours)
            let payload = patternBytes(count: 4 << 20)
            async let sending: Void = onThread { try RawSocket.writeAll(peer, payload) }

            // Keep every chunk while many more receives happen after it; a
            // buffer given back too early would show up as changed contents.
            var chunks: [Bytes] = []
            var total = 0
            while total < payload.count {
                let chunk = try await reader.read(65_536)
                if chunk.isEmpty { break }
                chunks.append(chunk)
                total += chunk.count
            }
            try await sending
            writer.close()
            try await writer.waitClosed()

            #expect(total == payload.count)
            var joined: [UInt8] = []
            joined.reserveCapacity(total)
            for chunk in chunks { joined += chunk }
            let identical = sameBytes(joined, payload)
            #expect(identical)
        }
    }

    /// Converting and comparing are single memory copies and compares, not a walk over every
    /// byte: element by element, unoptimised (debug) code spent over a second on 16 MiB, time the
    /// whole process then waited on under load. Measured as this thread's CPU time, which other
    /// processes on the machine do not inflate.
    @Test func largeBytesConvertAndCompareAtMemoryCopySpeed() async throws {
        try await withDeadline {
            let array = patternBytes(count: 16 << 20)
            let bytes = Bytes(array)
            let (copied, equal, appended) = try Self.threadCPUTime(below: .milliseconds(300)) {
                var appended: [UInt8] = [1]
                appended += bytes
                return (Array(bytes), bytes == array, appended)
            }
            #expect(copied.count == array.count)
            #expect(sameBytes(copied, array))
            #expect(equal)
            #expect(appended.count == array.count + 1 && appended.first == 1 && appended.last == array.last)
            #expect(Array(bytes.bytes(3..<7)) == Array(array[3..<7]))
            var differing = array
            differing[differing.count - 1] &+= 1
            #expect(!(bytes == differing))
            #expect(Array(Bytes()) == [])
            // Into a buffer too short for them: the rest comes from the iterator handed back.
            let short = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 4)
            defer { short.deallocate() }
            let (rest, filled) = short.initialize(from: Bytes(utf8("abcdef")))
            #expect(filled == 4 && Array(short) == utf8("abcd"))
            #expect(Array(IteratorSequence(rest)) == utf8("ef"))
        }
    }

    /// Runs `body` and records an issue when it took more than `limit` of this thread's CPU time.
    private static func threadCPUTime<T>(below limit: Duration, _ body: () throws -> T) throws -> T {
        func now() -> Duration {
            var spec = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
            return .seconds(spec.tv_sec) + .nanoseconds(spec.tv_nsec)
        }
        let start = now()
        let result = try body()
        let spent = now() - start
        #expect(spent < limit, "took \(spent) of CPU time")
        return result
    }

    @Test func contentsOutliveTheConnection() async throws {
        try await withDeadline {
            let (ours, peer) = try RawSocket.pair()
            defer { RawSocket.close(peer) }
            let kept = try await Self.readOnceAndClose(ours, peer: peer)
            #expect(text(kept) == "kept after close")
        }
    }

    private static func readOnceAndClose(_ descriptor: Int32, peer: Int32) async throws -> Bytes {
        let (reader, writer) = try await openConnection(fileDescriptor: descriptor)
        try await onThread { try RawSocket.writeAll(peer, utf8("kept after close")) }
        let chunk = try await reader.readExactly(16)
        writer.close()
        try await writer.waitClosed()
        return chunk  // reader and writer go away here
    }

    // MARK: SocketAddress

    @Test func ipv4Address() throws {
        let address = try SocketAddress(host: "127.0.0.1", port: 8080)
        #expect(address.family == .inet)
        #expect(address.host == "127.0.0.1")
        #expect(address.port == 8080)
        #expect(address.path == nil)
        #expect(address.description.contains("127.0.0.1"))
        #expect(address.description.contains("8080"))
    }

    @Test func ipv6Address() throws {
        let address = try SocketAddress(host: "::1", port: 443)
        #expect(address.family == .inet6)
        #expect(address.host == "::1")
        #expect(address.port == 443)
        #expect(address.path == nil)
        #expect(address.description.contains("::1"))
        #expect(address.description.contains("443"))
    }

    @Test func unixAddress() throws {
        let address = try SocketAddress(unixPath: "/tmp/some.sock")
        #expect(address.family == .unix)
        #expect(address.host == "")
        #expect(address.port == 0)
        #expect(address.path == "/tmp/some.sock")
        #expect(address.description.contains("/tmp/some.sock"))
    }

    @Test(arguments: ["localhost", "256.0.0.1", "", "1.2.3.4.5", "::g", "example.com"])
    func nonNumericHostsAreRejected(host: String) {
        let error = #expect(throws: StreamError.self) { _ = try SocketAddress(host: host, port: 80) }
        #expect(isInvalidArgument(error))
    }

    @Test func overlongUnixPathsAreRejected() {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: (any Error).self) { _ = try SocketAddress(unixPath: path) }
    }

    @Test func addressesCompareAndHashByValue() throws {
        let first = try SocketAddress(host: "127.0.0.1", port: 80)
        let same = try SocketAddress(host: "127.0.0.1", port: 80)
        let otherPort = try SocketAddress(host: "127.0.0.1", port: 81)
        let otherFamily = try SocketAddress(host: "::1", port: 80)
        let unix = try SocketAddress(unixPath: "/tmp/a.sock")
        #expect(first == same)
        #expect(first.hashValue == same.hashValue)
        #expect(first != otherPort)
        #expect(first != otherFamily)
        #expect(first != unix)
        #expect(Set([first, same, otherPort, otherFamily, unix]).count == 4)
    }

    // MARK: StreamError

    @Test func streamErrorsCompareByCaseAndPayload() {
        #expect(StreamError.invalidArgument("limit") == .invalidArgument("limit"))
        #expect(StreamError.invalidArgument("limit") != .invalidArgument("separator"))
        #expect(StreamError.system(errno: 9, operation: "recv") == .system(errno: 9, operation: "recv"))
        #expect(StreamError.system(errno: 9, operation: "recv") != .system(errno: 9, operation: "send"))
        #expect(StreamError.closed != .serverClosed)
    }
}
