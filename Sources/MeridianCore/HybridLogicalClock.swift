/// A hybrid logical clock timestamp (Kulkarni et al. 2014): the high 48 bits are physical
/// milliseconds since the Unix epoch, the low 16 bits a logical counter that orders events
/// within one millisecond. Ordering by the raw value is ordering by (physical, logical).
public struct HLCTimestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The packed 64-bit representation; this is what goes on disk and on the wire.
    public var rawValue: UInt64

    /// Bits used by the logical counter.
    public static let logicalBits: UInt64 = 16
    /// Largest value of the logical counter before the clock borrows a millisecond.
    public static let logicalMax: UInt64 = (1 << logicalBits) - 1
    /// The zero timestamp; it precedes every real event.
    public static let zero = HLCTimestamp(rawValue: 0)

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inlinable
    public init(physicalMs: UInt64, logical: UInt64) {
        precondition(logical <= Self.logicalMax, "logical counter out of range")
        self.rawValue = (physicalMs << Self.logicalBits) | logical
    }

    /// Milliseconds since the Unix epoch.
    @inlinable
    public var physicalMs: UInt64 { rawValue >> Self.logicalBits }
    /// The logical counter within `physicalMs`.
    @inlinable
    public var logical: UInt64 { rawValue & Self.logicalMax }

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(physicalMs).\(logical)" }
}

/// Why a remote timestamp was refused.
public enum HLCError: Error, Equatable, Sendable {
    /// The remote clock is further ahead of ours than `maxClockOffsetMs` allows; accepting
    /// it would drag every later local timestamp into the future.
    case clockOffsetTooLarge(remote: HLCTimestamp, localPhysicalMs: UInt64, maxClockOffsetMs: UInt64)
}

/// The HLC algorithm as pure functions of the last issued timestamp and the physical time.
/// It owns no clock: the caller passes the wall clock in, so the simulator can drive it, and
/// the server can keep `last` in an atomic and advance it with compare-and-swap.
public struct HybridLogicalClock: Sendable {
    /// The default bound on how far ahead of us a remote timestamp may be (500 ms).
    public static let maxClockOffsetMsDefault: UInt64 = 500

    /// The last timestamp this clock issued or observed.
    public private(set) var last: HLCTimestamp
    /// Remote timestamps further ahead than this are refused.
    public let maxClockOffsetMs: UInt64

    public init(last: HLCTimestamp = .zero, maxClockOffsetMs: UInt64 = maxClockOffsetMsDefault) {
        self.last = last
        self.maxClockOffsetMs = maxClockOffsetMs
    }

    /// The timestamp for a local event at `physicalMs`: strictly greater than `last`.
    @inlinable
    public static func tick(after last: HLCTimestamp, physicalMs: UInt64) -> HLCTimestamp {
        if physicalMs > last.physicalMs {
            return HLCTimestamp(physicalMs: physicalMs, logical: 0)
        }
        // The wall clock stands still or went backwards: keep the physical part, count up.
        // When the counter is exhausted we borrow the next millisecond; `physicalMs` then
        // runs slightly ahead of the wall clock, which is what HLC allows.
        if last.logical == HLCTimestamp.logicalMax {
            return HLCTimestamp(physicalMs: last.physicalMs + 1, logical: 0)
        }
        return HLCTimestamp(rawValue: last.rawValue + 1)
    }

    /// Issues the timestamp of a local event.
    public mutating func now(physicalMs: UInt64) -> HLCTimestamp {
        let next = Self.tick(after: last, physicalMs: physicalMs)
        precondition(next > last, "HLC must be strictly monotonic")
        last = next
        return next
    }

    /// Merges a timestamp received from another node and returns the timestamp of the
    /// receive event, which is greater than both `last` and `remote`.
    public mutating func receive(_ remote: HLCTimestamp, physicalMs: UInt64) throws(HLCError) -> HLCTimestamp {
        if remote.physicalMs > physicalMs && remote.physicalMs - physicalMs > maxClockOffsetMs {
            throw .clockOffsetTooLarge(remote: remote, localPhysicalMs: physicalMs, maxClockOffsetMs: maxClockOffsetMs)
        }
        let floor = max(last, remote)
        let next = Self.tick(after: floor, physicalMs: physicalMs)
        precondition(next > last && next > remote, "HLC receive must dominate both inputs")
        last = next
        return next
    }
}
