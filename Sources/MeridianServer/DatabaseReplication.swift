import MeridianCore
import MeridianWire

/// A delta stamped further ahead of this node's clock than `max_clock_offset` allows
/// (docs/REPLICATION.md, invariant 5): the batch is refused, not applied.
public struct ClockBoundError: Error, CustomStringConvertible {
    public var stampMs: UInt64
    public var nowUnixMs: Int64
    public var boundMs: Int64

    public var description: String {
        "a delta is stamped \(Int64(stampMs) - nowUnixMs) ms ahead of this node's clock (max_clock_offset \(boundMs) ms)"
    }
}

/// Merging what other data centers send (docs/REPLICATION.md): deltas and snapshot states go
/// through `Keyspace.mergeRemote` under their shard's lock; what changed reaches the disk like
/// a command's change, and is not shipped again.
extension Database {
    /// What applying a batch did.
    struct RemoteApply {
        var applied = 0
        var skipped = 0
        var conflicts: [Replicator.ConflictRecord] = []
        /// Per applied delta: now minus its write's wall-clock time, in microseconds.
        var lagMicroseconds: [UInt64] = []
    }

    /// Checks every stamp of `states` against the clock bound, then moves this node's clock
    /// past the newest (invariant 6), so later local writes are stamped above what arrived.
    func observeRemoteStamps(_ states: [Delta.State], nowUnixMs: Int64, maxClockOffsetMs: Int64) throws(ClockBoundError) {
        var newest = HLCTimestamp.zero
        for state in states {
            switch state {
            case .register(let record):
                newest = max(newest, record.valueStamp.timestamp, record.expiryStamp.timestamp)
            case .counter(let counter):
                newest = max(newest, counter.resetStamp.timestamp)
            }
        }
        if Int64(newest.physicalMs) > nowUnixMs + maxClockOffsetMs {
            throw ClockBoundError(stampMs: newest.physicalMs, nowUnixMs: nowUnixMs, boundMs: maxClockOffsetMs)
        }
        observe(newest)
    }

    /// Keys of `states` that may be on disk but not in memory (a durable namespace, in a shard
    /// warm-up has not finished or eviction thinned): they must be loaded before a merge, or
    /// an older incoming state could overwrite a newer record on disk.
    func keysToLoadBeforeMerging(_ keys: [[UInt8]]) -> [[UInt8]] {
        guard storage != nil, diskOnlyKeysPossible.load(ordering: .relaxed) else { return [] }
        var missing: [[UInt8]] = []
        for key in keys {
            let namespace = key.withUnsafeBytes { namespaces.index(of: $0) }
            guard durableUrgency[namespace] != nil else { continue }
            let shard = shards[shardIndex(ofBytes: key)]
            guard shard.mayHaveDiskOnlyKeys.load(ordering: .relaxed) else { continue }
            shard.lock.lock()
            let present = shard.keyspace.slot(ofBytes: key) != nil || shard.keyspace.tombstones[key] != nil
            shard.lock.unlock()
            if !present { missing.append(key) }
        }
        return missing
    }

    /// Merges a peer's deltas (dots already applied here are skipped) and reports what happened.
    func applyRemote(deltas: [Delta], replicator: Replicator, nowUnixMs: Int64) -> RemoteApply {
        var result = RemoteApply()
        var appliedDots: [Dot] = []
        appliedDots.reserveCapacity(deltas.count)
        for delta in deltas {
            if replicator.isApplied(delta.dot) {
                result.skipped += 1
                continue
            }
            guard case .register(let record) = delta.state else {
                // Counters travel as registers of their decimal value for now (see docs/REPLICATION.md, "Status").
                appliedDots.append(delta.dot)
                continue
            }
            if let conflict = merge(key: delta.key, record: record, dot: delta.dot, previousDot: delta.previousDot, nowUnixMs: nowUnixMs) {
                result.conflicts.append(conflict)
            }
            appliedDots.append(delta.dot)
            result.applied += 1
            let writtenMs = Int64(Replicator.physicalMs(of: delta.state))
            result.lagMicroseconds.append(UInt64(max(0, nowUnixMs - writtenMs)) * 1000)
        }
        replicator.recordApplied(appliedDots)
        return result
    }

