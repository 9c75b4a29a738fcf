/// Latencies in nanoseconds, counted in log-linear buckets: exact below
/// 256 ns, then 128 buckets per power of two, so any percentile it reports
/// is within 0.8% of the true value. Recording is an array increment, so the
/// measuring loop allocates nothing however long it runs.
struct LatencyHistogram: Sendable {
    private static let linearLimit = 256
    private static let bucketsPerPowerOfTwo = 128
    /// Enough buckets for every UInt64: 256 exact ones, then 56 powers of two.
    private static let bucketCount = linearLimit + 56 * bucketsPerPowerOfTwo

    private var counts = [UInt64](repeating: 0, count: bucketCount)
    private(set) var count: UInt64 = 0
    private(set) var maximum: UInt64 = 0

    mutating func record(_ nanoseconds: UInt64) {
        counts[Self.bucket(of: nanoseconds)] &+= 1
        count &+= 1
        maximum = max(maximum, nanoseconds)
    }

    mutating func merge(_ other: LatencyHistogram) {
        for index in counts.indices {
            counts[index] &+= other.counts[index]
        }
        count &+= other.count
        maximum = max(maximum, other.maximum)
    }

    /// The latency that `fraction` (0.5 for p50) of the recorded ones do not exceed.
    func percentile(_ fraction: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = max(1, UInt64((fraction * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in counts.enumerated() {
            seen &+= bucketCount
            if seen >= rank {
                return min(Self.highestValue(inBucket: index), maximum)
            }
        }
        return maximum
    }

    private static func bucket(of value: UInt64) -> Int {
        if value < UInt64(linearLimit) {
            return Int(value)
        }
        // Keep the top 8 significant bits: the highest is always set, so
        // the other 7 pick one of 128 buckets within this power of two.
        let shift = (UInt64.bitWidth - 1 - value.leadingZeroBitCount) - 7
        let mantissa = Int(truncatingIfNeeded: value &>> UInt64(shift))
        return linearLimit + (shift - 1) * bucketsPerPowerOfTwo + (mantissa - bucketsPerPowerOfTwo)
    }

    private static func highestValue(inBucket index: Int) -> UInt64 {
        if index < linearLimit {
            return UInt64(index)
        }
        let shift = UInt64((index - linearLimit) / bucketsPerPowerOfTwo + 1)
        let mantissa = UInt64((index - linearLimit) % bucketsPerPowerOfTwo + bucketsPerPowerOfTwo)
        // Wrapping arithmetic: the very last bucket ends at UInt64.max.
        return ((mantissa &+ 1) &<< shift) &- 1
    }
}
