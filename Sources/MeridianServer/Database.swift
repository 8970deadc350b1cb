#if canImport(Glibc)
import Glibc
#endif
import MeridianCore
import MeridianStorage
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// One shard of the node's keyspace and the lock that guards it.
///
/// Threading: commands run on the event loop that read them and take the lock of the key's
/// shard for the few hundred nanoseconds the command needs. A short lock on one of many
/// shards is cheaper than hopping every command to an owning thread, and with 64 shards two
/// event loops rarely meet on the same lock. Commands that touch several shards take their
/// locks in ascending shard order, so they cannot deadlock.
public final class Shard: @unchecked Sendable {
    /// Guards `keyspace`; hold it only for in-memory work, never across IO.
    public let lock = NIOLock()
    /// The keyspace lives behind a pointer: the lock already makes access exclusive, and a
    /// stored class property would add a dynamic exclusivity check to every command.
    private let storage: UnsafeMutablePointer<Keyspace>
    /// The shard's accounted bytes, published after every locked section so that the node's
    /// total can be summed without taking 64 locks.
    let publishedUsedBytes = Synchronization.Atomic<Int>(0)
    /// Whether keys of durable namespaces may be on disk but not in memory here (warm-up has
    /// not reached them, or eviction dropped their memory copy): a miss must then ask the disk.
    let mayHaveDiskOnlyKeys = Synchronization.Atomic<Bool>(false)
    /// Set (under `lock`) once eviction dropped a durable key here; only FLUSHALL clears it.
    var evictedDurableKeys = false

    init(evictableNamespaces: [Bool], loggedNamespaces: [Bool], replicatedNamespaces: [Bool], partitionCount: Int?) {
        storage = UnsafeMutablePointer<Keyspace>.allocate(capacity: 1)
        storage.initialize(to: Keyspace(
            evictableNamespaces: evictableNamespaces, loggedNamespaces: loggedNamespaces, replicatedNamespaces: replicatedNamespaces,
            partitionCount: partitionCount))
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    /// The keys of this shard. Access only with `lock` held.
    public var keyspace: Keyspace {
        unsafeAddress { UnsafePointer(storage) }
        unsafeMutableAddress { storage }
    }

    /// Publishes the accounted bytes (call with the lock held, after a change).
    @inline(__always)
    func publishUsedBytes() {
        publishedUsedBytes.store(storage.pointee.usedBytes, ordering: .relaxed)
    }
}

/// Counters of one event loop. Each loop writes only its own, so the atomics never bounce
/// between cores; readers (INFO) sum every loop's.
public final class LoopCounters: Sendable {
    public let commandsProcessed = Synchronization.Atomic<Int>(0)
    public let keyspaceHits = Synchronization.Atomic<Int>(0)
    public let keyspaceMisses = Synchronization.Atomic<Int>(0)
    public let errorReplies = Synchronization.Atomic<Int>(0)
    /// Keeps two loops' counters off one cache line.
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

    public init() {}

    func reset() {
        commandsProcessed.store(0, ordering: .relaxed)
        keyspaceHits.store(0, ordering: .relaxed)
        keyspaceMisses.store(0, ordering: .relaxed)
        errorReplies.store(0, ordering: .relaxed)
    }
}

/// Node-wide counters, kept in atomics so any event loop can update them without a lock.
/// Per-command counters live in `LoopCounters`, one per event loop; connections add their
/// tallies once per read batch.
public final class NodeStatistics: Sendable {
    /// One block per event loop (at least one, for work done outside any loop).
    public let loops: [LoopCounters]
    public let connectionsReceived = Synchronization.Atomic<Int>(0)
    public let rejectedCommandsOOM = Synchronization.Atomic<Int>(0)
    public let activeExpiryCycles = Synchronization.Atomic<Int>(0)

    public init(loopCount: Int) {
        loops = (0..<max(1, loopCount)).map { _ in LoopCounters() }
    }

    public var commandsProcessed: Int { loops.reduce(0) { $0 + $1.commandsProcessed.load(ordering: .relaxed) } }
    public var keyspaceHits: Int { loops.reduce(0) { $0 + $1.keyspaceHits.load(ordering: .relaxed) } }
    public var keyspaceMisses: Int { loops.reduce(0) { $0 + $1.keyspaceMisses.load(ordering: .relaxed) } }
    public var errorReplies: Int { loops.reduce(0) { $0 + $1.errorReplies.load(ordering: .relaxed) } }

