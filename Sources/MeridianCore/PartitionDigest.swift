/// 128 bits of a SHA-256, combined by XOR. XOR makes a set's digest order-free and updatable in
/// O(1) per write (XOR the old entry out, the new one in); truncating SHA-256 to 128 bits keeps
/// an accidental match between two different sets at 2^-128.
public struct Digest128: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public static let zero = Digest128(high: 0, low: 0)

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// XORs `other` in (or out: XOR is its own inverse).
    @inlinable
    public mutating func combine(_ other: Digest128) {
        high ^= other.high
        low ^= other.low
    }

    public var description: String {
        let text = String(high, radix: 16) + String(low, radix: 16)
        return String(text.prefix(8))
    }
}

/// The Merkle tree of one partition on one replica (docs/CLUSTER.md, "Anti-entropy"): keys fall
/// into `leafCount` leaves by a hash of the key; a leaf's digest is the XOR of its entries'
/// digests, an inner node's the XOR of its `fanout` children. Two replicas hold the same
/// states exactly when their roots match (up to 2^-128); otherwise comparing level by level
/// finds the differing leaves after `levels` round trips, exchanging only their children.
///
/// 256 leaves in three levels (1, 16, 256): 273 digests, 4.4 KiB per partition, so a node
/// holding 1,024 partitions spends 4.5 MiB on trees. With a million keys over 1,024
/// partitions a leaf covers about four keys.
public struct PartitionDigest: Sendable, Equatable {
    public static let fanout = 16
    /// Levels below the root: level 0 is the root, level `leafLevel` the leaves.
    public static let leafLevel = 2
    public static let leafCount = 256
    /// The first index of each level in `nodes`.
    static let levelStart = [0, 1, 17]
    static let nodeCount = 273

    /// Every level's digests, root first.
    private var nodes: [Digest128]

    public init() { nodes = Array(repeating: .zero, count: Self.nodeCount) }

    public var root: Digest128 { nodes[0] }

    /// The number of nodes at `level`.
    public static func width(of level: Int) -> Int {
        precondition(level >= 0 && level <= leafLevel)
        var width = 1
        for _ in 0..<level { width *= fanout }
        return width
    }

    /// The digest of node `index` at `level`, or zero for an index out of range (so a peer's
    /// malformed request compares as different rather than trapping).
    public func digest(level: Int, index: Int) -> Digest128 {
        guard level >= 0, level <= Self.leafLevel, index >= 0, index < Self.width(of: level) else { return .zero }
        return nodes[Self.levelStart[level] + index]
    }

    /// The leaf that holds `key`: FNV-1a of the key (any stable hash that spreads keys will do;
    /// it must be the same on every replica).
    public static func leaf(of key: [UInt8]) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in key { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return Int(truncatingIfNeeded: (hash ^ (hash >> 32)) & UInt64(leafCount - 1))
    }

    /// The digest of one key's state: SHA-256 over the key and the record's encoding (value or
    /// tombstone, stamps, expiry, counter, dots) — everything a merge decides on. The encoding
    /// hint (`OBJECT ENCODING`) is left out: it is presentation, not state, and must not keep
    /// two replicas' trees apart.
    public static func entryDigest(key: [UInt8], state: DurableRecord) -> Digest128 {
        var canonical = state
        canonical.encoding = .byContent
        var bytes: [UInt8] = []
        bytes.reserveCapacity(key.count + canonical.encodedByteCount + 4)
        appendBigEndian(UInt32(key.count), to: &bytes)
        bytes += key
        canonical.encode(into: &bytes)
        let hash = bytes.withUnsafeBytes { SHA256.digest128(of: $0) }
        return Digest128(high: hash.high, low: hash.low)
    }

    /// XORs every node of `other` in: the tree of the union of two disjoint sets of keys (a
    /// node's partition is spread over its keyspace shards, each keeping its part's tree).
    public mutating func combine(_ other: PartitionDigest) {
        for index in nodes.indices { nodes[index].combine(other.nodes[index]) }
    }

    /// Adds or removes (XOR either way) one entry's digest in `leaf` and its ancestors.
    public mutating func toggle(_ entry: Digest128, leaf: Int) {
        precondition(leaf >= 0 && leaf < Self.leafCount)
        var index = leaf
        var level = Self.leafLevel
        while true {
            nodes[Self.levelStart[level] + index].combine(entry)
            if level == 0 { break }
            index /= Self.fanout
            level -= 1
        }
    }

    private static func appendBigEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { bytes += $0 }
    }
}
