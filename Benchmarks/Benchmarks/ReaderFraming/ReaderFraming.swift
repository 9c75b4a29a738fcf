import Benchmark
import UringStreams

/// Reader framing on data fed by hand, across chunkings: how much the chunk queue costs when a
/// frame lies in one chunk (a slice, no copy) and when frames straddle chunks (joined).
let benchmarks: @Sendable () -> Void = {
    // `swift package benchmark thresholds check` fails on a regression past these tolerances
    // against Thresholds/: allocations must stay put (a cost per message would add thousands);
    // time is noisy on shared machines, so only large slowdowns count.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        maxDuration: .seconds(2), maxIterations: 100_000,
        thresholds: [
            .mallocCountTotal: .init(absolute: [.p50: 10, .p90: 20]),
            .wallClock: .init(relative: [.p50: 50.0]),
        ])

    /// 64 frames of 32 bytes, each ending in `separator`.
    func frames(separator: [UInt8]) -> [UInt8] {
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: 32 - separator.count)
        return Array((0..<64).map { _ in body + separator }.joined())
    }

    /// `bytes` as one chunk, or cut into `size`-byte chunks.
    func chunks(_ bytes: [UInt8], size: Int?) -> [Bytes] {
        guard let size else { return [Bytes(bytes)] }
        return stride(from: 0, to: bytes.count, by: size).map { Bytes(bytes[$0..<min($0 + size, bytes.count)]) }
    }

    // Names carry no spaces: the thresholds tool saves files with spaces replaced but looks them
    // up by the name as it is.
    for (label, chunkSize) in [("1chunk", nil), ("7ByteChunks", 7)] as [(String, Int?)] {
        let lines = chunks(frames(separator: [0x0A]), size: chunkSize)
        Benchmark("readLine-64x32B-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                let reader = StreamReader()
                for chunk in lines { reader.feedData(chunk) }
                for _ in 0..<64 { blackHole(try? await reader.readLine()) }
            }
        }

        // readUntil with a caller's one-byte separator: not readLine's built-in newline path.
        let semicolons = chunks(frames(separator: [0x3B]), size: chunkSize)
        Benchmark("readUntil1ByteSeparator-64x32B-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                let reader = StreamReader()
                for chunk in semicolons { reader.feedData(chunk) }
                for _ in 0..<64 { blackHole(try? await reader.readUntil([0x3B])) }
            }
        }

        let crlf = chunks(frames(separator: Array("\r\n\r\n".utf8)), size: chunkSize)
        Benchmark("readUntil4ByteSeparator-64x32B-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                let reader = StreamReader()
                for chunk in crlf { reader.feedData(chunk) }
                for _ in 0..<64 { blackHole(try? await reader.readUntil(Array("\r\n\r\n".utf8))) }
            }
        }

        Benchmark("readExactly-64x32B-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                let reader = StreamReader()
                for chunk in lines { reader.feedData(chunk) }
                for _ in 0..<64 { blackHole(try? await reader.readExactly(32)) }
            }
        }

        Benchmark("read512-of-2KiB-\(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                let reader = StreamReader()
                for chunk in lines { reader.feedData(chunk) }
                for _ in 0..<4 { blackHole(try? await reader.read(512)) }
            }
        }
    }
}
