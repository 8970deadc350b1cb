/// What a keyspace keeps per partition when its node is one replica of many in a data center
/// (docs/CLUSTER.md, "The server wiring"): the partition's Merkle tree over its keys' states —
/// live entries and dead states alike, each as its `DurableRecord` — and the set of its keys,
/// so that anti-entropy compares trees and walks one partition's keys without a scan of the
/// whole keyspace.
///
/// The keyspace changes a key's record through many small steps (a value, then its dots; a
/// delete, then its tombstone), so the trees follow keys, not steps: before the first change of
/// a key the keyspace notes the digest the tree holds for it (`noteChange`), and `settle` puts
/// the key's digest now in its place — one digest out and one in per key and settle, however
/// many steps and commands changed it in between. The trees are exact whenever they are settled,
/// so a settle may come at any point: readers settle first, and the keyspace settles by itself
/// when `pendingKeysMax` keys wait (which bounds the memory pending keys take).
///
/// A live key's digest is kept by slot (`slotDigests`), so the digest going out is not hashed
/// again; a dead state's is (dead states change rarely).
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

    /// Keys that may wait for a settle; the next change of another key settles first.
    public static let pendingKeysMax = 64

    public let partitioner: Partitioner
    private(set) var held: [Int: Held] = [:]
    /// Keys changed since the last `settle`, with what the trees held for them before.
    private(set) var pending: [[UInt8]: Prior] = [:]
    /// The digest in the trees of the live key in each slot (valid for a slot whose key is
    /// settled; a slot's next key is pending until its first settle).
    private(set) var slotDigests: [Digest128] = []

    public init(partitionCount: Int) {
        partitioner = Partitioner(partitionCount: partitionCount)
    }

    /// Whether every change is in the trees.
    public var isSettled: Bool { pending.isEmpty }

    /// The partition of a key.
    public func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { partitioner.partition(of: $0) }
    }

    public var pendingCount: Int { pending.count }

    func isPending(_ key: [UInt8]) -> Bool { pending[key] != nil }

    /// The digest the trees hold for the settled live key in `slot`.
    func digest(ofSlot slot: Int) -> Digest128 { slotDigests[slot] }

    /// Notes that `key` is about to change: `prior` is the digest the trees hold for it (nil:
    /// they hold none). Only the first note of a key between settles counts.
    mutating func noteChange(_ key: [UInt8], prior: Digest128?) {
        guard pending[key] == nil else { return }
        pending[key] = prior.map { .present($0) } ?? .absent
    }

    /// Replaces each pending key's old digest by the digest of its record now (`current`: the
    /// record, and the slot when the key is live).
    mutating func settle(current: ([UInt8]) -> (record: DurableRecord, slot: Int?)?) {
        for (key, prior) in pending {
            let partition = partition(of: key)
            let leaf = PartitionDigest.leaf(of: key)
            let found = current(key)
            let now = found.map { PartitionDigest.entryDigest(key: key, state: $0.record) }
            if let slot = found?.slot, let now {
                if slot >= slotDigests.count { slotDigests.append(contentsOf: repeatElement(.zero, count: slot + 1 - slotDigests.count)) }
                slotDigests[slot] = now
            }
            var holder = held.removeValue(forKey: partition) ?? Held()
            if case .present(let old) = prior {
                holder.digest.toggle(old, leaf: leaf)
                if now == nil { holder.keys.remove(key) }
            }
            if let now {
                holder.digest.toggle(now, leaf: leaf)
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
        slotDigests = []
    }
}
