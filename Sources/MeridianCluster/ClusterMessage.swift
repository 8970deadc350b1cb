import MeridianCore

/// A key's replicated state: the record the keyspace keeps on disk and cross-DC deltas carry —
/// value register (value or tombstone, stamp, dot), expiry (with its stamp and dot) and, for a
/// key of the `INCR` family, its PN counter — so a write merges into a replica by the same rules
/// (`DurableRecord.merged(with:)`) whether it came from a coordinator in this DC, a hint, a
/// repair or another DC (docs/CLUSTER.md, "The server wiring").
public typealias ReplicaState = DurableRecord

extension DurableRecord {
    /// A plain write of `value` (`nil`: a delete) with one stamp for both fields: it sets the
    /// value and clears the expiry, as `SET` does.
    public static func written(_ value: [UInt8]?, stamp: LWWStamp) -> DurableRecord {
        DurableRecord(value: value, valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp, encoding: .byContent)
    }
}

/// One key with its state, as anti-entropy and moves ship them.
public struct ReplicaEntry: Sendable, Equatable {
    public var key: [UInt8]
    public var state: ReplicaState

    public init(key: [UInt8], state: ReplicaState) {
        self.key = key
        self.state = state
    }

    /// What the entry costs against a message's byte bound: the key and the encoded record.
    public var approximateBytes: Int { key.count + state.encodedByteCount + 8 }
}

/// A key as anti-entropy compares it before it ships any value: its state's digest (equal
/// digests, equal states), the two stamps (the newer stamp of each field says which side must
/// send), and whether it has a counter (a counter's increments keep the stamps, so when either
/// side has one and the digests differ, both sides send).
public struct KeyStamps: Sendable, Equatable {
    public var key: [UInt8]
    public var valueStamp: LWWStamp
    public var expiryStamp: LWWStamp
    public var hasCounter: Bool
    public var digest: Digest128

    public init(key: [UInt8], valueStamp: LWWStamp, expiryStamp: LWWStamp, hasCounter: Bool, digest: Digest128) {
        self.key = key
        self.valueStamp = valueStamp
        self.expiryStamp = expiryStamp
        self.hasCounter = hasCounter
        self.digest = digest
    }

    public init(_ entry: ReplicaEntry) {
        self.init(
            key: entry.key, valueStamp: entry.state.valueStamp, expiryStamp: entry.state.expiryStamp,
            hasCounter: entry.state.counter != nil, digest: PartitionDigest.entryDigest(key: entry.key, state: entry.state))
    }

    /// What it costs against a message's byte bound.
    public var approximateBytes: Int { key.count + 45 }

    /// Which way a key must travel between a replica holding `mine` and the peer that sent
    /// these stamps: (this replica sends its state, this replica wants the peer's).
    public func exchange(with mine: ReplicaState?) -> (send: Bool, want: Bool) {
        guard let mine else { return (false, true) }
        if PartitionDigest.entryDigest(key: key, state: mine) == digest { return (false, false) }
        if hasCounter || mine.counter != nil || (mine.valueStamp == valueStamp && mine.expiryStamp == expiryStamp) {
            return (true, true)
        }
        return (mine.valueStamp > valueStamp || mine.expiryStamp > expiryStamp,
                valueStamp > mine.valueStamp || expiryStamp > mine.expiryStamp)
    }
}

extension Sequence where Element == ReplicaEntry {
    /// The leading entries within a message's bounds: at most `limit`, about `bytesMax` bytes,
    /// and always at least one (a key and a value fit in any message).
    func bounded(limit: Int, bytesMax: Int) -> [ReplicaEntry] {
        var entries: [ReplicaEntry] = []
        var bytes = 0
        for entry in self {
            bytes += entry.approximateBytes
            if entries.count == limit || (bytes > bytesMax && !entries.isEmpty) { break }
            entries.append(entry)
        }
        return entries
    }
}

