import MeridianCore
import MeridianPaxos
import MeridianStorage
import MeridianWire

/// A voter's durable Paxos state in its own store (`<data_dir>/paxos`): the promised ballot,
/// accepted entries and (on a full node) the chosen log of every partition. Each engine step's
/// changes are written as one synced batch before any of its messages leaves
/// (docs/CONSISTENCY.md, "Recovery").
///
/// Keys: a kind byte, the partition (4 bytes, big-endian), and for entries the slot (8 bytes,
/// big-endian), so one partition's entries are in slot order:
/// `P` promised ballot, `B` the last ballot this node proposed with, `A` accepted entry, `C` chosen
/// entry, `F` the slot a witness forgot through, `S` a learner's snapshot of its applied state
/// (with its slot), `G` the slot through which it forgot chosen entries. One key `V` records the
/// layout (format version and partition count): partition numbers are only meaningful under the
/// partition function and count that wrote them, so a store of another layout is refused
/// rather than read as the wrong partitions.
final class PaxosStore {
    let store: DurableStore
    let partitionCount: Int
    /// Accepted slots on disk per partition: a witness's truncation deletes them by key.
    private var acceptedOnDisk: [Int: Set<UInt64>] = [:]
    /// Per partition: chosen entries at or below this slot are gone from disk.
    private var chosenForgottenOnDisk: [Int: UInt64] = [:]

    /// The layout marker's key, and the layout this build writes: version 2 numbers partitions
    /// as contiguous slot ranges (version 1, unmarked, used CRC16 modulo the partition count).
    static let layoutKey: [UInt8] = [UInt8(ascii: "V")]
    static let layoutVersion: UInt8 = 2

    init(store: DurableStore, partitionCount: Int) {
        self.store = store
        self.partitionCount = partitionCount
    }

    /// The marker's bytes: the version, then the partition count (4 bytes, big-endian).
    var layout: [UInt8] {
        [Self.layoutVersion] + (0..<4).map { UInt8(truncatingIfNeeded: UInt32(partitionCount) >> UInt32(24 - 8 * $0)) }
    }

    /// Checks the layout marker: writes it into an empty store, refuses a store of another layout.
    private func checkLayout() throws {
        if let marker = try store.read(key: Self.layoutKey) {
            guard marker == layout else {
                let partitions = marker.count == 5 ? Int(marker[1]) << 24 | Int(marker[2]) << 16 | Int(marker[3]) << 8 | Int(marker[4]) : -1
                throw StorageError.read(reason: "paxos store: written with layout version \(marker.first ?? 0) and \(partitions) partitions; this node runs version \(Self.layoutVersion) with \(partitionCount) partitions (cluster.partitions is fixed for the cluster's life)")
            }
            return
        }
        guard try store.scan(after: nil, limit: 1).isEmpty else {
            throw StorageError.read(reason: "paxos store: written by an earlier layout (partitions by CRC16 modulo the count); this build numbers partitions by slot range and cannot read it — to start the strong namespaces empty, stop every node of the cluster and move each node's <data_dir>/paxos aside")
        }
        var batch = StoreBatch()
        batch.puts = [(Self.layoutKey, layout)]
        try store.apply(batch, sync: true)
    }

