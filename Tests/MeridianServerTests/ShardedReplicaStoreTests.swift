// The database's 64 shards as one node's replica store (docs/CLUSTER.md, "The server wiring"):
// after the same random merges and drops it answers every question the cluster core asks as
// the memory store does (a partition's keys are spread over the shards, its tree combined from
// theirs); a merged record reaches the disk in a durable namespace and a dropped partition
// leaves it; and on a data center of several nodes a command's delete is a stamped dead state
// that replicas can merge.
import Logging
import MeridianCluster
import MeridianCore
import MeridianSimulation
import MeridianStorage
import NIOCore
import Testing

@testable import MeridianServer

@Suite struct ShardedReplicaStoreTests {
    static let partitions = 4
    static let origin = ReplicaID(datacenter: 0, node: 0)

    static func makeDatabase(storage: StorageEngine? = nil, clusterPartitionCount: Int? = partitions) -> Database {
        let namespaces = NamespaceTable([
            NamespaceConfig(name: "default", prefix: [], durability: .memory),
            NamespaceConfig(name: "durable", prefix: Array("durable:".utf8), durability: .writeBack, writeBackWindowMs: 60_000),
        ])
        return Database(
            namespaces: namespaces, origin: origin, maxmemoryBytes: 0, eventLoopCount: 1, storage: storage,
            clusterPartitionCount: clusterPartitionCount)
    }

    @Test(arguments: 1...6 as ClosedRange<UInt64>)
    func holdsWhatTheMemoryStoreHolds(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var memory = MemoryReplicaStore()
        // Its clock at 1,500,000 ms: some merged records are live, some expired (dead states).
        var store = ShardedReplicaStore(database: Self.makeDatabase(), nowUnixMs: { 1_500_000 })
        // Enough keys that every partition spreads over many shards, and more per shard than a
        // keyspace lets wait unsettled.
        let keys = (0..<300).map { Array("k\($0)".utf8) } + (0..<20).map { Array("{tag}\($0)".utf8) }
        let partitioner = Partitioner(partitionCount: Self.partitions)
        for step in 0..<1_500 {
            let key = keys[Int.random(in: 0..<keys.count, using: &random)]
            let partition = key.withUnsafeBytes { partitioner.partition(of: $0) }
            if step % 500 == 499 {
                memory.drop(partition: partition)
                store.drop(partition: partition)
            } else {
                let record = ReplicaStoreChecks.randomRecord(using: &random)
                let changed = memory.merge(key: key, state: record, partition: partition)
                #expect(store.merge(key: key, state: record, partition: partition) == changed, "seed \(seed) step \(step)")
            }
            if step % 50 == 49 || step % 500 == 499,
               let difference = ReplicaStoreChecks.firstDifference(memory, store, keys: keys, partitionCount: Self.partitions) {
                Issue.record("seed \(seed) step \(step): \(difference) differs")
                return
            }
        }
        let shardsHolding = store.database.shards.filter { shard in
            shard.lock.withLock { shard.keyspace.count + shard.keyspace.tombstones.count > 0 }
        }.count
        #expect(shardsHolding > Database.shardCount / 2, "a partition's keys spread over the shards")
    }