/// The messages between the nodes of one data center (docs/CLUSTER.md, "Messages"). Request
/// numbers are the sender's own; an answer goes back to the sender with the number it asked with.
public enum ClusterMessage: Sendable, Equatable {
    /// Failure detection (types 20–22).
    case swim(SWIMMessage)
    /// Coordinator → replica: merge this write (type 23). `hinted` marks a replayed hint.
    case replicate(epoch: UInt64, request: UInt64, partition: Int, key: [UInt8], state: ReplicaState, hinted: Bool)
    /// Replica → coordinator: the write is merged and as durable as its namespace asks (type 24).
    case replicateAck(request: UInt64)
    /// Coordinator → replica: what do you hold for this key (type 25)?
    case read(epoch: UInt64, request: UInt64, partition: Int, key: [UInt8])
    /// Replica → coordinator: its state of the key, `nil` if it holds none (type 26).
    case readReply(request: UInt64, state: ReplicaState?)
    /// Replica → coordinator: your placement is older than mine; refresh and retry (type 27).
    case movedEpoch(request: UInt64, epoch: UInt64)
    /// Anti-entropy (type 28): the sender's digests of `nodes` at `level` of the partition's
    /// tree. The receiver answers with the next level's digests under the nodes that differ, or
    /// at the leaves with the stamps of its keys there (`antiEntropyStamps`).
    case antiEntropyDigests(partition: Int, level: Int, nodes: [Int], digests: [Digest128])
    /// Anti-entropy (type 29): the sender's states of keys the receiver lacks or holds older,
    /// and the keys the sender wants the receiver's states of (empty in the last step).
    case antiEntropyEntries(partition: Int, entries: [ReplicaEntry], wanted: [[UInt8]])
    /// Rebuilding owner → other owner, or new replica → old replica: stream the partition to me,
    /// keys after `after` (type 30; change epoch 0 for a rebuild). `stream` is the requester's
    /// number for this request, echoed in every chunk.
    case moveRequest(partition: Int, changeEpoch: UInt64, stream: UInt64, after: [UInt8]?)
    /// The next keys in order, continuing after `after`; `last` ends the stream (type 31).
    case moveChunk(partition: Int, changeEpoch: UInt64, stream: UInt64, after: [UInt8]?, entries: [ReplicaEntry], last: Bool)
    /// Anti-entropy (type 32): the stamps of every key the sender holds in `leaves` (whole
    /// leaves: a key absent is a key the sender lacks). The receiver answers with
    /// `antiEntropyEntries`: its states the sender lacks or holds older, and the keys it wants.
    case antiEntropyStamps(partition: Int, leaves: [Int], stamps: [KeyStamps])
    /// Coordinator → primary: run this command (type 33) — one command's arguments, or a
    /// transaction's several — routed by placement `epoch` to the partition's primary. The
    /// shell's `CommandForwarder` sends it and the primary's command executor runs it;
    /// `ClusterNode` ignores it. `protocolVersion` is the client connection's RESP version
    /// (2 or 3), which the reply's bytes follow; `passedOn`: an owner rebuilding the partition
    /// sent it on (the receiver does not send it on again).
    case command(request: UInt64, epoch: UInt64, partition: Int, protocolVersion: UInt8, passedOn: Bool, commands: [[[UInt8]]])
    /// Primary → coordinator: what became of `command` (type 34).
    case commandReply(request: UInt64, outcome: CommandOutcome)
    /// Any node → placement voter: send me the placement you applied if its epoch is above
    /// `epoch` (type 35). The shell answers; `ClusterNode` ignores it.
    case placementFetch(epoch: UInt64)
    /// Placement voter → any node: the placement it applied (type 36), as an answer to a fetch
    /// and to every node of the data center whenever it applies a new one.
    case placement(Placement)
    /// Any node → placement voter: commit this change (type 37). Request 0 asks for no answer
    /// (a moving partition's switch: the proposer sees the outcome in the placement).
    case placementChange(request: UInt64, change: PlacementChange)
    /// Placement voter → the node that asked: what became of the change (type 38).
    case placementChangeReply(request: UInt64, outcome: PlacementChangeOutcome)
    /// One message of the placement log's Paxos group, between its voters (type 39): the
    /// strong protocol's bytes (`PaxosCodec`), opaque here.
    case placementLog([UInt8])
}

/// A change to a data center's placement, as an operator (`CLUSTER ADDNODE` / `REMOVENODE`)
/// or a partition that finished moving asks for it (docs/CLUSTER.md, "Rebalancing").
public enum PlacementChange: Sendable, Equatable {
    case add(name: String)
    case remove(name: String)
    case switching(partitions: [Int], changeEpoch: UInt64)
}

/// What a placement voter did with a change.
public enum PlacementChangeOutcome: Sendable, Equatable {
    /// Committed: the placement's epoch after it.
    case committed(epoch: UInt64)
    /// Not committed, and why (a client-facing sentence).
    case refused(String)
}

extension Placement {
    /// The placement after `change` (the next epoch's).
    public func applying(_ change: PlacementChange) throws(ChangeError) -> Placement {
        switch change {
        case .add(let name): try adding(name: name)
        case .remove(let name): try removing(name: name)
        case .switching(let partitions, let changeEpoch): try switching(partitions: partitions, changeEpoch: changeEpoch)
        }
    }
}

extension Placement.ChangeError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .moveInProgress: "a change is still moving partitions; one add or remove runs at a time"
        case .memberExists(let name): "'\(name)' is already a member"
        case .noSuchMember(let name): "'\(name)' is not a member"
        case .lastMember: "the last member cannot leave"
        case .staleSwitch: "the switch names a partition that is not moving or a change that ended"
        }
    }
}

/// What a primary did with a forwarded command.
public enum CommandOutcome: Sendable, Equatable {
    /// It ran; its reply, as the RESP bytes the client gets.
    case executed(reply: [UInt8])
    /// It did not run: the sender routed by an older placement, and this node does not own the
    /// partition at its own epoch (given).
    case movedEpoch(UInt64)
    /// It ran, but its reply does not fit one peer frame.
    case replyTooLarge
}
