// A keyspace that tracks partitions (docs/CLUSTER.md, "The server wiring") keeps each
// partition's Merkle tree and key set equal to what a replica store holding the same records
// would compute from scratch, through every kind of change the keyspace makes: commands'
// writes, deletes and their tombstones, expiry, eviction, counters, dots, merges from other
// data centers, dead states restored and collected, and a flush.
import MeridianCore
import Testing

@Suite struct KeyspacePartitionTrackingTests {
    static let partitions = 8
    static let here = ReplicaID(datacenter: 0, node: 1)
    static let there = ReplicaID(datacenter: 1, node: 0)

    static func stamp(_ ms: UInt64, _ origin: ReplicaID = here) -> LWWStamp {
        LWWStamp(timestamp: HLCTimestamp(physicalMs: ms, logical: 0), origin: origin)
    }

    /// Every key's record (a live entry hides a dead state of the same key), its tree per
    /// partition and its keys per partition, computed from scratch.
    static func fromScratch(_ keyspace: Keyspace) -> (digests: [Int: PartitionDigest], keys: [Int: Set<[UInt8]>]) {
        var records: [[UInt8]: DurableRecord] = [:]
        var live: Set<[UInt8]> = []
        keyspace.forEachReplicatedState { key, namespace, record, _ in
            if namespace != nil {
                live.insert(key)
                records[key] = record
            } else if !live.contains(key) {
                records[key] = record
            }
        }
        let partitioner = Partitioner(partitionCount: partitions)
        var digests: [Int: PartitionDigest] = [:]
        var keys: [Int: Set<[UInt8]>] = [:]
        for (key, record) in records {
            let partition = key.withUnsafeBytes { partitioner.partition(of: $0) }
            digests[partition, default: PartitionDigest()].toggle(
                PartitionDigest.entryDigest(key: key, state: record), leaf: PartitionDigest.leaf(of: key))
            keys[partition, default: []].insert(key)
        }
        return (digests, keys)
    }

    /// Whether the keyspace's settled trees and key sets are the ones computed from scratch;
    /// the first difference is recorded, and the run stops there.
    static func tracksExactly(_ keyspace: inout Keyspace, step: Int, seed: UInt64) -> Bool {
        keyspace.settlePartitions()
        let expected = fromScratch(keyspace)
        guard keyspace.heldPartitions == expected.keys.keys.sorted() else {
            Issue.record("seed \(seed) step \(step): held partitions \(keyspace.heldPartitions), expected \(expected.keys.keys.sorted())")
            return false
        }
        for partition in 0..<partitions {
            guard keyspace.partitionKeys(partition) == (expected.keys[partition] ?? []) else {
                Issue.record("seed \(seed) step \(step): the keys of partition \(partition) differ")
                return false
            }
            guard keyspace.partitionDigest(partition) == (expected.digests[partition] ?? PartitionDigest()) else {
                Issue.record("seed \(seed) step \(step): the tree of partition \(partition) differs")
                return false
            }
        }
        return true
    }

