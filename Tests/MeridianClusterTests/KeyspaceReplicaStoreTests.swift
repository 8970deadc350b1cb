// The keyspace as a replica store (docs/CLUSTER.md, "The server wiring") holds exactly what the
// memory store holds after the same merges — records with values, deletes, expiry, counters,
// dots and equal-stamp ties, in random orders and with duplicates — and answers every question
// the cluster core asks (state, tree, entries by leaf, entries in key order, held partitions)
// the same way, before and after a partition is dropped.
import MeridianCluster
import MeridianCore
import MeridianSimulation
import Testing

@Suite struct KeyspaceReplicaStoreTests {
    static let partitions = 4

    @Test(arguments: 1...10 as ClosedRange<UInt64>)
    func holdsWhatTheMemoryStoreHolds(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var memory = MemoryReplicaStore()
        // Its clock at 1,500,000 ms: some merged records are live, some expired (dead states).
        let keyspace = Keyspace(evictableNamespaces: [false], replicatedNamespaces: [true], partitionCount: Self.partitions)
        var store = KeyspaceReplicaStore(keyspace: keyspace, namespaceOf: { _ in 0 }, nowUnixMs: { 1_500_000 })
        // More keys than the keyspace lets wait unsettled (its drop settles them by itself).
        let keys = (0..<90).map { Array("k\($0)".utf8) }
        let partitioner = Partitioner(partitionCount: Self.partitions)
        for step in 0..<600 {
            let key = keys[Int.random(in: 0..<keys.count, using: &random)]
            let partition = key.withUnsafeBytes { partitioner.partition(of: $0) }
            if step % 200 == 199 {
                memory.drop(partition: partition)
                store.drop(partition: partition)
            } else {
                let record = ReplicaStoreChecks.randomRecord(using: &random)
                let changed = memory.merge(key: key, state: record, partition: partition)
                #expect(store.merge(key: key, state: record, partition: partition) == changed, "seed \(seed) step \(step)")
            }
            if let difference = ReplicaStoreChecks.firstDifference(memory, store, keys: keys, partitionCount: Self.partitions) {
                Issue.record("seed \(seed) step \(step): \(difference) differs")
                return
            }
        }
        #expect(store.keyspace.count + store.keyspace.tombstones.count > 0)
    }
}
