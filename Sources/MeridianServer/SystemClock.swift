#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The wall and monotonic clocks of the shell. Core never reads a clock; the shell passes
/// these readings in. `clock_gettime` is a vDSO call, cheap enough to read per command.
public enum SystemClock {
    /// Milliseconds since the Unix epoch.
    @inline(__always)
    public static func nowUnixMs() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    /// Microseconds since the Unix epoch (for TIME).
    public static func nowUnixMicros() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
    }

    /// Nanoseconds of a monotonic clock, for durations.
    @inline(__always)
    public static func monotonicNs() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}
