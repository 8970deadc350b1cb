// The voter's store layout: whatever the replica asked to persist reloads to the same durable
// state (promises, proposed ballots, accepted and chosen entries, a witness's forgetting, a
// learner's snapshot and forgotten chosen entries), and a damaged record is an error.
@testable import MeridianServer
import MeridianCore
import MeridianPaxos
import MeridianStorage
import MeridianWire
import Testing

@Suite struct PaxosStoreTests {
    static func entry(_ n: UInt64) -> StrongEntry {
        StrongEntry(request: RequestID(origin: 1, sequence: n), timeMs: Int64(n), command: StrongCommand(.set(key: Array("k\(n)".utf8), value: [UInt8(n & 0xFF)], options: SetOptions())))
    }

    @Test func everythingPersistedReloadsTheSame() throws {
        var state = StrongState()
        for n in UInt64(1)...5 { _ = state.apply(Self.entry(n), slot: n) }
        _ = state.apply(StrongEntry(request: RequestID(origin: 1, sequence: 99), timeMs: 6, command: StrongCommand(.lock(name: [9], ttlMs: 100, owner: [1]))), slot: 6)
        let changes: [DurableChange] = [
            .promised(partition: 3, ballot: Ballot(round: 4, voter: 1)),
            .proposed(partition: 3, ballot: Ballot(round: 5, voter: 0)),
            .accepted(partition: 3, AcceptedEntry(slot: 7, ballot: Ballot(round: 4, voter: 1), entry: Self.entry(7))),
            .accepted(partition: 3, AcceptedEntry(slot: 8, ballot: Ballot(round: 4, voter: 1), entry: Self.entry(8))),
            .chosen(partition: 3, ChosenEntry(slot: 7, entry: Self.entry(7))),
        ] + (UInt64(1)...6).map { .chosen(partition: 3, ChosenEntry(slot: $0, entry: Self.entry($0))) } + [
            .snapshot(partition: 3, slot: 6, state: state.snapshot()),
            .forgetChosen(partition: 3, throughSlot: 4),
            .accepted(partition: 9, AcceptedEntry(slot: 2, ballot: Ballot(round: 1, voter: 2), entry: Self.entry(2))),
            .accepted(partition: 9, AcceptedEntry(slot: 3, ballot: Ballot(round: 1, voter: 2), entry: .noop(timeMs: 1))),
            .forgetAccepted(partition: 9, throughSlot: 2),
        ]
        let disk = InMemoryStore()
        let writer = PaxosStore(store: disk, partitionCount: 16)
        // The engine loads before it persists anything (which marks a new store's layout).
        #expect(try writer.load() == PaxosDurableState())
        try writer.persist(Array(changes.prefix(5)))
        try writer.persist(Array(changes.dropFirst(5)))
        var expected = PaxosDurableState()
        for change in changes { expected.apply(change) }
        let reloaded = try PaxosStore(store: disk, partitionCount: 16).load()
        #expect(reloaded == expected)
        #expect(reloaded.partitions[3]?.chosen.keys.sorted() == [5, 6, 7])
        #expect(reloaded.partitions[3]?.snapshot?.slot == 6)
        #expect(StrongState(reloaded.partitions[3]!.snapshot!.state) == state)
        #expect(reloaded.partitions[9]?.accepted.keys.sorted() == [3])
    }

    @Test func aDamagedRecordIsAnError() throws {
        let disk = InMemoryStore()
        _ = try PaxosStore(store: disk, partitionCount: 16).load()
        var batch = StoreBatch()
        batch.puts = [(PaxosStore.key(UInt8(ascii: "S"), partition: 1), [1, 2, 3])]
        try disk.apply(batch, sync: true)
        #expect(throws: WireError.self) { try PaxosStore(store: disk, partitionCount: 16).load() }
        // The marker is intact: the error is the damaged snapshot's.
        #expect(try disk.read(key: PaxosStore.layoutKey) == [2, 0, 0, 0, 16])
    }

    /// Partition numbers mean nothing under another partition function or count: a store
    /// without the layout marker (the earlier CRC16-modulo layout) or with another partition
    /// count is refused, and an empty store gets the marker.
    @Test func aStoreOfAnotherLayoutIsRefused() throws {
        let empty = InMemoryStore()
        #expect(try PaxosStore(store: empty, partitionCount: 16).load() == PaxosDurableState())
        #expect(try empty.read(key: PaxosStore.layoutKey) == [2, 0, 0, 0, 16])
        #expect(throws: (any Error).self) { try PaxosStore(store: empty, partitionCount: 32).load() }
        let unmarked = InMemoryStore()
        var batch = StoreBatch()
        batch.puts = [(PaxosStore.key(UInt8(ascii: "P"), partition: 1), PaxosCodec.encode(ballot: Ballot(round: 1, voter: 0)))]
        try unmarked.apply(batch, sync: true)
        #expect(throws: (any Error).self) { try PaxosStore(store: unmarked, partitionCount: 16).load() }
    }
}
