import MeridianCore

/// Where a node keeps its replicas of the partitions it owns (docs/CLUSTER.md, "The server
/// wiring"): `MemoryReplicaStore` in the simulator and the unit tests, `KeyspaceReplicaStore`
/// (replicas kept in a keyspace, as the server will keep them; the server does not run the
/// core yet). Merging is `DurableRecord.merged`,
/// so applying the same state twice, or two states in either order, ends the same; each
/// partition's Merkle tree is kept current on every change.
public protocol ReplicaStore: Sendable, Equatable {
    /// This replica's state of `key`, if it holds any.
    func state(of key: [UInt8], partition: Int) -> ReplicaState?
    /// Merges `state` into the key's state. Returns whether anything changed.
    @discardableResult
    mutating func merge(key: [UInt8], state: ReplicaState, partition: Int) -> Bool
    /// Forgets a partition this node no longer owns.
    mutating func drop(partition: Int)
    /// The partition's tree (empty for a partition this node holds nothing of).
    func digest(of partition: Int) -> PartitionDigest
    /// The keys of the partition this node holds a state of, in no order.
    func keys(of partition: Int) -> [[UInt8]]
    /// The partitions this node holds anything of, ascending.
    var heldPartitions: [Int] { get }
}

extension ReplicaStore {
    /// The entries of each of `leaves` (a leaf with none is absent), each leaf in key order.
    public func entriesByLeaf(of partition: Int, leaves: [Int]) -> [Int: [ReplicaEntry]] {
        let wanted = Set(leaves)
        var byLeaf: [Int: [ReplicaEntry]] = [:]
        for key in keys(of: partition) {
            let leaf = PartitionDigest.leaf(of: key)
            guard wanted.contains(leaf), let state = state(of: key, partition: partition) else { continue }
            byLeaf[leaf, default: []].append(ReplicaEntry(key: key, state: state))
        }
        for leaf in byLeaf.keys { byLeaf[leaf]!.sort { $0.key.lexicographicallyPrecedes($1.key) } }
        return byLeaf
    }

    /// Entries with keys after `after`, in key order, bounded as `ReplicaEntry` lists are: one
    /// chunk of a move.
    public func entries(of partition: Int, after: [UInt8]?, limit: Int, bytesMax: Int) -> [ReplicaEntry] {
        let keys = keys(of: partition).filter { after == nil || after!.lexicographicallyPrecedes($0) }
            .sorted { $0.lexicographicallyPrecedes($1) }
        return keys.lazy.compactMap { key in self.state(of: key, partition: partition).map { ReplicaEntry(key: key, state: $0) } }
            .bounded(limit: limit, bytesMax: bytesMax)
    }

    /// Every state of a partition, by key (for checks and tests: it copies the partition).
    public func states(of partition: Int) -> [[UInt8]: ReplicaState] {
        var states: [[UInt8]: ReplicaState] = [:]
        for entry in entries(of: partition, after: nil, limit: .max, bytesMax: .max) { states[entry.key] = entry.state }
        return states
    }
}

/// The partitions one node holds, in memory, each with its Merkle tree kept current on every
/// merge: the simulator's storage, and the reference the keyspace's store is tested against.
public struct MemoryReplicaStore: ReplicaStore {
    /// One partition's keys and tree.
    public struct Partition: Sendable, Equatable {
        public var entries: [[UInt8]: ReplicaState] = [:]
        public var digest = PartitionDigest()
    }

    public private(set) var partitions: [Int: Partition] = [:]

    public init() {}

    /// This replica's state of `key`, if it holds any.
    public func state(of key: [UInt8], partition: Int) -> ReplicaState? {
        partitions[partition]?.entries[key]
    }

    /// Merges `state` into the key's state. Returns whether anything changed.
    @discardableResult
    public mutating func merge(key: [UInt8], state: ReplicaState, partition: Int) -> Bool {
        let leaf = PartitionDigest.leaf(of: key)
        // Changed in place (no copy of the partition per merge).
        return Self.merge(key: key, state: state, leaf: leaf, into: &partitions[partition, default: Partition()])
    }