    static func key(_ kind: UInt8, partition: Int, slot: UInt64? = nil) -> [UInt8] {
        var key: [UInt8] = [kind]
        let p = UInt32(partition)
        for shift in stride(from: 24, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: p >> UInt32(shift))) }
        if let slot {
            for shift in stride(from: 56, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: slot >> UInt64(shift))) }
        }
        return key
    }

    /// Everything on disk, for a restart.
    func load() throws -> PaxosDurableState {
        try checkLayout()
        var state = PaxosDurableState()
        var after: [UInt8]?
        while true {
            let page = try store.scan(after: after, limit: 4096)
            for (key, value) in page where key != Self.layoutKey {
                guard key.count >= 5 else { throw StorageError.read(reason: "paxos store: a key of \(key.count) bytes") }
                let partition = Int(key[1]) << 24 | Int(key[2]) << 16 | Int(key[3]) << 8 | Int(key[4])
                var slot: UInt64 = 0
                if key.count == 13 { for index in 5..<13 { slot = slot << 8 | UInt64(key[index]) } }
                var saved = state.partitions[partition] ?? DurablePartition()
                switch key[0] {
                case UInt8(ascii: "P"): saved.promised = try PaxosCodec.decodeBallot(value)
                case UInt8(ascii: "B"): saved.proposed = try PaxosCodec.decodeBallot(value)
                case UInt8(ascii: "A"):
                    saved.accepted[slot] = try PaxosCodec.decodeAccepted(slot: slot, value)
                    acceptedOnDisk[partition, default: []].insert(slot)
                case UInt8(ascii: "C"): saved.chosen[slot] = try PaxosCodec.decodeEntry(value)
                case UInt8(ascii: "F"):
                    saved.forgottenThrough = Self.slot(value)
                case UInt8(ascii: "G"):
                    saved.chosenForgottenThrough = Self.slot(value)
                    chosenForgottenOnDisk[partition] = saved.chosenForgottenThrough
                case UInt8(ascii: "S"):
                    let decoded = try PaxosCodec.decodeSnapshot(value)
                    saved.snapshot = (decoded.slot, decoded.snapshot)
                default: throw StorageError.read(reason: "paxos store: unknown key kind \(key[0])")
                }
                state.partitions[partition] = saved
            }
            guard page.count == 4096, let last = page.last else { break }
            after = last.key
        }
        return state
    }

    static func slot(_ bytes: [UInt8]) -> UInt64 {
        var slot: UInt64 = 0
        for byte in bytes { slot = slot << 8 | UInt64(byte) }
        return slot
    }

    static func bytes(ofSlot slot: UInt64) -> [UInt8] {
        stride(from: 56, through: 0, by: -8).map { UInt8(truncatingIfNeeded: slot >> UInt64($0)) }
    }

    /// Writes one step's changes as one synced batch.
    func persist(_ changes: [DurableChange]) throws(StorageError) {
        guard !changes.isEmpty else { return }
        var puts: [[UInt8]: [UInt8]] = [:]
        var deletes: Set<[UInt8]> = []
        func put(_ key: [UInt8], _ value: [UInt8]) {
            deletes.remove(key)
            puts[key] = value
        }
        func delete(_ key: [UInt8]) {
            puts[key] = nil
            deletes.insert(key)
        }
        for change in changes {
            switch change {
            case .promised(let partition, let ballot):
                put(Self.key(UInt8(ascii: "P"), partition: partition), PaxosCodec.encode(ballot: ballot))
            case .proposed(let partition, let ballot):
                put(Self.key(UInt8(ascii: "B"), partition: partition), PaxosCodec.encode(ballot: ballot))
            case .accepted(let partition, let accepted):
                put(Self.key(UInt8(ascii: "A"), partition: partition, slot: accepted.slot), PaxosCodec.encode(ballot: accepted.ballot, entry: accepted.entry))
                acceptedOnDisk[partition, default: []].insert(accepted.slot)
            case .chosen(let partition, let chosen):
                put(Self.key(UInt8(ascii: "C"), partition: partition, slot: chosen.slot), PaxosCodec.encode(entry: chosen.entry))
                if acceptedOnDisk[partition]?.remove(chosen.slot) != nil {
                    delete(Self.key(UInt8(ascii: "A"), partition: partition, slot: chosen.slot))
                }
            case .snapshot(let partition, let slot, let state):
                put(Self.key(UInt8(ascii: "S"), partition: partition), PaxosCodec.encode(snapshotAt: slot, state))
            case .forgetChosen(let partition, let through):
                let floor = chosenForgottenOnDisk[partition] ?? 0
                guard through > floor else { break }
                for slot in (floor + 1)...through { delete(Self.key(UInt8(ascii: "C"), partition: partition, slot: slot)) }
                chosenForgottenOnDisk[partition] = through
                put(Self.key(UInt8(ascii: "G"), partition: partition), Self.bytes(ofSlot: through))
            case .forgetAccepted(let partition, let through):
                put(Self.key(UInt8(ascii: "F"), partition: partition), Self.bytes(ofSlot: through))
                let forgotten = acceptedOnDisk[partition, default: []].filter { $0 <= through }
                for slot in forgotten { delete(Self.key(UInt8(ascii: "A"), partition: partition, slot: slot)) }
                acceptedOnDisk[partition]?.subtract(forgotten)
            }
        }
        var batch = StoreBatch()
        batch.puts = puts.map { ($0.key, $0.value) }
        batch.deletes = Array(deletes)
        try store.apply(batch, sync: true)
    }
}