    /// Zeroes the counters `CONFIG RESETSTAT` resets.
    public func reset() {
        for loop in loops { loop.reset() }
        connectionsReceived.store(0, ordering: .relaxed)
        rejectedCommandsOOM.store(0, ordering: .relaxed)
    }
}

/// The node's data: the sharded keyspace, its namespaces, the clock that stamps writes and
/// the memory budget. It is shared by all event loops.
public final class Database: Sendable {
    /// Number of keyspace shards (a power of two, at most 256 so SCAN cursors can encode it).
    public static let shardCount = 64
    /// Samples per eviction, as Redis's `maxmemory-samples` (default 5).
    public static let evictionSamplesDefault = 5
    /// Keys sampled per shard in one active expiry round (Redis: 20).
    public static let expirySamplesPerRound = 20
    /// Active expiry keeps sampling a shard while more than this percentage of its sample expired.
    public static let expiryRepeatPercent = 25
    /// Upper bound on one active expiry pass over all shards, so the loop that runs it is not held.
    public static let expiryPassTimeBudgetNs: UInt64 = 2_000_000
    /// Most sampling rounds one shard gets in one pass.
    public static let expiryRoundsPerShardMax = 16

    public let shards: [Shard]
    public let namespaces: NamespaceTable
    /// This node's identity, the tie-breaker of LWW stamps.
    public let origin: ReplicaID
    public let statistics: NodeStatistics
    /// The write-behind log to disk; nil when no namespace is durable (nothing touches disk).
    public let storage: StorageEngine?
    /// Per namespace index: how its changes reach the storage engine (nil: memory only).
    let durableUrgency: [StorageEngine.Urgency?]
    /// Whether some namespace is `write-through` (the executor then checks keys for it).
    public let hasWriteThroughNamespaces: Bool
    /// Whether deletes leave tombstones on disk. A tombstone may be dropped once every full
    /// data center has seen it; with a single full data center that is at once, so deletes
    /// then remove the record instead.
    let keepsTombstones: Bool
    /// Eventual replication to other data centers; nil when there are none (or this node is a witness).
    public let replicator: Replicator?
    /// Per namespace index: whether its writes are shipped to other data centers (eventual
    /// namespaces, when there is a replicator).
    let replicatedNamespaces: [Bool]
    /// Per namespace index: whether its keys are kept as replicas' records — a removed key
    /// keeps a dead state, `INCRBY` counts per node in a PN-counter, a delete is stamped — so
    /// that another copy of the key merges with them: namespaces shipped to other data centers,
    /// and every namespace of a data center of several nodes.
    let keepsReplicaStates: [Bool]
    /// The data center's partition count when it has several nodes (docs/CLUSTER.md, "The
    /// server wiring"): each shard then keeps the partitions' trees and key sets
    /// (`ShardedReplicaStore` combines them). nil on a data center of one node.
    public let clusterPartitionCount: Int?
    /// Per namespace index: whether its changes go to the audit log (docs/AUDIT.md).
    let auditedNamespaces: [Bool]
    /// The longest `audit_retention` of the audited namespaces (the log is trimmed by it).
    public let auditRetentionMs: Int64
    /// The audit log's last position and the storage sequence of its append, changed together
    /// under this lock so that appends reach the storage queue in position order (exports rely
    /// on it: docs/AUDIT.md, "Positions").
    let auditLogTail = Synchronization.Mutex(AuditLogTail(position: 0, storageSequence: 0))
    /// The position the last retention trim removed entries below (0: none yet), so that an
    /// export overtaken by retention fails instead of missing entries.
    let auditTrimmedBefore = Synchronization.Atomic<UInt64>(0)
    /// Audit entries and bytes recorded since start (INFO persistence).
    public let auditAppends = Synchronization.Atomic<Int>(0)
    public let auditAppendedBytes = Synchronization.Atomic<Int>(0)
    /// Export chunks answered and lines they carried since start (INFO persistence).
    public let auditExportChunks = Synchronization.Atomic<Int>(0)
    public let auditExportLines = Synchronization.Atomic<Int>(0)
    /// Whether any shard may have keys on disk only (`Shard.mayHaveDiskOnlyKeys`): one load
    /// on the common path instead of one per shard.
    public let diskOnlyKeysPossible = Synchronization.Atomic<Bool>(false)

    /// The last HLC timestamp issued, advanced by compare-and-swap (`HybridLogicalClock.tick`).
    private let lastTimestamp = Synchronization.Atomic<UInt64>(0)
    /// `maxmemory` in bytes; 0 is unlimited. Changed at run time by `CONFIG SET maxmemory`.
    public let maxmemoryBytes: Synchronization.Atomic<Int>
    /// Where the next active expiry pass starts.
    private let expiryCursor = Synchronization.Atomic<Int>(0)
    /// `maxmemory-samples`.
    public let evictionSamples = Synchronization.Atomic<Int>(Database.evictionSamplesDefault)

