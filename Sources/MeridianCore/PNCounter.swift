/// A counter that several data centers change at once (the `INCR` family in eventual
/// namespaces): a PN-counter with a last-writer-wins reset. See docs/REPLICATION.md.
///
/// Each origin's increments and decrements are two monotone totals (`P`, `N`), so merging
/// takes the maximum of each and concurrent increments in different data centers all count.
/// A reset (`SET`) writes a `base` under an LWW stamp and records the contributions it
/// observed; the value is `base` plus what each origin added since. Merging takes the reset
/// with the larger stamp. Arithmetic wraps: the command layer checks a result's range.
public struct PNCounter: Equatable, Sendable {
    /// Per origin: totals added (`p`) and subtracted (`n`), and what the reset observed of
    /// `p - n`. Sorted by origin.
    public struct Contribution: Equatable, Sendable {
        public var origin: ReplicaID
        public var p: UInt64
        public var n: UInt64
        public var observed: Int64

        public var net: Int64 { Int64(bitPattern: p &- n) }

        public init(origin: ReplicaID, p: UInt64, n: UInt64, observed: Int64) {
            self.origin = origin
            self.p = p
            self.n = n
            self.observed = observed
        }
    }

    /// The value the last reset wrote.
    public private(set) var base: Int64 = 0
    /// The last reset's stamp (`LWWStamp.zero`: never reset).
    public private(set) var resetStamp: LWWStamp = .zero
    public private(set) var contributions: [Contribution] = []

    public init() {}

    /// A counter from its parts (a decoded delta). `contributions` must be sorted by origin,
    /// one per origin.
    public init(base: Int64, resetStamp: LWWStamp, contributions: [Contribution]) {
        precondition(zip(contributions, contributions.dropFirst()).allSatisfy { $0.origin < $1.origin },
                     "contributions sorted by origin, one per origin")
        self.base = base
        self.resetStamp = resetStamp
        self.contributions = contributions
    }

    /// The counter's value.
    public var value: Int64 {
        contributions.reduce(base) { $0 &+ ($1.net &- $1.observed) }
    }

    /// Adds `delta` (negative to subtract) as a write of `origin`.
    public mutating func add(_ delta: Int64, origin: ReplicaID) {
        let index = indexCreating(origin)
        if delta >= 0 {
            contributions[index].p &+= UInt64(delta)
        } else {
            contributions[index].n &+= UInt64(bitPattern: 0 &- delta)
        }
    }

    /// Sets the value (`SET`): every contribution seen so far is absorbed into `value`.
    public mutating func reset(to value: Int64, stamp: LWWStamp) {
        base = value
        resetStamp = stamp
        for index in contributions.indices { contributions[index].observed = contributions[index].net }
    }

    /// Merges another replica's state: commutative, associative and idempotent.
    public mutating func merge(_ other: PNCounter) {
        let otherResetWins = other.resetStamp > resetStamp
        if otherResetWins {
            base = other.base
            resetStamp = other.resetStamp
        }
        // Observations belong to the winning reset; totals take the maximum.
        var merged: [Contribution] = []
        var i = 0
        var j = 0
        while i < contributions.count || j < other.contributions.count {
            let mine = i < contributions.count ? contributions[i] : nil
            let theirs = j < other.contributions.count ? other.contributions[j] : nil
            if let mine, theirs == nil || mine.origin < theirs!.origin {
                merged.append(Contribution(origin: mine.origin, p: mine.p, n: mine.n, observed: otherResetWins ? 0 : mine.observed))
                i += 1
            } else if let theirs, mine == nil || theirs.origin < mine!.origin {
                merged.append(Contribution(origin: theirs.origin, p: theirs.p, n: theirs.n, observed: otherResetWins ? theirs.observed : 0))
                j += 1
            } else {
                let mine = mine!, theirs = theirs!
                merged.append(Contribution(
                    origin: mine.origin, p: max(mine.p, theirs.p), n: max(mine.n, theirs.n),
                    observed: otherResetWins ? theirs.observed : mine.observed))
                i += 1
                j += 1
            }
        }
        contributions = merged
    }

    private mutating func indexCreating(_ origin: ReplicaID) -> Int {
        var low = 0
        var high = contributions.count
        while low < high {
            let middle = (low + high) / 2
            if contributions[middle].origin == origin { return middle }
            if contributions[middle].origin < origin { low = middle + 1 } else { high = middle }
        }
        contributions.insert(Contribution(origin: origin, p: 0, n: 0, observed: 0), at: low)
        return low
    }
}

extension PNCounter {
    /// The decimal text of `value` (what GET returns for a counter).
    public static func decimalBytes(_ value: Int64) -> [UInt8] {
        Array(String(value).utf8)
    }

    /// `bytes` as a Redis integer (see the `UnsafeRawBufferPointer` form).
    public static func parseDecimal(_ bytes: [UInt8]) -> Int64? {
        bytes.withUnsafeBytes { parseDecimal($0) }
    }

    /// `bytes` as a Redis integer, as Redis's `string2ll` reads one: optional `-`, digits, no
    /// spaces, no `+`, no leading zeros, within Int64 (INCR's operands and values, counters).
    @inlinable
    public static func parseDecimal(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        let count = bytes.count
        guard count > 0 && count <= 20 else { return nil }
        var index = 0
        var negative = false
        if bytes[0] == UInt8(ascii: "-") {
            negative = true
            index = 1
            guard count > 1 else { return nil }
        }
        if bytes[index] == UInt8(ascii: "0") { return count - index == 1 && !negative ? 0 : nil }
        var magnitude: UInt64 = 0
        while index < count {
            let digit = UInt64(bytes[index]) &- 48
            guard digit <= 9 else { return nil }
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(digit)
            guard !o1 && !o2 else { return nil }
            magnitude = sum
            index += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }
}
