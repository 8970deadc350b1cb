// The keyspace as a replica store (docs/CLUSTER.md, "The server wiring") holds exactly what the
// memory store holds after the same merges — records with values, deletes, expiry, counters,
// dots and equal-stamp ties, in random orders and with duplicates — and answers every question
// the cluster core asks (state, tree, entries by leaf, entries in key order, held partitions)
// the same way, before and after a partition is dropped.
import MeridianCluster
import MeridianCore
import Testing

@Suite struct KeyspaceReplicaStoreTests {
    static let partitions = 4
    static let origins = [ReplicaID(datacenter: 0, node: 0), ReplicaID(datacenter: 0, node: 1), ReplicaID(datacenter: 1, node: 0)]

    static func randomRecord(using random: inout SplitMix64) -> DurableRecord {
        let origin = origins[Int.random(in: 0..<origins.count, using: &random)]
        // Few distinct times, so equal stamps (ties) happen often.
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: UInt64.random(in: 1...6, using: &random), logical: 0), origin: origin)
        var record: DurableRecord
        switch Int.random(in: 0..<5, using: &random) {
        case 0:
            record = .tombstone(stamp: stamp)
        case 1:
            var counter = PNCounter()
            counter.reset(to: Int64.random(in: 0...3, using: &random), stamp: stamp)
            counter.add(Int64.random(in: -4...4, using: &random), origin: origin)
            record = DurableRecord(
                value: PNCounter.decimalBytes(counter.value), valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp,
                encoding: .byContent, counter: counter)
        default:
            let expiry: Int64 = Bool.random(using: &random) ? Entry.noExpiry : Int64.random(in: 1...3, using: &random) * 1_000_000
            record = DurableRecord(
                value: Array("v\(Int.random(in: 0...3, using: &random))".utf8), valueStamp: stamp, expiryUnixMs: expiry,
                expiryStamp: stamp, encoding: Bool.random(using: &random) ? .byContent : .raw)
        }
        if Bool.random(using: &random) {
            let dot = Dot(origin: origin, sequence: UInt64.random(in: 1...9, using: &random))
            record.dot = dot
            record.expiryDot = dot
        }
        return record
    }

    static func sameAnswers(_ memory: MemoryReplicaStore, _ keyspace: KeyspaceReplicaStore, keys: [[UInt8]]) -> String? {
        if memory.heldPartitions != keyspace.heldPartitions { return "held partitions \(memory.heldPartitions) vs \(keyspace.heldPartitions)" }
        for partition in 0..<partitions {
            if memory.digest(of: partition) != keyspace.digest(of: partition) { return "the tree of partition \(partition)" }
            let allLeaves = Array(0..<PartitionDigest.leafCount)
            if memory.entriesByLeaf(of: partition, leaves: allLeaves) != keyspace.entriesByLeaf(of: partition, leaves: allLeaves) {
                return "the leaves of partition \(partition)"
            }
            var after: [UInt8]?
            while true {
                let chunk = memory.entries(of: partition, after: after, limit: 3, bytesMax: 1 << 20)
                if chunk != keyspace.entries(of: partition, after: after, limit: 3, bytesMax: 1 << 20) {
                    return "the entries of partition \(partition) after \(after.map { String(decoding: $0, as: UTF8.self) } ?? "the start")"
                }
                guard let last = chunk.last else { break }
                after = last.key
            }
        }
        for key in keys {
            let partition = key.withUnsafeBytes { Partitioner(partitionCount: partitions).partition(of: $0) }
            if memory.state(of: key, partition: partition) != keyspace.state(of: key, partition: partition) {
                return "the state of \(String(decoding: key, as: UTF8.self))"
            }
            let elsewhere = (partition + 1) % partitions
            if keyspace.state(of: key, partition: elsewhere) != memory.state(of: key, partition: elsewhere) {
                return "the state of \(String(decoding: key, as: UTF8.self)) asked under partition \(elsewhere)"
            }
        }
        return nil
    }

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
                let record = Self.randomRecord(using: &random)
                let changed = memory.merge(key: key, state: record, partition: partition)
                #expect(store.merge(key: key, state: record, partition: partition) == changed, "seed \(seed) step \(step)")
            }
            if let difference = Self.sameAnswers(memory, store, keys: keys) {
                Issue.record("seed \(seed) step \(step): \(difference) differs")
                return
            }
        }
        #expect(store.keyspace.count + store.keyspace.tombstones.count > 0)
    }
}
