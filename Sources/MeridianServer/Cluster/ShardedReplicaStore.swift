import MeridianCluster
import MeridianCore

/// The node's replicas kept in the database's shards (docs/CLUSTER.md, "The server wiring"):
/// the records commands run on are the records the cluster core merges, digests and streams.
///
/// A partition's keys spread over every shard (a key's shard is its slot modulo 64, its
/// partition a range of slots), so a partition's tree is the XOR of the shards' trees
/// (`PartitionDigest.combine(_:)`) and its keys the union of theirs. Each question takes one
/// shard's lock at a time — never two, so it cannot deadlock with a multi-key command — and
/// settles that shard's trees first.
///
/// A merge is `DurableRecord.merged`, as in the other stores, put in the key's shard exactly as
/// it is (`Keyspace.put`) and handed on like a change from a peer: durable namespaces queue the
/// record for the disk, and nothing is shipped to other data centers (the node that executed a
/// command ships it). Dropping a partition forgets its keys in memory and queues their removal
/// from the disk.
///
/// What the store relies on, for the shell to ensure: every key of a durable namespace is in
/// memory (the trees cover memory only — a node answers anti-entropy once its warm-up
/// finished, and a data center of several nodes does not evict); and records of `write-through`
/// namespaces reach the disk before the merge is acknowledged (the storage engine's durable
/// sequence is past what the merge queued).
public struct ShardedReplicaStore: ReplicaStore {
    public let database: Database
    private let partitioner: Partitioner
    /// The time that decides whether a merged record is live or expired (Unix ms).
    private let nowUnixMs: @Sendable () -> Int64

    /// `database` must have been made for a data center of several nodes
    /// (`Database.clusterPartitionCount`), with the placement's partition count.
    public init(database: Database, nowUnixMs: @escaping @Sendable () -> Int64 = { SystemClock.nowUnixMs() }) {
        guard let partitionCount = database.clusterPartitionCount else {
            preconditionFailure("a replica store's database keeps partition trees (clusterPartitionCount)")
        }
        self.database = database
        self.partitioner = Partitioner(partitionCount: partitionCount)
        self.nowUnixMs = nowUnixMs
    }

    private func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { partitioner.partition(of: $0) }
    }

    public func state(of key: [UInt8], partition: Int) -> ReplicaState? {
        // As the memory store answers: nothing of a key asked for under another partition.
        guard partition == self.partition(of: key) else { return nil }
        let shard = database.shards[database.shardIndex(ofBytes: key)]
        shard.lock.lock()
        defer { shard.lock.unlock() }
        return shard.keyspace.record(of: key)
    }

    @discardableResult
    public mutating func merge(key: [UInt8], state: ReplicaState, partition: Int) -> Bool {
        precondition(partition == self.partition(of: key), "a key merged under a partition it does not belong to")
        return database.mergeReplicaState(key: key, record: state, nowUnixMs: nowUnixMs())
    }

    public mutating func drop(partition: Int) {
        database.forgetPartition(partition)
    }

    public func digest(of partition: Int) -> PartitionDigest {
        var tree = PartitionDigest()
        forEachSettledShard { keyspace in tree.combine(keyspace.partitionDigest(partition)) }
        return tree
    }

    public func keys(of partition: Int) -> [[UInt8]] {
        var keys: [[UInt8]] = []
        forEachSettledShard { keyspace in keys.append(contentsOf: keyspace.partitionKeys(partition)) }
        return keys
    }

    public var heldPartitions: [Int] {
        var held = Set<Int>()
        forEachSettledShard { keyspace in held.formUnion(keyspace.heldPartitions) }
        return held.sorted()
    }

    /// Runs `body` on every shard's keyspace in turn, its lock held and its trees settled.
    private func forEachSettledShard(_ body: (Keyspace) -> Void) {
        for shard in database.shards {
            shard.lock.lock()
            shard.keyspace.settlePartitions()
            body(shard.keyspace)
            shard.lock.unlock()
        }
    }

    /// Two stores are equal when they hold the same records (their trees follow).
    public static func == (lhs: ShardedReplicaStore, rhs: ShardedReplicaStore) -> Bool {
        let held = lhs.heldPartitions
        guard held == rhs.heldPartitions else { return false }
        for partition in held {
            let keys = lhs.keys(of: partition)
            guard Set(keys) == Set(rhs.keys(of: partition)) else { return false }
            for key in keys where lhs.state(of: key, partition: partition) != rhs.state(of: key, partition: partition) { return false }
        }
        return true
    }
}

extension Database {
    /// Merges a replica's record of `key` (from another node of this data center) into the
    /// key's state and puts the result in its shard exactly (`Keyspace.put`); the change goes to
    /// the disk as a peer's does, and is not shipped to other data centers. Returns whether the
    /// key's state changed.
    func mergeReplicaState(key: [UInt8], record: DurableRecord, nowUnixMs: Int64) -> Bool {
        // The clock that stamps this node's commands moves past what it merges: a primary that
        // takes over a partition stamps its writes (and deletes) above the records it holds,
        // whatever the other nodes' clocks said.
        observe(max(record.valueStamp.timestamp, record.expiryStamp.timestamp))
        let namespace = key.withUnsafeBytes { namespaces.index(of: $0) }
        let shard = shards[shardIndex(ofBytes: key)]
        shard.lock.lock()
        defer { shard.lock.unlock() }
        let current = shard.keyspace.record(of: key)
        let merged = current.map { $0.merged(with: record) } ?? record
        guard merged != current else { return false }
        shard.keyspace.put(key: key, record: merged, namespaceIndex: namespace, nowUnixMs: nowUnixMs)
        if shard.keyspace.hasKeyChanges { drainKeyChanges(of: shard, nowUnixMs: nowUnixMs, fromPeer: true) }
        shard.publishUsedBytes()
        return true
    }

    /// Forgets every key of `partition` this node holds, live or dead, in memory and on disk
    /// (the node no longer owns it: no delete happened, nothing is logged or shipped).
    func forgetPartition(_ partition: Int) {
        let nowNs = SystemClock.monotonicNs()
        for shard in shards {
            shard.lock.lock()
            let keys = shard.keyspace.forgetPartition(partition)
            if let storage {
                for key in keys where durableUrgency[key.withUnsafeBytes { namespaces.index(of: $0) }] != nil {
                    storage.enqueue(key: key, state: .absent, urgency: .lazy, nowNs: nowNs)
                }
            }
            shard.publishUsedBytes()
            shard.lock.unlock()
        }
    }
}