    @Test(arguments: 1...20 as ClosedRange<UInt64>)
    func treesFollowEveryKindOfChange(seed: UInt64) {
        // Namespace 0 replicates (deletes leave dead states), namespace 1 does not; both evict.
        var keyspace = Keyspace(
            evictableNamespaces: [true, true], loggedNamespaces: [true, false], replicatedNamespaces: [true, false],
            partitionCount: Self.partitions)
        var random = SplitMix64(seed: seed)
        var clock: UInt64 = 1_000
        // More keys than `PartitionTracking.pendingKeysMax`, and checks far enough apart, so that
        // the keyspace also settles by itself between checks.
        let keys = (0..<120).map { Array("key:\($0)".utf8) } + [Array("{tag}a".utf8), Array("{tag}b".utf8)]
        for step in 0..<1_500 {
            clock += 1
            let key = keys[Int.random(in: 0..<keys.count, using: &random)]
            let namespace = key.last! % 3 == 0 ? 1 : 0
            let slot = keyspace.slot(ofBytes: key)
            let value = Array("v\(step)".utf8)
            switch (Int.random(in: 0..<16, using: &random), slot) {
            case (0...2, nil):
                let entry = Entry(
                    value: value, valueStamp: Self.stamp(clock), expiryUnixMs: Bool.random(using: &random) ? 5_000 : Entry.noExpiry,
                    expiryStamp: Self.stamp(clock), lastAccessUnixMs: 0, namespaceIndex: namespace)
                key.withUnsafeBytes { _ = keyspace.insert(bytes: $0, entry: entry) }
            case (0, let slot?):
                keyspace.setValue(at: slot, value, stamp: Self.stamp(clock))
            case (1, let slot?):
                keyspace.modifyValue(at: slot, stamp: Self.stamp(clock)) { $0 += value }
            case (2, let slot?):
                keyspace.setExpiry(at: slot, unixMs: Bool.random(using: &random) ? 9_000 : Entry.noExpiry, stamp: Self.stamp(clock))
            case (3, let slot?):
                // DEL as a command runs it: the removal, then the delete's own tombstone.
                keyspace.remove(slot: slot)
                if namespace == 0 { keyspace.recordTombstone(key: key, stamp: Self.stamp(clock), dot: Dot(origin: Self.here, sequence: clock)) }
            case (4, let slot?):
                keyspace.expire(slot: slot)
            case (5, let slot?):
                keyspace.evict(slot: slot)
            case (6, let slot?):
                var counter = keyspace.entry(at: slot).counter ?? PNCounter()
                if counter.contributions.isEmpty { counter.reset(to: 10, stamp: Self.stamp(clock)) }
                counter.add(Int64.random(in: -5...5, using: &random), origin: Self.here)
                keyspace.setCounter(at: slot, counter)
            case (7, let slot?):
                let dot = Dot(origin: Self.here, sequence: clock)
                keyspace.setDots(at: slot, value: dot, expiry: Bool.random(using: &random) ? dot : nil)
            case (8, _), (9, _):
                // Another data center's state: a value or a delete, older or newer than ours.
                let at = clock - UInt64.random(in: 0...40, using: &random)
                let record = Bool.random(using: &random)
                    ? DurableRecord(value: value, valueStamp: Self.stamp(at, Self.there), expiryUnixMs: Entry.noExpiry,
                                    expiryStamp: Self.stamp(at, Self.there), encoding: .byContent)
                    : DurableRecord.tombstone(stamp: Self.stamp(at, Self.there))
                _ = keyspace.mergeRemote(
                    key: key, record: record, dot: Dot(origin: Self.there, sequence: at), previousDot: nil,
                    namespaceIndex: namespace, nowUnixMs: Int64(clock))
            case (10, nil):
                keyspace.restoreDeadState(key: key, record: .tombstone(stamp: Self.stamp(clock - 500)))
            case (11, _):
                _ = keyspace.dropTombstones { _ in Bool.random(using: &random) }
            case (12, _):
                // Lazy and active expiry at a time past every TTL the test sets.
                if step % 7 == 0 {
                    _ = keyspace.expireSample(nowUnixMs: 10_000, samples: 5, using: &random)
                } else {
                    _ = keyspace.liveSlot(of: Key(key), nowUnixMs: 10_000)
                }
            case (13, _) where step % 97 == 0:
                keyspace.removeAll()
            case (14, _):
                // A replica store's merge result, put as it is: live, dead, or live but expired.
                let at = clock - UInt64.random(in: 0...40, using: &random)
                let record = Bool.random(using: &random)
                    ? DurableRecord(value: value, valueStamp: Self.stamp(at, Self.there),
                                    expiryUnixMs: Bool.random(using: &random) ? Entry.noExpiry : Int64(clock) - 1,
                                    expiryStamp: Self.stamp(at, Self.there), encoding: .byContent)
                    : DurableRecord.tombstone(stamp: Self.stamp(at, Self.there))
                keyspace.put(key: key, record: record, namespaceIndex: namespace, nowUnixMs: Int64(clock))
            case (15, _) where step % 40 == 0:
                _ = keyspace.forgetPartition(Int.random(in: 0..<Self.partitions, using: &random))
            default:
                if let slot { keyspace.touch(slot: slot, nowUnixMs: Int64(clock)) }
            }
            // Settle sometimes after one change, sometimes after several (one locked section).
            if Int.random(in: 0..<100, using: &random) == 0, !Self.tracksExactly(&keyspace, step: step, seed: seed) { return }
        }
        #expect(Self.tracksExactly(&keyspace, step: 1_500, seed: seed))
        _ = keyspace.takeKeyChanges()
    }

    @Test func theKeyspaceSettlesByItselfOnceManyKeysWait() {
        // Readers settle first; writers never need to: past the bound the keyspace settles.
        var keyspace = Keyspace(evictableNamespaces: [false], replicatedNamespaces: [true], partitionCount: Self.partitions)
        let count = PartitionTracking.pendingKeysMax * 2 + 100
        for round in 0..<3 {
            for index in 0..<count {
                let key = Array("key:\(index)".utf8)
                let stamp = Self.stamp(UInt64(round * count + index + 1))
                if let slot = keyspace.slot(ofBytes: key) {
                    if round == 2 && index % 3 == 0 {
                        keyspace.remove(slot: slot)
                        keyspace.recordTombstone(key: key, stamp: stamp, dot: nil)
                    } else {
                        keyspace.setValue(at: slot, Array("v\(round)".utf8), stamp: stamp)
                    }
                } else {
                    let entry = Entry(value: [1], valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp,
                                      lastAccessUnixMs: 0, namespaceIndex: 0)
                    key.withUnsafeBytes { _ = keyspace.insert(bytes: $0, entry: entry) }
                }
                #expect(keyspace.pendingPartitionKeys <= PartitionTracking.pendingKeysMax)
            }
        }
        #expect(Self.tracksExactly(&keyspace, step: 0, seed: 0))
    }