    public init(
        namespaces: NamespaceTable, origin: ReplicaID, maxmemoryBytes: Int, eventLoopCount: Int,
        storage: StorageEngine? = nil, keepsTombstones: Bool = false, replicator: Replicator? = nil,
        clusterPartitionCount: Int? = nil
    ) {
        self.statistics = NodeStatistics(loopCount: eventLoopCount)
        let evictable = namespaces.namespaces.map { $0.eviction == .lru }
        self.storage = storage
        // A replica's delete must survive a restart, or anti-entropy would bring the value back.
        self.keepsTombstones = keepsTombstones || clusterPartitionCount != nil
        self.clusterPartitionCount = clusterPartitionCount
        self.durableUrgency = namespaces.namespaces.map { namespace in
            guard storage != nil else { return nil }
            switch namespace.durability {
            case .memory: return nil
            case .writeBack: return .within(windowMs: namespace.writeBackWindowMs)
            case .writeThrough: return .sync
            }
        }
        self.hasWriteThroughNamespaces = storage != nil && namespaces.namespaces.contains { $0.durability == .writeThrough }
        self.replicator = replicator
        self.auditedNamespaces = namespaces.namespaces.map { storage != nil && $0.durability != .memory && $0.auditRetentionMs > 0 }
        self.auditRetentionMs = zip(namespaces.namespaces, auditedNamespaces).filter(\.1).map(\.0.auditRetentionMs).max() ?? 0
        if let storage, auditedNamespaces.contains(true) {
            Self.migrateLegacyAuditKeys(storage: storage)
            // Positions keep growing across restarts, even when the clock stepped back.
            let last = (try? storage.lastLogKey(from: [AuditEntry.prefix], to: [AuditEntry.prefix + 1]))
                .flatMap { $0.flatMap(AuditEntry.position(ofKey:)) } ?? 0
            auditLogTail.withLock { $0.position = last }
        }
        let replicated = namespaces.namespaces.map { replicator != nil && $0.consistency == .eventual }
        self.replicatedNamespaces = replicated
        let replicaStates = replicated.map { $0 || clusterPartitionCount != nil }
        self.keepsReplicaStates = replicaStates
        let logged = zip(durableUrgency, replicaStates).map { $0 != nil || $1 }
        self.shards = (0..<Self.shardCount).map { _ in
            Shard(
                evictableNamespaces: evictable, loggedNamespaces: logged, replicatedNamespaces: replicaStates,
                partitionCount: clusterPartitionCount)
        }
        self.namespaces = namespaces
        self.origin = origin
        self.maxmemoryBytes = Synchronization.Atomic(maxmemoryBytes)
    }

    // MARK: Placement

    /// The shard index of a key: its slot modulo the shard count, so that keys sharing a hash
    /// tag share a shard (and multi-key commands on them take one lock), however few partitions
    /// the cluster has.
    @inline(__always)
    public func shardIndex(of key: ByteBuffer) -> Int {
        key.withUnsafeReadableBytes { Partitioner.slot(of: $0) } & (Self.shardCount - 1)
    }

    // MARK: Clock

    /// A fresh LWW stamp for a local write at `nowUnixMs`.
    public func stamp(nowUnixMs: Int64) -> LWWStamp {
        let physical = UInt64(max(0, nowUnixMs))
        var last = lastTimestamp.load(ordering: .relaxed)
        while true {
            let next = HybridLogicalClock.tick(after: HLCTimestamp(rawValue: last), physicalMs: physical)
            let (exchanged, original) = lastTimestamp.compareExchange(
                expected: last, desired: next.rawValue, ordering: .relaxed)
            if exchanged { return LWWStamp(timestamp: next, origin: origin) }
            last = original
        }
    }

    /// The last timestamp issued (for moving it past stamps from other data centers).
    var lastTimestampValue: UInt64 { lastTimestamp.load(ordering: .relaxed) }

    func compareExchangeLastTimestamp(expected: UInt64, desired: UInt64) -> (exchanged: Bool, original: UInt64) {
        lastTimestamp.compareExchange(expected: expected, desired: desired, ordering: .relaxed)
    }

    // MARK: Memory

    /// Accounted bytes of all keys: the sum of what the shards published.
    public var usedBytes: Int {
        var total = 0
        for shard in shards { total += shard.publishedUsedBytes.load(ordering: .relaxed) }
        return total
    }

    /// Whether memory is over budget.
    public var isOverMemoryLimit: Bool {
        let limit = maxmemoryBytes.load(ordering: .relaxed)
        return limit > 0 && usedBytes > limit
    }

