/// One replicated write's identity: the node that accepted it and that node's count of
/// replicated writes so far (starting at 1, without gaps). See docs/REPLICATION.md.
public struct Dot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var origin: ReplicaID
    public var sequence: UInt64

    public init(origin: ReplicaID, sequence: UInt64) {
        precondition(sequence > 0, "dots start at sequence 1")
        self.origin = origin
        self.sequence = sequence
    }

    public static func < (lhs: Dot, rhs: Dot) -> Bool {
        (lhs.origin, lhs.sequence) < (rhs.origin, rhs.sequence)
    }

    public var description: String { "\(origin)#\(sequence)" }
}

/// For each origin, the highest sequence up to which every dot of that origin has been
/// applied. It says where a delta stream resumes, whether a write is known, and when a
/// tombstone may be dropped (once every data center's vector covers it).
///
/// Entries are kept sorted by origin, so iteration, encoding and equality never depend on
/// hashing order. An origin that is absent has sequence 0.
public struct VersionVector: Equatable, Sendable, CustomStringConvertible {
    /// `(origin, sequence)` pairs sorted by origin, sequences > 0.
    public private(set) var entries: [(origin: ReplicaID, sequence: UInt64)] = []

    public init() {}

    /// A vector from pairs in any order (later pairs of one origin win if larger).
    public init(_ pairs: [(ReplicaID, UInt64)]) {
        for (origin, sequence) in pairs { advance(origin, to: sequence) }
    }

    /// The sequence recorded for `origin` (0 when none).
    public subscript(origin: ReplicaID) -> UInt64 {
        guard let index = position(of: origin) else { return 0 }
        return entries[index].sequence
    }

    /// Whether the write `dot` is covered (applied here, with everything before it).
    public func covers(_ dot: Dot) -> Bool { self[dot.origin] >= dot.sequence }

    /// Whether every entry of `other` is covered by this vector.
    public func covers(_ other: VersionVector) -> Bool {
        other.entries.allSatisfy { self[$0.origin] >= $0.sequence }
    }

    /// Records `dot` if it is the next of its origin; returns whether the vector moved. A dot
    /// past a gap does not move it: the vector only ever claims contiguous prefixes.
    @discardableResult
    public mutating func record(_ dot: Dot) -> Bool {
        guard dot.sequence == self[dot.origin] + 1 else { return false }
        advance(dot.origin, to: dot.sequence)
        return true
    }

    /// Raises `origin`'s entry to `sequence` (never lowers it). For states known to be
    /// complete up to `sequence`: a merged vector, a snapshot's end.
    public mutating func advance(_ origin: ReplicaID, to sequence: UInt64) {
        guard sequence > 0 else { return }
        switch search(origin) {
        case .found(let index):
            entries[index].sequence = max(entries[index].sequence, sequence)
        case .insertAt(let index):
            entries.insert((origin, sequence), at: index)
        }
    }

    /// Pointwise maximum: commutative, associative and idempotent.
    public mutating func merge(_ other: VersionVector) {
        for entry in other.entries { advance(entry.origin, to: entry.sequence) }
    }

    /// Pointwise minimum over several vectors: what all of them cover (tombstone GC).
    public static func meet(_ vectors: [VersionVector]) -> VersionVector {
        guard var result = vectors.first else { return VersionVector() }
        for vector in vectors.dropFirst() {
            result.entries = result.entries.compactMap { entry in
                let other = vector[entry.origin]
                return other == 0 ? nil : (entry.origin, min(entry.sequence, other))
            }
        }
        return result
    }

    public static func == (lhs: VersionVector, rhs: VersionVector) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.origin == $1.origin && $0.sequence == $1.sequence }
    }

    public var description: String {
        "[" + entries.map { "\($0.origin):\($0.sequence)" }.joined(separator: ",") + "]"
    }

    private enum SearchResult { case found(Int), insertAt(Int) }

    private func search(_ origin: ReplicaID) -> SearchResult {
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].origin == origin { return .found(middle) }
            if entries[middle].origin < origin { low = middle + 1 } else { high = middle }
        }
        return .insertAt(low)
    }

    private func position(of origin: ReplicaID) -> Int? {
        if case .found(let index) = search(origin) { return index }
        return nil
    }
}
