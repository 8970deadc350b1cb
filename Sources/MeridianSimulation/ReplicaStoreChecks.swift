import MeridianCluster
import MeridianCore

/// What the tests of replica stores share (docs/CLUSTER.md, "The server wiring"): random
/// records that exercise every rule of `DurableRecord.merged`, and the comparison of two stores
/// by every question the cluster core asks them.
public enum ReplicaStoreChecks {
    public static let origins = [ReplicaID(datacenter: 0, node: 0), ReplicaID(datacenter: 0, node: 1), ReplicaID(datacenter: 1, node: 0)]

    /// A value, a delete or a counter, with or without expiry (at 1,000, 2,000 or 3,000 s) and
    /// dots, from one of `origins`; few distinct times, so equal stamps (ties) happen often.
    public static func randomRecord(using random: inout SplitMix64) -> DurableRecord {
        let origin = origins[Int.random(in: 0..<origins.count, using: &random)]
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

    /// The first question `a` and `b` answer differently (held partitions, each partition's
    /// tree, entries by leaf and in key order, every key's state — also asked under a partition
    /// it is not in), or nil when they answer every one alike.
    public static func firstDifference<A: ReplicaStore, B: ReplicaStore>(
        _ a: A, _ b: B, keys: [[UInt8]], partitionCount: Int
    ) -> String? {
        if a.heldPartitions != b.heldPartitions { return "held partitions \(a.heldPartitions) vs \(b.heldPartitions)" }
        let allLeaves = Array(0..<PartitionDigest.leafCount)
        for partition in 0..<partitionCount {
            if a.digest(of: partition) != b.digest(of: partition) { return "the tree of partition \(partition)" }
            if a.entriesByLeaf(of: partition, leaves: allLeaves) != b.entriesByLeaf(of: partition, leaves: allLeaves) {
                return "the leaves of partition \(partition)"
            }
            var after: [UInt8]?
            while true {
                let chunk = a.entries(of: partition, after: after, limit: 3, bytesMax: 1 << 20)
                if chunk != b.entries(of: partition, after: after, limit: 3, bytesMax: 1 << 20) {
                    return "the entries of partition \(partition) after \(after.map { String(decoding: $0, as: UTF8.self) } ?? "the start")"
                }
                guard let last = chunk.last else { break }
                after = last.key
            }
        }
        let partitioner = Partitioner(partitionCount: partitionCount)
        for key in keys {
            let partition = key.withUnsafeBytes { partitioner.partition(of: $0) }
            if a.state(of: key, partition: partition) != b.state(of: key, partition: partition) {
                return "the state of \(String(decoding: key, as: UTF8.self))"
            }
            let elsewhere = (partition + 1) % partitionCount
            if a.state(of: key, partition: elsewhere) != b.state(of: key, partition: elsewhere) {
                return "the state of \(String(decoding: key, as: UTF8.self)) asked under partition \(elsewhere)"
            }
        }
        return nil
    }
}