    @Test func aKeyspaceWithoutTrackingKeepsNoTrees() {
        var keyspace = Keyspace(evictableNamespaces: [false], replicatedNamespaces: [true])
        let entry = Entry(value: [1], valueStamp: Self.stamp(1), expiryUnixMs: Entry.noExpiry, expiryStamp: Self.stamp(1),
                          lastAccessUnixMs: 0, namespaceIndex: 0)
        Array("k".utf8).withUnsafeBytes { _ = keyspace.insert(bytes: $0, entry: entry) }
        keyspace.settlePartitions()
        #expect(!keyspace.tracksPartitions)
        #expect(keyspace.heldPartitions.isEmpty)
    }

    @Test func shardsCombineIntoOnePartitionTree() {
        // Two keyspaces (two shards of a node) holding disjoint keys of one partition: the XOR
        // of their trees is the tree of one keyspace holding all of them.
        var whole = Keyspace(evictableNamespaces: [false], partitionCount: 1)
        var first = Keyspace(evictableNamespaces: [false], partitionCount: 1)
        var second = Keyspace(evictableNamespaces: [false], partitionCount: 1)
        for index in 0..<50 {
            let entry = Entry(value: [UInt8(index)], valueStamp: Self.stamp(UInt64(index)), expiryUnixMs: Entry.noExpiry,
                              expiryStamp: Self.stamp(UInt64(index)), lastAccessUnixMs: 0, namespaceIndex: 0)
            let key = Array("k\(index)".utf8)
            key.withUnsafeBytes { _ = whole.insert(bytes: $0, entry: entry) }
            if index % 2 == 0 {
                key.withUnsafeBytes { _ = first.insert(bytes: $0, entry: entry) }
            } else {
                key.withUnsafeBytes { _ = second.insert(bytes: $0, entry: entry) }
            }
        }
        whole.settlePartitions()
        first.settlePartitions()
        second.settlePartitions()
        var combined = first.partitionDigest(0)
        combined.combine(second.partitionDigest(0))
        #expect(combined == whole.partitionDigest(0))
        #expect(combined != first.partitionDigest(0))
    }
}

/// What `Keyspace.put` and `forgetPartition` leave for the disk in a durable namespace: a put
/// is logged as a command's change would be (a live record written, a dead one deleted, so the
/// drain writes the key's state now), and forgetting a partition logs nothing — the caller
/// forgets the keys it returns on disk itself.
@Suite struct KeyspacePutLoggingTests {
    static let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 5, logical: 0), origin: ReplicaID(datacenter: 0, node: 1))

    @Test func putIsLoggedAndForgettingIsNot() {
        var keyspace = Keyspace(
            evictableNamespaces: [false], loggedNamespaces: [true], replicatedNamespaces: [true], partitionCount: 1)
        let key = Array("k".utf8)
        let live = DurableRecord(value: [1], valueStamp: Self.stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: Self.stamp, encoding: .byContent)
        keyspace.put(key: key, record: live, namespaceIndex: 0, nowUnixMs: 0)
        #expect(keyspace.takeKeyChanges().map(\.kind) == [.written])
        // A live key overwritten: logged again, and its state is the record given.
        var newer = live
        newer.value = [2]
        newer.valueStamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 6, logical: 0), origin: Self.stamp.origin)
        keyspace.put(key: key, record: newer, namespaceIndex: 0, nowUnixMs: 0)
        #expect(Set(keyspace.takeKeyChanges().map(\.kind)) == [.written])
        #expect(keyspace.record(of: key) == newer)
        // A live key put dead: a delete for the disk (the drain writes its dead state).
        let dead = DurableRecord.tombstone(stamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 7, logical: 0), origin: Self.stamp.origin))
        keyspace.put(key: key, record: dead, namespaceIndex: 0, nowUnixMs: 0)
        #expect(keyspace.takeKeyChanges().map(\.kind) == [.deleted])
        #expect(keyspace.record(of: key) == dead)
        // A key with no state put dead: a delete too.
        keyspace.put(key: Array("other".utf8), record: dead, namespaceIndex: 0, nowUnixMs: 0)
        #expect(keyspace.takeKeyChanges().map(\.kind) == [.deleted])
        // Forgetting the partition logs nothing and returns both keys.
        let forgotten = keyspace.forgetPartition(0)
        #expect(Set(forgotten) == [key, Array("other".utf8)])
        #expect(keyspace.takeKeyChanges().isEmpty)
        #expect(keyspace.record(of: key) == nil && keyspace.heldPartitions.isEmpty)
    }
}