    private static func merge(key: [UInt8], state: ReplicaState, leaf: Int, into holder: inout Partition) -> Bool {
        if let current = holder.entries[key] {
            let merged = current.merged(with: state)
            if merged == current { return false }
            holder.digest.toggle(PartitionDigest.entryDigest(key: key, state: current), leaf: leaf)
            holder.digest.toggle(PartitionDigest.entryDigest(key: key, state: merged), leaf: leaf)
            holder.entries[key] = merged
        } else {
            holder.digest.toggle(PartitionDigest.entryDigest(key: key, state: state), leaf: leaf)
            holder.entries[key] = state
        }
        return true
    }

    /// Forgets a partition this node no longer owns.
    public mutating func drop(partition: Int) {
        partitions[partition] = nil
    }

    /// The partition's tree (empty for a partition this node holds nothing of).
    public func digest(of partition: Int) -> PartitionDigest {
        partitions[partition]?.digest ?? PartitionDigest()
    }

    public func keys(of partition: Int) -> [[UInt8]] {
        partitions[partition].map { Array($0.entries.keys) } ?? []
    }

    /// The partitions this node holds anything of, ascending.
    public var heldPartitions: [Int] { partitions.keys.sorted() }
}

/// Writes a coordinator owes to replicas that did not acknowledge them (docs/CLUSTER.md,
/// "Hinted handoff"), in arrival order per target, bounded in bytes: past the bound the oldest
/// hints go first (anti-entropy repairs what they carried) and are counted.
///
/// Every operation is O(1) amortized (O(limit) for `pending`): a node may hold hundreds of
/// thousands of hints exactly while a replica is down, and each write adds one. Hints live in a
/// table by id; per-target and global arrival queues hold ids and skip removed ones lazily.
public struct HintStore: Sendable, Equatable {
    /// One owed write.
    public struct Hint: Sendable, Equatable {
        public var id: UInt64
        public var target: Int
        public var partition: Int
        public var key: [UInt8]
        public var state: ReplicaState

        public init(id: UInt64, target: Int, partition: Int, key: [UInt8], state: ReplicaState) {
            self.id = id
            self.target = target
            self.partition = partition
            self.key = key
            self.state = state
        }

        /// What the hint costs against the bound: its key and its record's encoded bytes (value,
        /// stamps, counter, dots) plus a fixed overhead for the bookkeeping.
        public var bytes: Int { key.count + state.encodedByteCount + 20 }
    }

    /// An arrival queue of ids with a moving head; removed ids are skipped when reached.
    struct Queue: Sendable {
        var ids: [UInt64] = []
        var head = 0

        mutating func compact() {
            if head > 64 && head * 2 > ids.count {
                ids.removeFirst(head)
                head = 0
            }
        }
    }

    struct Owed: Hashable, Sendable {
        var target: Int
        var key: [UInt8]
    }

    public let bytesMax: Int
    public private(set) var bytes = 0
    /// Hints dropped to stay within `bytesMax`.
    public private(set) var dropped: UInt64 = 0
    private var byID: [UInt64: Hint] = [:]
    private var latest: [Owed: UInt64] = [:]
    private var perTarget: [Int: Queue] = [:]
    private var liveCount: [Int: Int] = [:]
    private var arrival = Queue()
    private var nextID: UInt64 = 1

    public init(bytesMax: Int) {
        precondition(bytesMax > 0)
        self.bytesMax = bytesMax
    }

    public static func == (lhs: HintStore, rhs: HintStore) -> Bool {
        lhs.bytesMax == rhs.bytesMax && lhs.bytes == rhs.bytes && lhs.dropped == rhs.dropped && lhs.hints == rhs.hints
    }

    /// Every hint, in arrival order (O(n log n): for checks and tests, not for a hot path).
    public var hints: [Hint] { byID.values.sorted { $0.id < $1.id } }

    public var count: Int { byID.count }

    /// Ids the arrival queues hold, removed ones included: what the store's bookkeeping costs
    /// beyond the hints themselves (tests check it stays proportional to `count`).
    public var queuedIDs: Int {
        arrival.ids.count - arrival.head + perTarget.values.reduce(0) { $0 + $1.ids.count - $1.head }
    }

    public var isEmpty: Bool { byID.isEmpty }

    /// The targets with hints, ascending.
    public var targets: [Int] { liveCount.filter { $0.value > 0 }.keys.sorted() }

