/// What a keyspace keeps per partition when its node is one replica of many in a data center
/// (docs/CLUSTER.md, "The server wiring"): the partition's Merkle tree over its keys' states —
/// live entries and dead states alike, each as its `DurableRecord` — and the set of its keys,
/// so that anti-entropy compares trees and walks one partition's keys without a scan of the
/// whole keyspace.
///
/// The keyspace changes a key's record through many small steps in one locked section (a value,
/// then its dots; a delete, then its tombstone), so the trees follow keys, not steps: before the
/// first change of a key the keyspace notes the digest the tree holds for it (`noteChange`), and
/// `settle` puts the key's new digest in its place once the section is done — one digest out
/// and one in per key and section, however many steps it took.
public struct PartitionTracking: Sendable {
    /// What the trees held for a key before its pending change.
    enum Prior: Sendable {
        case absent
        case present(Digest128)
    }

    /// One partition's part in this keyspace.
    struct Held: Sendable {
        var digest = PartitionDigest()
        var keys: Set<[UInt8]> = []
    }

    public let partitioner: Partitioner
    private(set) var held: [Int: Held] = [:]
    /// Keys changed since the last `settle`, with what the trees held for them before.
    private(set) var pending: [[UInt8]: Prior] = [:]

    public init(partitionCount: Int) {
        partitioner = Partitioner(partitionCount: partitionCount)
    }

    /// Whether every change is in the trees.
    public var isSettled: Bool { pending.isEmpty }

    /// The partition of a key.
    public func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { partitioner.partition(of: $0) }
    }

    /// Notes that `key` is about to change, unless a change of it is already pending: `prior`
    /// is its record now (nil: it has none), whose digest the trees hold.
    mutating func noteChange(_ key: [UInt8], prior: DurableRecord?) {
        guard pending[key] == nil else { return }
        pending[key] = prior.map { .present(PartitionDigest.entryDigest(key: key, state: $0)) } ?? .absent
    }

    /// Replaces each pending key's old digest by the digest of its record now (`current`).
    mutating func settle(current: ([UInt8]) -> DurableRecord?) {
        for (key, prior) in pending {
            let partition = partition(of: key)
            let leaf = PartitionDigest.leaf(of: key)
            let now = current(key)
            var holder = held.removeValue(forKey: partition) ?? Held()
            if case .present(let old) = prior {
                holder.digest.toggle(old, leaf: leaf)
                if now == nil { holder.keys.remove(key) }
            }
            if let now {
                holder.digest.toggle(PartitionDigest.entryDigest(key: key, state: now), leaf: leaf)
                if case .absent = prior { holder.keys.insert(key) }
            }
            if !holder.keys.isEmpty { held[partition] = holder }
        }
        pending.removeAll(keepingCapacity: true)
    }

    /// Forgets everything (the keyspace was emptied as a whole).
    mutating func reset() {
        held = [:]
        pending = [:]
    }
}