    /// Evicts least-recently-used keys of `eviction: lru` namespaces until memory is within
    /// `maxmemory`. Returns false when memory is still over the limit because nothing more may
    /// be evicted: the caller then refuses the write with `-OOM`.
    ///
    /// Each step draws `maxmemory-samples` evictable keys, each from a random shard, and drops
    /// the least recently used of them (Redis's approximation; drawing from several shards keeps
    /// it good when shards hold few keys). Its quality against exact LRU is measured in
    /// `LRUApproximationTests`.
    public func evictUntilWithinLimit<G: RandomNumberGenerator>(using generator: inout G) -> Bool {
        let samples = max(1, evictionSamples.load(ordering: .relaxed))
        while isOverMemoryLimit {
            var best: (shard: Int, slot: Int, lastAccessUnixMs: Int64, stamp: LWWStamp)?
            var drawn = 0
            var probes = 0
            while drawn < samples && probes < Self.shardCount * 2 {
                probes += 1
                let index = Int.random(in: 0..<Self.shardCount, using: &generator)
                let shard = shards[index]
                shard.lock.lock()
                if let candidate = shard.keyspace.evictionCandidate(samples: 1, using: &generator) {
                    drawn += 1
                    if best == nil || candidate.lastAccessUnixMs < best!.lastAccessUnixMs {
                        let stamp = shard.keyspace.entry(at: candidate.slot).valueStamp
                        best = (index, candidate.slot, candidate.lastAccessUnixMs, stamp)
                    }
                }
                shard.lock.unlock()
            }
            guard let chosen = best ?? evictableSlotByScanning(using: &generator) else { return false }
            // Between the draw and now another loop may have changed the key: evict only if the
            // slot still holds the same version with the same access time; otherwise draw again.
            let shard = shards[chosen.shard]
            shard.lock.lock()
            if shard.keyspace.isOccupied(chosen.slot) {
                let entry = shard.keyspace.entry(at: chosen.slot)
                if entry.valueStamp == chosen.stamp && entry.lastAccessUnixMs == chosen.lastAccessUnixMs {
                    shard.keyspace.evict(slot: chosen.slot)
                    shard.publishUsedBytes()
                    if durableUrgency[Int(entry.namespaceIndex)] != nil {
                        // Only the memory copy went: later misses here must ask the disk.
                        shard.evictedDurableKeys = true
                        shard.mayHaveDiskOnlyKeys.store(true, ordering: .relaxed)
                        diskOnlyKeysPossible.store(true, ordering: .relaxed)
                    }
                }
            }
            shard.lock.unlock()
        }
        return true
    }

    /// An evictable key found by visiting every shard: the fallback when random draws found
    /// none (few shards hold evictable keys), and the proof that none exists.
    private func evictableSlotByScanning<G: RandomNumberGenerator>(
        using generator: inout G
    ) -> (shard: Int, slot: Int, lastAccessUnixMs: Int64, stamp: LWWStamp)? {
        for index in 0..<Self.shardCount {
            let shard = shards[index]
            shard.lock.lock()
            defer { shard.lock.unlock() }
            if let candidate = shard.keyspace.evictionCandidate(samples: 1, using: &generator) {
                return (index, candidate.slot, candidate.lastAccessUnixMs, shard.keyspace.entry(at: candidate.slot).valueStamp)
            }
        }
        return nil
    }

    // MARK: Active expiry

    /// One pass of active expiry over every shard: samples keys with a TTL and removes the
    /// expired ones, repeating on a shard while many of its samples were expired, within
    /// `expiryPassTimeBudgetNs`. Returns how many keys it removed.
    ///
    /// A pass resumes at the shard where the previous one ran out of time, and no shard gets
    /// more than `expiryRoundsPerShardMax` rounds per pass, so one shard full of short-lived
    /// keys cannot keep the others from being reaped.
    public func activeExpirePass<G: RandomNumberGenerator>(
        nowUnixMs: Int64, monotonicNs: () -> UInt64, using generator: inout G
    ) -> Int {
        let deadline = monotonicNs() + Self.expiryPassTimeBudgetNs
        let start = expiryCursor.load(ordering: .relaxed)
        var removed = 0
        for offset in 0..<Self.shardCount {
            let index = (start + offset) & (Self.shardCount - 1)
            let shard = shards[index]
            var rounds = 0
            var repeatShard = true
            while repeatShard && rounds < Self.expiryRoundsPerShardMax {
                rounds += 1
                shard.lock.lock()
                let round = shard.keyspace.expireSample(
                    nowUnixMs: nowUnixMs, samples: Self.expirySamplesPerRound, using: &generator)
                if shard.keyspace.hasKeyChanges { drainKeyChanges(of: shard, nowUnixMs: nowUnixMs) }
                shard.publishUsedBytes()
                shard.lock.unlock()
                removed += round.expired
                repeatShard = round.sampled > 0 && round.expired * 100 > round.sampled * Self.expiryRepeatPercent
                if monotonicNs() > deadline {
                    expiryCursor.store((index + 1) & (Self.shardCount - 1), ordering: .relaxed)
                    return removed
                }
            }
        }
        statistics.activeExpiryCycles.add(1, ordering: .relaxed)
        return removed
    }

