import MeridianCore

/// A key's replicated state: the same LWW register that cross-DC deltas carry, so a write merges
/// into a replica by the same rules whether it came from a coordinator in this DC, a hint, a
/// repair or another DC.
public typealias ReplicaState = LWWRegister<[UInt8]>

/// One key with its state, as anti-entropy and moves ship them.
public struct ReplicaEntry: Sendable, Equatable {
    public var key: [UInt8]
    public var state: ReplicaState

    public init(key: [UInt8], state: ReplicaState) {
        self.key = key
        self.state = state
    }

    /// What the entry costs against a message's byte bound: key, value and the fixed fields.
    public var approximateBytes: Int { key.count + (state.value?.count ?? 0) + 48 }
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
    /// Anti-entropy (type 28/29): the sender's digests of `nodes` at `level` of the partition's
    /// tree. The receiver answers with the next level's digests under the nodes that differ, or
    /// at the leaves with its entries there.
    case antiEntropyDigests(partition: Int, level: Int, nodes: [Int], digests: [Digest128])
    /// Anti-entropy (type 30): the sender's entries in `leaves`. The receiver merges them; if
    /// `answer` is false it sends back its own entries there that the sender lacks or has older.
    case antiEntropyEntries(partition: Int, leaves: [Int], entries: [ReplicaEntry], answer: Bool)
    /// New replica → old replica: stream the partition to me, keys after `after` (type 31).
    case moveRequest(partition: Int, changeEpoch: UInt64, after: [UInt8]?)
    /// Old replica → new replica: the next keys in order, continuing after `after`; `last` ends
    /// the stream (type 31/32).
    case moveChunk(partition: Int, changeEpoch: UInt64, after: [UInt8]?, entries: [ReplicaEntry], last: Bool)
}
