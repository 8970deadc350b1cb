/// A histogram of durations with power-of-two microsecond buckets: constant memory, constant
/// time per sample, and quantiles good to within a factor of two, which is what an operator
/// reading `INFO persistence` needs to tell a 100 µs disk from a 10 ms one.
public struct LatencyHistogram: Sendable, Equatable {
    /// Bucket `i` counts samples in [2^(i-1), 2^i) µs; bucket 0 counts samples under 1 µs.
    public static let bucketCount = 40
    public private(set) var buckets = [UInt64](repeating: 0, count: LatencyHistogram.bucketCount)
    public private(set) var count: UInt64 = 0
    public private(set) var maxMicroseconds: UInt64 = 0
    public private(set) var totalMicroseconds: UInt64 = 0

    public init() {}

    /// Adds one sample.
    public mutating func record(microseconds: UInt64) {
        let bucket = microseconds == 0 ? 0 : min(Self.bucketCount - 1, 64 - microseconds.leadingZeroBitCount)
        buckets[bucket] += 1
        count += 1
        totalMicroseconds &+= microseconds
        maxMicroseconds = max(maxMicroseconds, microseconds)
    }

    /// The upper bound of the bucket holding the `fraction` quantile (0 when empty), capped
    /// by the largest sample seen.
    public func quantileMicroseconds(_ fraction: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = max(1, UInt64((Double(count) * fraction).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in buckets.enumerated() {
            seen += bucketCount
            if seen >= rank { return min(maxMicroseconds, index == 0 ? 1 : UInt64(1) << UInt64(index)) }
        }
        return maxMicroseconds
    }

    /// Mean of all samples in microseconds.
    public var meanMicroseconds: UInt64 { count == 0 ? 0 : totalMicroseconds / count }
}
