// Proves the hint store's contract (docs/CLUSTER.md, "Hinted handoff"): hints come back per
// target in arrival order, a newer hint for the same target and key replaces (merges) the older,
// the byte bound drops the oldest hints first and counts them, and every operation stays cheap
// with many thousands of hints.
import MeridianCluster
import MeridianCore
import Testing

@Suite struct HintStoreTests {
    static func state(_ value: String, _ time: UInt64) -> ReplicaState {
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: time, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))
        return ReplicaState.written(Array(value.utf8), stamp: stamp)
    }

    @Test func perTargetOrderReplacementAndTheBound() {
        var store = HintStore(bytesMax: 10_000)
        store.add(target: 1, partition: 0, key: [1], state: Self.state("a", 1))
        store.add(target: 2, partition: 0, key: [2], state: Self.state("b", 2))
        store.add(target: 1, partition: 0, key: [3], state: Self.state("c", 3))
        store.add(target: 1, partition: 0, key: [1], state: Self.state("d", 4))
        #expect(store.targets == [1, 2] && store.count == 3)
        #expect(store.pending(for: 1, limit: 10).map(\.key) == [[3], [1]])
        #expect(store.pending(for: 1, limit: 10).last?.state.value == Array("d".utf8))
        let first = store.pending(for: 1, limit: 1)[0]
        #expect(store.remove(id: first.id) && !store.remove(id: first.id))
        #expect(store.pending(for: 1, limit: 10).map(\.key) == [[1]])
        // Over the bound, the oldest hints go first, whatever their target.
        var bounded = HintStore(bytesMax: 3 * 65)
        for index in 0..<5 { bounded.add(target: index % 2, partition: 0, key: [UInt8(index)], state: Self.state("", UInt64(index))) }
        #expect(bounded.hints.map(\.key) == [[2], [3], [4]] && bounded.dropped == 2 && bounded.bytes == 3 * 65)
    }

    /// What `add` reports (the hint stored, the ids it removed) is enough for a store on disk
    /// to follow: replaying it with `restore` and `remove` into an empty store, as a restart
    /// does, gives the same hints — through replacements, the bound's evictions and a hint
    /// too large to keep — and a hint added after the restart gets an id above every hint held
    /// (ids of hints already gone may come again: only held hints' ids must stay unique).
    @Test func whatAddReportsIsEnoughToRebuildTheStore() {
        var memory = HintStore(bytesMax: 5 * 66)
        var disk = HintStore(bytesMax: 5 * 66)
        var random = SplitMix64(seed: 3)
        for index in 0..<400 {
            let big = index % 97 == 0
            let (stored, removed) = memory.add(
                target: Int.random(in: 0..<3, using: &random), partition: 0, key: [UInt8(Int.random(in: 0..<12, using: &random))],
                state: Self.state(big ? String(repeating: "x", count: 400) : "v", UInt64(index)))
            for id in removed { disk.remove(id: id) }
            if let stored { disk.restore(stored) }
            if index % 5 == 0, let some = memory.hints.first {
                memory.remove(id: some.id)
                disk.remove(id: some.id)
            }
            #expect(disk.hints == memory.hints, "after add \(index)")
        }
        #expect(memory.dropped > 0)
        var restarted = HintStore(bytesMax: 5 * 66)
        for hint in disk.hints { restarted.restore(hint) }
        let (next, _) = restarted.add(target: 0, partition: 0, key: [99], state: Self.state("n", 1_000))
        #expect(next.map { id in memory.hints.allSatisfy { $0.id < id.id } } == true)
    }

    @Test func manyHintsStayCheap() {
        var store = HintStore(bytesMax: 1 << 30)
        let count = 50_000
        for index in 0..<count {
            store.add(target: index % 3, partition: 0, key: Array("key:\(index)".utf8), state: Self.state("v", UInt64(index)))
        }
        var replayed = 0
        while !store.isEmpty {
            for target in store.targets {
                for hint in store.pending(for: target, limit: 64) where store.remove(id: hint.id) { replayed += 1 }
            }
        }
        #expect(replayed == count && store.bytes == 0 && store.targets.isEmpty)
    }

    /// A hot key replaced over and over behind an old hint that stays (its target down for
    /// hours) does not grow the queues; one hint larger than the whole bound is dropped alone.
    @Test func bookkeepingStaysProportionalAndAHugeHintDropsAlone() {
        var store = HintStore(bytesMax: 1 << 20)
        store.add(target: 1, partition: 0, key: Array("old".utf8), state: Self.state("o", 1))
        for index in 0..<10_000 {
            store.add(target: 1, partition: 0, key: Array("hot".utf8), state: Self.state("v", UInt64(2 + index)))
        }
        #expect(store.count == 2 && store.queuedIDs < 200, "\(store.queuedIDs) ids queued for 2 hints")
        var small = HintStore(bytesMax: 1_000)
        for index in 0..<5 { small.add(target: 1, partition: 0, key: [UInt8(index)], state: Self.state("v", UInt64(index))) }
        small.add(target: 2, partition: 0, key: [9], state: Self.state(String(repeating: "x", count: 2_000), 9))
        #expect(small.count == 5 && small.dropped == 1 && small.targets == [1])
    }
}