    /// What a node of a data center of several nodes replicates to its owners out of a peer data
    /// center's states (docs/CLUSTER.md, "Cross-DC shipping with many nodes per DC"): the records
    /// of keys in eventual, replicated namespaces — what `merge` would take — each with its
    /// namespace's `write_acks`.
    func recordsForOwners(_ states: [(key: [UInt8], state: Delta.State)]) -> [(key: [UInt8], record: DurableRecord, acks: AckCount)] {
        states.compactMap { key, state in
            guard case .register(let record) = state else { return nil }
            let namespace = key.withUnsafeBytes { namespaces.index(of: $0) }
            guard replicatedNamespaces[namespace], !key.withUnsafeBytes({ namespaces.isStrong($0, namespaceIndex: namespace) }) else { return nil }
            return (key, record, namespaces.namespaces[namespace].writeAcks)
        }
    }

    /// Merges a chunk of a peer's snapshot (no conflicts are counted: a snapshot says what a
    /// data center holds, not which write came first).
    func applyRemote(snapshot states: [SnapshotState], nowUnixMs: Int64) -> Int {
        var applied = 0
        for state in states {
            guard case .register(let record) = state.state else { continue }
            _ = merge(key: state.key, record: record, dot: state.dot, previousDot: nil, nowUnixMs: nowUnixMs, countConflicts: false)
            applied += 1
        }
        return applied
    }

    /// Merges one key's incoming state under its shard's lock; returns the conflict, if any.
    private func merge(
        key: [UInt8], record: DurableRecord, dot: Dot?, previousDot: Dot?, nowUnixMs: Int64, countConflicts: Bool = true
    ) -> Replicator.ConflictRecord? {
        let namespace = key.withUnsafeBytes { namespaces.index(of: $0) }
        // Only eventual namespaces replicate this way; strong keys are the Paxos issue's.
        guard replicatedNamespaces[namespace], !key.withUnsafeBytes({ namespaces.isStrong($0, namespaceIndex: namespace) }) else { return nil }
        let shard = shards[shardIndex(ofBytes: key)]
        shard.lock.lock()
        let merged = shard.keyspace.mergeRemote(
            key: key, record: record, dot: dot, previousDot: previousDot, namespaceIndex: namespace, nowUnixMs: nowUnixMs)
        if shard.keyspace.hasKeyChanges { drainKeyChanges(of: shard, nowUnixMs: nowUnixMs, fromPeer: true) }
        shard.publishUsedBytes()
        shard.lock.unlock()
        guard countConflicts, merged.relation == .concurrent, let winner = merged.winnerStamp, let loser = merged.loserStamp else { return nil }
        return Replicator.ConflictRecord(
            key: key, winner: winner, loser: loser,
            loserDigest: merged.loserValue.map { SHA256.digest($0) } ?? [], recordedUnixMs: nowUnixMs)
    }

    /// The states of one shard's replicated keys (live keys and tombstones), for a snapshot.
    /// One step of a snapshot of shard `index`: up to `limit` live keys of replicated
    /// namespaces from slot `from` on, and where to continue (nil: the shard's live keys are
    /// done). The shard's lock is held for one step only.
    func snapshotStates(shard index: Int, fromSlot from: Int, limit: Int) -> (states: [SnapshotState], next: Int?) {
        let shard = shards[index]
        shard.lock.lock()
        let step = shard.keyspace.replicatedStates(fromSlot: from, limit: limit)
        shard.lock.unlock()
        let states = step.states.filter { replicatedNamespaces[$0.namespaceIndex] }
            .map { SnapshotState(key: $0.key, dot: $0.record.dot, state: .register($0.record)) }
        return (states, step.next)
    }