    @Test func mergedRecordsReachTheDiskAndADroppedPartitionLeavesIt() throws {
        let disk = InMemoryStore()
        let engine = StorageEngine(store: disk, logger: Logger(label: "test")) { reason in Issue.record("storage failed: \(reason)") }
        defer { engine.shutdown() }
        var store = ShardedReplicaStore(database: Self.makeDatabase(storage: engine))
        let partitioner = Partitioner(partitionCount: Self.partitions)
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: UInt64(SystemClock.nowUnixMs()), logical: 0), origin: ReplicaID(datacenter: 0, node: 1))
        let value = DurableRecord(
            value: Array("v".utf8), valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp, encoding: .byContent)
        let durableKey = Array("durable:a".utf8)
        let memoryKey = Array("plain:a".utf8)
        let deletedKey = Array("durable:gone".utf8)
        for key in [durableKey, memoryKey, deletedKey] {
            store.merge(key: key, state: value, partition: key.withUnsafeBytes { partitioner.partition(of: $0) })
        }
        let later = LWWStamp(timestamp: HLCTimestamp(physicalMs: stamp.timestamp.physicalMs + 1, logical: 0), origin: stamp.origin)
        store.merge(key: deletedKey, state: .tombstone(stamp: later), partition: deletedKey.withUnsafeBytes { partitioner.partition(of: $0) })
        DurableDatabaseTests.flush(engine)
        #expect(try disk.read(key: durableKey).map { try DurableRecord(decoding: $0) } == value)
        #expect(try disk.read(key: memoryKey) == nil, "a memory namespace's replica stays off the disk")
        // A replica's delete stays on disk as its dead state, or a restart would let anti-entropy
        // bring the value back.
        #expect(try disk.read(key: deletedKey).map { try DurableRecord(decoding: $0) } == value.merged(with: .tombstone(stamp: later)))

        let partition = durableKey.withUnsafeBytes { partitioner.partition(of: $0) }
        store.drop(partition: partition)
        DurableDatabaseTests.flush(engine)
        #expect(try disk.read(key: durableKey) == nil)
        #expect(store.state(of: durableKey, partition: partition) == nil)
        #expect(!store.heldPartitions.contains(partition))
    }

    @Test func aCommandsDeleteIsAStampedDeadStateOnADataCenterOfSeveralNodes() {
        let database = Self.makeDatabase()
        let store = ShardedReplicaStore(database: database)
        let key = "k1"
        let keyBytes = Array(key.utf8)
        let partition = keyBytes.withUnsafeBytes { Partitioner(partitionCount: Self.partitions).partition(of: $0) }
        DurableDatabaseTests.set(database, key, "v")
        let written = try! #require(store.state(of: keyBytes, partition: partition))
        DurableDatabaseTests.delete(database, key)
        let dead = try! #require(store.state(of: keyBytes, partition: partition), "a removed key keeps a dead state")
        #expect(dead.isTombstone)
        #expect(dead.valueStamp > written.valueStamp, "the delete is stamped, so it wins over the value at every replica")
        #expect(written.merged(with: dead) == dead)
        #expect(store.digest(of: partition) == {
            var tree = PartitionDigest()
            tree.toggle(PartitionDigest.entryDigest(key: keyBytes, state: dead), leaf: PartitionDigest.leaf(of: keyBytes))
            return tree
        }())
    }

    /// Dead states are collected by age (docs/CLUSTER.md, "Collecting dead states"): deletes and
    /// expiries that died before the cutoff go, with their place in the partition's tree; a
    /// younger one stays, and so does a dead counter's record (a later increment is merged
    /// against its contributions at replicas that have not collected it yet).
    @Test func deadStatesAreCollectedByAgeButACountersStays() {
        let database = Self.makeDatabase()
        let store = ShardedReplicaStore(database: database, nowUnixMs: { 2_000_000 })
        func stamp(_ ms: UInt64) -> LWWStamp { LWWStamp(timestamp: HLCTimestamp(physicalMs: ms, logical: 0), origin: Self.origin) }
        let counter = PNCounter(base: 0, resetStamp: stamp(1_000), contributions: [
            PNCounter.Contribution(origin: Self.origin, p: 10, n: 0, observed: 0)])
        var expired = DurableRecord.tombstone(stamp: stamp(1_000))
        expired.value = Array("v".utf8)
        expired.expiryUnixMs = 1_500_000
        expired.expiryStamp = stamp(1_000)
        let records: [(String, DurableRecord)] = [
            ("old", .tombstone(stamp: stamp(1_000))), ("young", .tombstone(stamp: stamp(1_900_000))),
            ("expired", expired), ("counted", .tombstone(stamp: stamp(1_000), counter: counter)),
        ]
        for (key, record) in records { _ = database.mergeReplicaState(key: Array(key.utf8), record: record, nowUnixMs: 2_000_000) }
        #expect(database.deadStates().count == 4)
        #expect(database.collectDeadStates(diedBeforeUnixMs: 1_800_000) == 2)
        for (key, _) in records {
            let partition = Array(key.utf8).withUnsafeBytes { Partitioner(partitionCount: Self.partitions).partition(of: $0) }
            #expect((store.state(of: Array(key.utf8), partition: partition) != nil) == ["young", "counted"].contains(key), "\(key)")
        }
        // The trees follow: each partition's is what its remaining records make.
        for partition in 0..<Self.partitions {
            var tree = PartitionDigest()
            for key in store.keys(of: partition) {
                tree.toggle(PartitionDigest.entryDigest(key: key, state: store.state(of: key, partition: partition)!), leaf: PartitionDigest.leaf(of: key))
            }
            #expect(store.digest(of: partition) == tree)
        }
    }
}