    // MARK: Whole keyspace

    /// Removes every key of every shard, atomically: all shard locks are held together (in
    /// ascending order), so no multi-key write can land half before and half after. Durable
    /// records go too: the clear is queued while the locks are held, so it is ordered after
    /// every earlier write and before every later one. Returns the clear's sequence (0 when
    /// nothing is on disk), which the caller waits for before it replies.
    @discardableResult
    public func removeAll() -> UInt64 {
        for shard in shards { shard.lock.lock() }
        var sequence: UInt64 = 0
        for shard in shards {
            shard.keyspace.removeAll()
            shard.publishUsedBytes()
            shard.evictedDurableKeys = false
            shard.mayHaveDiskOnlyKeys.store(false, ordering: .relaxed)
        }
        if let storage {
            sequence = storage.enqueueClear()
            diskOnlyKeysPossible.store(false, ordering: .relaxed)
        }
        for shard in shards.reversed() { shard.lock.unlock() }
        return sequence
    }

    /// Number of keys (including expired keys not reaped yet, as Redis's DBSIZE).
    public var keyCount: Int {
        var total = 0
        for shard in shards {
            shard.lock.lock()
            total += shard.keyspace.count
            shard.lock.unlock()
        }
        return total
    }

    /// Counters of every namespace, summed over shards.
    public func namespaceCounters() -> [NamespaceCounters] {
        var totals = Array(repeating: NamespaceCounters(), count: namespaces.namespaces.count)
        for shard in shards {
            shard.lock.lock()
            for (index, counters) in shard.keyspace.namespaceCounters.enumerated() {
                totals[index].add(counters)
            }
            shard.lock.unlock()
        }
        return totals
    }
}

extension Database {
    /// Runs `body` on the keyspace of `key`'s shard with its lock held, then publishes the
    /// shard's memory use.
    @inline(__always)
    public func withShard<R>(of key: ByteBuffer, _ body: (inout Keyspace) -> R) -> R {
        withShard(index: shardIndex(of: key), body)
    }

    /// Runs `body` on one shard's keyspace with its lock held, then publishes its memory use.
    @inline(__always)
    public func withShard<R>(index: Int, _ body: (inout Keyspace) -> R) -> R {
        let shard = shards[index]
        shard.lock.lock()
        defer { shard.lock.unlock() }
        let result = body(&shard.keyspace)
        if shard.keyspace.hasKeyChanges { drainKeyChanges(of: shard, nowUnixMs: SystemClock.nowUnixMs()) }
        shard.publishUsedBytes()
        return result
    }

    /// Locks the shards of several keys in ascending order (so two multi-key commands cannot
    /// deadlock), runs `body` with a function from key to its shard, and publishes memory use.
    public func withShards<R>(of keys: [ByteBuffer], _ body: (_ shardOf: (ByteBuffer) -> Shard) -> R) -> R {
        let indexes = Array(Set(keys.map { shardIndex(of: $0) })).sorted()
        for index in indexes { shards[index].lock.lock() }
        let result = body { self.shards[self.shardIndex(of: $0)] }
        let now = SystemClock.nowUnixMs()
        for index in indexes.reversed() {
            if shards[index].keyspace.hasKeyChanges { drainKeyChanges(of: shards[index], nowUnixMs: now) }
            shards[index].publishUsedBytes()
            shards[index].lock.unlock()
        }
        return result
    }