    /// The dead states of shard `index` in replicated namespaces (the last step of a shard's
    /// snapshot; between data centers of one node they are collected within seconds once peers
    /// acknowledge, so there are few; a data center of several nodes beside others keeps them).
    func snapshotDeadStates(shard index: Int) -> [SnapshotState] {
        let shard = shards[index]
        shard.lock.lock()
        let dead = shard.keyspace.tombstones
        shard.lock.unlock()
        return dead.compactMap { key, tombstone in
            replicatedNamespaces[key.withUnsafeBytes { namespaces.index(of: $0) }]
                ? SnapshotState(key: key, dot: tombstone.dot, state: .register(tombstone.record)) : nil
        }
    }

    /// Drops tombstones every full data center has seen (invariant 7), in memory and on disk.
    /// Returns how many went.
    @discardableResult
    func collectTombstones(replicator: Replicator) -> Int {
        let everywhere = replicator.tombstoneHorizon()
        return dropDeadStates { $0.isCovered(by: everywhere) }
    }

    /// Drops the dead states of a data center of several nodes that died before `cutoffUnixMs`
    /// (docs/CLUSTER.md, "Collecting dead states"): deleted (the delete's stamp) or expired (the
    /// expiry) that long ago. Every replica collects by the same rule from the same record, so
    /// their trees agree again once each passed the cutoff. A dead counter's record stays: its
    /// contributions are what a later increment's merge at a replica that has not collected yet
    /// is measured against (a collected one would restart at 1 here and merge to the old total
    /// there). Returns how many went.
    @discardableResult
    public func collectDeadStates(diedBeforeUnixMs cutoffUnixMs: Int64) -> Int {
        dropDeadStates { tombstone in
            let record = tombstone.record
            guard record.counter == nil else { return false }
            // An expired key's record died at its expiry; a deleted one when it was last written.
            return max(record.lastWrittenUnixMs, record.value != nil ? record.expiryUnixMs : 0) < cutoffUnixMs
        }
    }

    /// Drops the dead states `isCollectable` picks, in memory and (durable namespaces) on disk.
    private func dropDeadStates(where isCollectable: (Keyspace.Tombstone) -> Bool) -> Int {
        let nowNs = SystemClock.monotonicNs()
        var dropped = 0
        for shard in shards {
            shard.lock.lock()
            if !shard.keyspace.tombstones.isEmpty {
                let keys = shard.keyspace.dropTombstones(where: isCollectable)
                dropped += keys.count
                if let storage {
                    for key in keys {
                        let namespace = key.withUnsafeBytes { namespaces.index(of: $0) }
                        if durableUrgency[namespace] != nil, shard.keyspace.slot(ofBytes: key) == nil {
                            storage.enqueue(key: key, state: .absent, urgency: .lazy, nowNs: nowNs)
                        }
                    }
                }
            }
            shard.lock.unlock()
        }
        return dropped
    }

    /// Dead states held (deleted and expired keys waiting to be collected: by the tombstone
    /// horizon, or by age in a data center of several nodes) and the bytes they take; not part
    /// of `used_memory`.
    public func deadStates() -> (count: Int, bytes: Int) {
        var count = 0
        var bytes = 0
        for shard in shards {
            shard.lock.lock()
            count += shard.keyspace.tombstones.count
            bytes += shard.keyspace.tombstoneBytes
            shard.lock.unlock()
        }
        return (count, bytes)
    }

    /// Moves the clock that stamps local writes past `timestamp` (never back).
    func observe(_ timestamp: HLCTimestamp) {
        var last = lastTimestampValue
        while last < timestamp.rawValue {
            let (exchanged, original) = compareExchangeLastTimestamp(expected: last, desired: timestamp.rawValue)
            if exchanged { return }
            last = original
        }
    }
}