    /// Stores a hint, replacing an older one for the same target and key (only the newest state
    /// matters: a merge of the newer state covers the older). Returns the hint stored (nil when
    /// it alone exceeds the bound) and the ids it removed (the one it replaced, and the oldest
    /// hints dropped to stay within the bound), so that a store on disk can follow.
    @discardableResult
    public mutating func add(target: Int, partition: Int, key: [UInt8], state: ReplicaState) -> (stored: Hint?, removed: [UInt64]) {
        var merged = state
        var removed: [UInt64] = []
        if let previous = latest[Owed(target: target, key: key)], let old = byID[previous] {
            merged = old.state.merged(with: state)
            remove(id: previous)
            removed.append(previous)
        }
        let hint = Hint(id: nextID, target: target, partition: partition, key: key, state: merged)
        nextID += 1
        // One hint over the whole bound is dropped alone rather than emptying the store for it.
        guard hint.bytes <= bytesMax else {
            dropped += 1
            return (nil, removed)
        }
        insert(hint)
        while bytes > bytesMax, let oldest = nextLive(&arrival) {
            remove(id: oldest)
            removed.append(oldest)
            dropped += 1
        }
        return (hint, removed)
    }

    /// Puts back a hint read from disk at restart, with its id (in id order, within the bound
    /// it was stored under).
    public mutating func restore(_ hint: Hint) {
        guard byID[hint.id] == nil else { return }
        if let previous = latest[Owed(target: hint.target, key: hint.key)], previous > hint.id { return }
        if let previous = latest[Owed(target: hint.target, key: hint.key)] { remove(id: previous) }
        nextID = max(nextID, hint.id + 1)
        insert(hint)
    }

    private mutating func insert(_ hint: Hint) {
        byID[hint.id] = hint
        latest[Owed(target: hint.target, key: hint.key)] = hint.id
        perTarget[hint.target, default: Queue()].ids.append(hint.id)
        liveCount[hint.target, default: 0] += 1
        arrival.ids.append(hint.id)
        bytes += hint.bytes
    }

    /// The oldest `limit` hints for `target`.
    public func pending(for target: Int, limit: Int) -> [Hint] {
        guard let queue = perTarget[target] else { return [] }
        var result: [Hint] = []
        var index = queue.head
        while index < queue.ids.count && result.count < limit {
            if let hint = byID[queue.ids[index]] { result.append(hint) }
            index += 1
        }
        return result
    }

    /// Removes a hint once its target acknowledged it (or it no longer applies). Returns
    /// whether it was still there.
    @discardableResult
    /// The ids of the hints `isPicked` picks, in no order (one pass over the table, no sort).
    public func ids(where isPicked: (Hint) -> Bool) -> [UInt64] {
        byID.values.filter(isPicked).map(\.id)
    }

    public mutating func remove(id: UInt64) -> Bool {
        guard let hint = byID.removeValue(forKey: id) else { return false }
        bytes -= hint.bytes
        let owed = Owed(target: hint.target, key: hint.key)
        if latest[owed] == id { latest[owed] = nil }
        liveCount[hint.target, default: 1] -= 1
        if liveCount[hint.target] == 0 {
            liveCount[hint.target] = nil
            perTarget[hint.target] = nil
        } else if var queue = perTarget[hint.target] {
            _ = nextLive(&queue)
            prune(&queue, live: liveCount[hint.target]!)
            perTarget[hint.target] = queue
        }
        _ = nextLive(&arrival)
        prune(&arrival, live: byID.count)
        return true
    }

    /// Rebuilds a queue whose removed ids (behind a live head: a hot key replaced over and
    /// over, a target down for hours) outnumber its live ones, so that queues stay within a
    /// constant factor of the hints held.
    private func prune(_ queue: inout Queue, live: Int) {
        guard queue.ids.count - queue.head > 2 * live + 64 else { return }
        queue.ids = queue.ids[queue.head...].filter { byID[$0] != nil }
        queue.head = 0
    }

    /// Advances the queue's head past removed ids; returns the first live id.
    private func nextLive(_ queue: inout Queue) -> UInt64? {
        while queue.head < queue.ids.count && byID[queue.ids[queue.head]] == nil { queue.head += 1 }
        queue.compact()
        return queue.head < queue.ids.count ? queue.ids[queue.head] : nil
    }
}