    /// Hands the shard's logged changes on as the keys' current states: to the storage engine
    /// (durable namespaces) and, for local writes (`fromPeer: false`), to the outbound log of
    /// deltas (replicated namespaces). Called with the shard's lock held, so both receive
    /// states in memory's order.
    func drainKeyChanges(of shard: Shard, nowUnixMs: Int64, fromPeer: Bool = false) {
        let changes = shard.keyspace.takeKeyChanges()
        guard storage != nil || replicator != nil || clusterPartitionCount != nil else { return }
        let nowNs = SystemClock.monotonicNs()
        // Several changes to one key in one locked section: the last one speaks for all, so walk
        // from the end and skip keys already handled (linear, whatever MSET's size; no set is
        // built for the usual single change).
        var handled: Set<[UInt8]>? = changes.count > 1 ? Set(minimumCapacity: changes.count) : nil
        for change in changes.reversed() {
            if handled != nil && !handled!.insert(change.key).inserted { continue }
            let namespace = Int(change.namespaceIndex)
            let slot = shard.keyspace.slot(ofBytes: change.key)
            // Replication first: a delete's tombstone gets its stamp here, and the disk keeps the same.
            var tombstone: DurableRecord?
            if let replicator, replicatedNamespaces[namespace] {
                if fromPeer {
                    if slot == nil, change.kind == .deleted {
                        tombstone = shard.keyspace.tombstones[change.key]?.record
                    }
                } else if let delta = shard.keyspace.localDelta(key: change.key, kind: change.kind, replacedDot: change.replacedDot, deleteStamp: { stamp(nowUnixMs: nowUnixMs) }) {
                    replicator.appendLocal(key: change.key, previousDot: delta.previousDot) { dot in
                        shard.keyspace.recordLocalDot(dot, of: delta, key: change.key)
                    }
                    if delta.slot == nil { tombstone = shard.keyspace.tombstones[change.key]?.record }
                }
            } else if clusterPartitionCount != nil, !fromPeer,
                      let delta = shard.keyspace.localDelta(key: change.key, kind: change.kind, replacedDot: change.replacedDot, deleteStamp: { stamp(nowUnixMs: nowUnixMs) }) {
                // Not shipped to other data centers, but the DC's other replicas merge this
                // record: a delete needs its own stamp (the dead state so far is the removed
                // value's), and a plain write over a counter resets it (as `localDelta` does).
                if delta.slot == nil {
                    shard.keyspace.recordTombstone(key: change.key, stamp: delta.record.valueStamp, dot: nil)
                    tombstone = shard.keyspace.tombstones[change.key]?.record
                }
            }
            guard let storage, var urgency = durableUrgency[namespace] else { continue }
            if slot == nil && change.kind == .deleted && tombstone == nil {
                // The delete's state: its dead state when replication keeps one, else a tombstone
                // stamped now (for the disk with peers, for the audit log always).
                tombstone = shard.keyspace.tombstones[change.key]?.record
                    ?? ((keepsTombstones || auditedNamespaces[namespace]) ? DurableRecord.tombstone(stamp: stamp(nowUnixMs: nowUnixMs)) : nil)
            }
            if auditedNamespaces[namespace], change.kind != .expired,
               let audited = slot.map({ DurableRecord(shard.keyspace.entry(at: $0)) }) ?? tombstone {
                appendAudit(.change(key: change.key, record: audited, fromPeer: fromPeer), nowUnixMs: nowUnixMs, urgency: urgency, storage: storage)
            }
            let state: StorageEngine.State
            if let slot {
                state = .register(DurableRecord(shard.keyspace.entry(at: slot)))
            } else {
                switch change.kind {
                case .deleted:
                    if keepsTombstones {
                        state = .register(tombstone ?? DurableRecord.tombstone(stamp: stamp(nowUnixMs: nowUnixMs)))
                    } else {
                        state = .absent
                    }
                case .expired:
                    // Every replica expires the key alike and a reload skips it: no hurry.
                    state = .absent
                    urgency = .lazy
                case .written:
                    // Written, then removed without a log entry (not possible today: eviction
                    // runs in its own locked section). The removal is what memory holds.
                    state = .absent
                }
            }
            storage.enqueue(key: change.key, state: state, urgency: urgency, nowNs: nowNs)
        }
    }
}

// MARK: Audit log (docs/AUDIT.md)

/// One entry of the audit log: a change to a key of an audited namespace, as this node applied
/// it (a local write, or a state merged from another data center), or a conflict it resolved.
public enum AuditEntry: Equatable, Sendable {
    case change(key: [UInt8], record: DurableRecord, fromPeer: Bool)
    case conflict(key: [UInt8], winner: LWWStamp, loser: LWWStamp, loserDigest: [UInt8], detectedUnixMs: Int64)

    /// The log's key prefix.
    public static let prefix = UInt8(ascii: "a")
    static let formatVersion: UInt8 = 1

    /// Bits of a position below the millisecond: `position = unix ms << 20 | n`.
    public static let positionShift: UInt64 = 20

