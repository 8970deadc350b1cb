import MeridianCore

/// A node's replicas kept in a keyspace (docs/CLUSTER.md, "The server wiring"): the records a
/// replica holds are the keyspace's entries and dead states, its trees the keyspace's partition
/// tracking. One `Keyspace` here; the server's node spreads a partition over its shards, each a
/// keyspace, and combines their trees (`PartitionDigest.combine`).
///
/// The merge is `DurableRecord.merged`, the same as `MemoryReplicaStore`'s, and the result is
/// put in the keyspace as it is (`Keyspace.put`), so the two stores hold the same records after
/// the same merges (`KeyspaceReplicaStoreTests`, and the cluster simulator run on this store) —
/// when nothing else changes the keyspace. Once commands run on the same keyspace (the server),
/// they change records too; every namespace then keeps dead states (checked at `init`), so a
/// delete is a record like any other.
public struct KeyspaceReplicaStore: ReplicaStore {
    public private(set) var keyspace: Keyspace
    /// The namespace a key belongs to (the node's namespace table decides; the record does not
    /// carry it).
    private let namespaceOf: @Sendable ([UInt8]) -> Int
    /// The time that decides whether a merged record is live or expired (Unix ms).
    private let nowUnixMs: @Sendable () -> Int64

    /// `keyspace` must keep the trees of the cluster's partition count and a dead state for
    /// every removed key, in every namespace (a replica that forgot a delete would take the
    /// older value back from its peers).
    public init(keyspace: Keyspace, namespaceOf: @escaping @Sendable ([UInt8]) -> Int, nowUnixMs: @escaping @Sendable () -> Int64) {
        precondition(keyspace.tracksPartitions, "a replica store's keyspace keeps partition trees")
        precondition(keyspace.keepsDeadStatesInEveryNamespace, "a replica store's keyspace keeps dead states in every namespace")
        self.keyspace = keyspace
        self.keyspace.settlePartitions()
        self.namespaceOf = namespaceOf
        self.nowUnixMs = nowUnixMs
    }

    /// A store of one replicated namespace whose clock stands at the epoch (nothing expires):
    /// what the simulator runs on.
    public init(partitionCount: Int) {
        self.init(
            keyspace: Keyspace(evictableNamespaces: [false], replicatedNamespaces: [true], partitionCount: partitionCount),
            namespaceOf: { _ in 0 }, nowUnixMs: { 0 })
    }

    /// The partition the keyspace files `key` under.
    private func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { Partitioner(partitionCount: keyspace.trackedPartitionCount!).partition(of: $0) }
    }

    public func state(of key: [UInt8], partition: Int) -> ReplicaState? {
        // As the memory store answers: nothing of a key asked for under another partition.
        guard partition == self.partition(of: key) else { return nil }
        return keyspace.record(of: key)
    }

    @discardableResult
    public mutating func merge(key: [UInt8], state: ReplicaState, partition: Int) -> Bool {
        // The core and the keyspace must number partitions alike (the same partition count),
        // or trees would be kept under partitions anti-entropy never compares.
        precondition(partition == self.partition(of: key), "a key merged under a partition it does not belong to")
        let current = keyspace.record(of: key)
        let merged = current.map { $0.merged(with: state) } ?? state
        guard merged != current else { return false }
        keyspace.put(key: key, record: merged, namespaceIndex: namespaceOf(key), nowUnixMs: nowUnixMs())
        keyspace.settlePartitions()
        return true
    }

    public mutating func drop(partition: Int) {
        _ = keyspace.forgetPartition(partition)
    }

    public func digest(of partition: Int) -> PartitionDigest {
        keyspace.partitionDigest(partition)
    }

    public func keys(of partition: Int) -> [[UInt8]] {
        Array(keyspace.partitionKeys(partition))
    }

    public var heldPartitions: [Int] { keyspace.heldPartitions }

    /// Two stores are equal when they hold the same records (their trees follow).
    public static func == (lhs: KeyspaceReplicaStore, rhs: KeyspaceReplicaStore) -> Bool {
        guard lhs.heldPartitions == rhs.heldPartitions else { return false }
        for partition in lhs.heldPartitions {
            let keys = lhs.keyspace.partitionKeys(partition)
            guard keys == rhs.keyspace.partitionKeys(partition) else { return false }
            for key in keys where lhs.keyspace.record(of: key) != rhs.keyspace.record(of: key) { return false }
        }
        return true
    }
}