    /// Key: `a` and the entry's position, big-endian (so the log is in position order and
    /// retention trims a prefix).
    public static func key(position: UInt64) -> [UInt8] {
        var key: [UInt8] = [prefix]
        for shift in stride(from: 56, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: position >> UInt64(shift))) }
        return key
    }

    /// The position of a log key.
    public static func position(ofKey key: [UInt8]) -> UInt64? {
        guard key.count == 9, key[0] == prefix else { return nil }
        return key[1...8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// The first position recorded at or after `unixMs`.
    public static func firstPosition(atUnixMs unixMs: Int64) -> UInt64 {
        UInt64(max(0, min(unixMs, Int64(UInt64.max >> positionShift)))) << positionShift
    }

    /// The next position after `last` for an entry recorded at `nowUnixMs`: the time's first
    /// position, or one past `last` when that is not beyond it (many entries in one
    /// millisecond, or a clock that stepped back).
    public static func nextPosition(after last: UInt64, nowUnixMs: Int64) -> UInt64 {
        max(last + 1, firstPosition(atUnixMs: nowUnixMs))
    }

    /// The length of `encoded()`, without encoding.
    public var encodedByteCount: Int {
        switch self {
        case .change(let key, let record, _): return 4 + key.count + record.encodedByteCount
        case .conflict(let key, _, _, _, _): return 4 + key.count + 24 + 1 + 32 + 8
        }
    }

    /// Value: version (1), kind (1: change from this node, 2: change from a peer, 3: conflict),
    /// key length (2, little-endian), key, then a `DurableRecord` (changes) or the two stamps
    /// (8 + 4 each), a digest flag and the 32-byte SHA-256 of the losing value, and the
    /// detection time (8) (conflicts).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [Self.formatVersion]
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        switch self {
        case .change(let key, let record, let fromPeer):
            bytes.append(fromPeer ? 2 : 1)
            append(UInt16(key.count))
            bytes += key
            bytes += record.encoded()
        case .conflict(let key, let winner, let loser, let digest, let detected):
            bytes.append(3)
            append(UInt16(key.count))
            bytes += key
            for stamp in [winner, loser] {
                append(stamp.timestamp.rawValue)
                append(stamp.origin.datacenter)
                append(stamp.origin.node)
            }
            bytes.append(digest.count == 32 ? 1 : 0)
            bytes += digest.count == 32 ? digest : [UInt8](repeating: 0, count: 32)
            append(detected)
        }
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(DurableRecordError) {
        func read<T: FixedWidthInteger>(_: T.Type, at offset: Int) throws(DurableRecordError) -> T {
            let size = MemoryLayout<T>.size
            guard bytes.count >= offset + size else { throw .truncated(byteCount: bytes.count) }
            var value: T = 0
            for index in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index) }
            return value
        }
        guard bytes.count >= 4, bytes[0] == Self.formatVersion else { throw .unknownVersion(bytes.first ?? 0) }
        let keyLength = Int(try read(UInt16.self, at: 2))
        guard bytes.count >= 4 + keyLength else { throw .truncated(byteCount: bytes.count) }
        let key = Array(bytes[4..<(4 + keyLength)])
        let rest = 4 + keyLength
        switch bytes[1] {
        case 1, 2:
            self = .change(key: key, record: try DurableRecord(decoding: Array(bytes[rest...])), fromPeer: bytes[1] == 2)
        case 3:
            func stamp(at offset: Int) throws(DurableRecordError) -> LWWStamp {
                LWWStamp(timestamp: HLCTimestamp(rawValue: try read(UInt64.self, at: offset)),
                         origin: ReplicaID(datacenter: try read(UInt16.self, at: offset + 8), node: try read(UInt16.self, at: offset + 10)))
            }
            let winner = try stamp(at: rest)
            let loser = try stamp(at: rest + 12)
            guard bytes.count == rest + 24 + 1 + 32 + 8 else { throw .lengthMismatch(declared: keyLength, byteCount: bytes.count) }
            let digest = bytes[rest + 24] == 1 ? Array(bytes[(rest + 25)..<(rest + 57)]) : []
            self = .conflict(key: key, winner: winner, loser: loser, loserDigest: digest, detectedUnixMs: Int64(bitPattern: try read(UInt64.self, at: rest + 57)))
        default:
            throw .unknownFlags(bytes[1])
        }
    }
}

extension Database {
    /// Whether `key`'s changes go to the audit log.
    func isAudited(_ key: [UInt8]) -> Bool {
        auditedNamespaces[key.withUnsafeBytes { namespaces.index(of: $0) }]
    }

    /// Queues an audit entry with the urgency of the change it records (so it reaches the disk
    /// in the same flush as, or before, the record).
    func appendAudit(_ entry: AuditEntry, nowUnixMs: Int64, urgency: StorageEngine.Urgency, storage: StorageEngine) {
        let valueBytes = entry.encodedByteCount
        auditLogTail.withLock { tail in
            tail.position = AuditEntry.nextPosition(after: tail.position, nowUnixMs: nowUnixMs)
            tail.storageSequence = storage.appendLog(key: AuditEntry.key(position: tail.position), valueBytes: valueBytes, urgency: urgency) {
                entry.encoded()
            }
        }
        auditAppends.add(1, ordering: .relaxed)
        auditAppendedBytes.add(9 + valueBytes, ordering: .relaxed)
    }

    /// Records a conflict this node resolved, when its key is audited.
    func recordAuditConflict(_ conflict: Replicator.ConflictRecord) {
        guard let storage, isAudited(conflict.key) else { return }
        appendAudit(.conflict(key: conflict.key, winner: conflict.winner, loser: conflict.loser, loserDigest: conflict.loserDigest,
                              detectedUnixMs: conflict.recordedUnixMs), nowUnixMs: conflict.recordedUnixMs, urgency: .lazy, storage: storage)
    }

    /// Drops audit entries older than the retention (the longest of the audited namespaces').
    func trimAuditLog(nowUnixMs: Int64) {
        guard let storage, auditRetentionMs > 0 else { return }
        let cutoff = auditRetainedFrom(nowUnixMs: nowUnixMs)
        auditTrimmedBefore.store(cutoff, ordering: .releasing)
        storage.trimLog(from: [AuditEntry.prefix], to: AuditEntry.key(position: cutoff))
    }

    /// Moves an audit log written before positions existed (keys `a` + Unix ms + a per-run
    /// counter, 17 bytes) to positions, in its order: all such keys sort before every position
    /// key, so they are read from the start, given `nextPosition` of their millisecond, and
    /// removed with one range delete once the copies are queued. Runs once, at start.
    static func migrateLegacyAuditKeys(storage: StorageEngine) {
        let legacyEnd: [UInt8] = [AuditEntry.prefix, 1]  // positions of any time after 1972 start above
        var start: [UInt8] = [AuditEntry.prefix]
        var last: UInt64 = 0
        var moved = 0
        while let batch = try? storage.scanLog(from: start, to: legacyEnd, limit: 4_096), let final = batch.last {
            for (key, value) in batch where key.count == 17 {
                let ms = Int64(bitPattern: key[1...8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
                last = AuditEntry.nextPosition(after: last, nowUnixMs: ms)
                storage.appendLog(key: AuditEntry.key(position: last), valueBytes: value.count, urgency: .lazy) { value }
                moved += 1
            }
            start = final.key + [0]
        }
        guard moved > 0 else { return }
        storage.trimLog(from: [AuditEntry.prefix], to: legacyEnd)
        let sequence = storage.flushNow()
        while storage.durableSequence.load(ordering: .acquiring) < sequence && storage.statisticsSnapshot().failure == nil { usleep(1_000) }
    }

    /// The first position retention keeps.
    func auditRetainedFrom(nowUnixMs: Int64) -> UInt64 {
        AuditEntry.firstPosition(atUnixMs: nowUnixMs - auditRetentionMs)
    }

    /// Up to `limit` audit entries with positions after `after` and up to `through`, in order.
    /// Entries that do not decode are returned as failures (with their position), not skipped:
    /// an export must not silently leave a change out.
    /// A key that is not a position is an error too (nothing is skipped, so a short result
    /// means the range is read to its end).
    public func auditEntries(after: UInt64, through: UInt64 = .max, limit: Int) throws(StorageError)
        -> [(position: UInt64, entry: Result<AuditEntry, DurableRecordError>)]
    {
        guard let storage, after < through else { return [] }
        let end = through == .max ? [AuditEntry.prefix + 1] : AuditEntry.key(position: through + 1)
        var result: [(position: UInt64, entry: Result<AuditEntry, DurableRecordError>)] = []
        for (key, value) in try storage.scanLog(from: AuditEntry.key(position: after + 1), to: end, limit: limit) {
            guard let position = AuditEntry.position(ofKey: key) else {
                throw .read(reason: "an audit log key of \(key.count) bytes after position \(after) is not a position")
            }
            do throws(DurableRecordError) {
                result.append((position, .success(try AuditEntry(decoding: value))))
            } catch {
                result.append((position, .failure(error)))
            }
        }
        return result
    }

    /// The position of the last audit entry recorded so far, once it and every entry before
    /// it are on disk (so a read up to it misses nothing, and every later entry has a larger
    /// position, also after a restart: the tail restarts from the last key on disk). Blocks
    /// until the storage engine has written them, on its own schedule (within the write-back
    /// window, or a second for conflicts), so that exports started back to back never force
    /// flushes on a write-back namespace; nil when that takes longer than
    /// `auditSettleTimeoutSeconds` (a failing disk). Call off the event loops.
    public func auditLogSettledTail() -> UInt64? {
        let tail = auditLogTail.withLock { $0 }
        guard let storage, storage.durableSequence.load(ordering: .acquiring) < tail.storageSequence else { return tail.position }
        let flushed = ConditionLock(value: false)
        let waiting = storage.whenDurable(tail.storageSequence) {
            flushed.lock()
            flushed.unlock(withValue: true)
        }
        if waiting {
            guard flushed.lock(whenValue: true, timeoutSeconds: Self.auditSettleTimeoutSeconds) else { return nil }
            flushed.unlock()
        }
        return tail.position
    }

    /// How long an export waits for the audit log's queued entries to reach the disk.
    public static let auditSettleTimeoutSeconds = 30.0
}

/// The audit log's last position and the storage sequence that covers it.
struct AuditLogTail: Sendable {
    var position: UInt64
    var storageSequence: UInt64
}
