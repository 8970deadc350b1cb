import MeridianCore
import MeridianWire
import NIOConcurrencyHelpers
import Synchronization

/// This node's side of eventual replication between data centers (docs/REPLICATION.md): its
/// outbound log of deltas, its version vector, what each peer data center acknowledged, and
/// the counters `INFO replication` reports. Commands append deltas here while they hold their
/// shard's lock (`Database.drainKeyChanges`); peer links read what to send and report acks.
///
/// Lock order: a shard's lock, then this lock. Nothing here takes a shard lock.
public final class Replicator: @unchecked Sendable {
    /// Per peer data center, for INFO.
    public struct PeerCounters: Sendable {
        public var deltasSent = 0
        public var deltasApplied = 0
        public var bytesRaw = 0
        public var bytesWire = 0
        public var conflicts = 0
        public var batchesRefused = 0
        public var snapshotsSent = 0
        public var snapshotsApplied = 0
        /// Delivery lag of applied deltas (now minus the write's HLC time), in microseconds.
        public var applyLag = LatencyHistogram()
    }

    /// A concurrent write that lost, kept for the audit export (docs/REPLICATION.md, "Conflicts").
    public struct ConflictRecord: Sendable, Equatable {
        public var key: [UInt8]
        public var winner: LWWStamp
        public var loser: LWWStamp
        /// SHA-256 of the losing value (empty for a tombstone).
        public var loserDigest: [UInt8]
        public var recordedUnixMs: Int64
    }

    /// Conflicts kept in memory (oldest dropped first); the audit log keeps those of audited
    /// namespaces on disk (docs/AUDIT.md).
    public static let conflictsKeptMax = 10_000

    struct State {
        var log: OutboundLog
        var versionVector = VersionVector()
        var counters: [String: PeerCounters]
        var conflicts: [ConflictRecord] = []
        var conflictsStart = 0
        var horizon: TombstoneHorizon
    }

    /// Something that streams this node's deltas to one peer and must hear of new ones.
    final class Stream: Sendable {
        let scheduled = Atomic<Bool>(false)
        let wake: @Sendable () -> Void

        init(wake: @escaping @Sendable () -> Void) { self.wake = wake }
    }

    public let me: ReplicaID
    /// Names of the other full data centers, which receive this node's stream.
    public let peerDatacenters: [String]
    public let maxClockOffsetMs: Int64
    private let lock = NIOLock()
    private var state: State
    private let streams = NIOLockedValueBox<[ObjectIdentifier: Stream]>([:])
    /// Read without the lock on the write path: whether any stream listens.
    private let streamCount = Atomic<Int>(0)

    /// `firstSequence`: the sequence this run's dots start after. A restarted node must never
    /// reuse a dot of an earlier run, so the caller passes something above every earlier run's
    /// dots (`Replicator.startingSequence`); peers then catch up from a snapshot.
    public init(
        me: ReplicaID, peerDatacenters: [String], peerNodes: [ReplicaID], logBytesMax: Int,
        maxClockOffsetMs: Int64, firstSequence: UInt64
    ) {
        self.me = me
        self.peerDatacenters = peerDatacenters
        self.maxClockOffsetMs = maxClockOffsetMs
        var vector = VersionVector()
        vector.advance(me, to: firstSequence)
        state = State(
            log: OutboundLog(origin: me, peers: peerDatacenters, lastSequence: firstSequence, retainedBytesMax: logBytesMax),
            versionVector: vector,
            counters: Dictionary(uniqueKeysWithValues: peerDatacenters.map { ($0, PeerCounters()) }),
            horizon: TombstoneHorizon(peers: peerNodes))
    }

    /// Where a run's dots start: the wall clock in milliseconds shifted left by 20 bits, so a
    /// restart gets sequences above every earlier run's (unless a run made more than a million
    /// writes per millisecond of its life, or the clock went back across the restart).
    public static func startingSequence(nowUnixMs: Int64) -> UInt64 {
        UInt64(max(1, nowUnixMs)) << 20
    }

    // MARK: Local writes

    /// Appends the delta of a local write (called with the key's shard lock held, so deltas
    /// of one key enter the log in the order the writes happened) and returns its dot.
    /// `recording` puts the dot on the key (with the shard lock held) and returns the state to
    /// ship; it runs under this lock, so dots enter the log in the order they are given.
    @discardableResult
    func appendLocal(key: [UInt8], previousDot: Dot?, recording: (Dot) -> DurableRecord) -> Dot {
        lock.lock()
        let dot = state.log.nextDot
        let delta = Delta(dot: dot, previousDot: previousDot, key: key, state: .register(recording(dot)))
        state.log.append(delta, bytes: DeltaBatch.rawBytes(of: delta))
        state.versionVector.advance(me, to: dot.sequence)
        lock.unlock()
        if streamCount.load(ordering: .relaxed) > 0 { wakeStreams() }
        return dot
    }

    private func wakeStreams() {
        for stream in streams.withLockedValue({ Array($0.values) }) {
            if stream.scheduled.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
                stream.wake()
            }
        }
    }

    func register(_ stream: Stream) {
        streams.withLockedValue { $0[ObjectIdentifier(stream)] = stream }
        streamCount.add(1, ordering: .relaxed)
    }

    func unregister(_ stream: Stream) {
        if streams.withLockedValue({ $0.removeValue(forKey: ObjectIdentifier(stream)) }) != nil {
            streamCount.subtract(1, ordering: .relaxed)
        }
    }

    // MARK: Sending

    /// What to send `peer` after `sequence` (see `OutboundLog.nextSend`). `snapshotOnlyTheGap`:
    /// a snapshot covers only what the log no longer holds, and the retained deltas follow it —
    /// for a node of a data center of several nodes, whose keyspace holds only the partitions it
    /// owns now: deltas it retains of partitions it gave up since would not be in a snapshot.
    func nextSend(to peer: String, after sequence: UInt64, maxBytes: Int, snapshotOnlyTheGap: Bool = false) -> OutboundLog.Send {
        lock.withLock {
            let send = state.log.nextSend(after: sequence, maxDeltas: 65_536, maxBytes: maxBytes)
            if snapshotOnlyTheGap, case .snapshot = send { return .snapshot(through: state.log.oldestRetained - 1) }
            return send
        }
    }

    var lastSequence: UInt64 { lock.withLock { state.log.lastSequence } }

    /// A link to `node` (of data center `peer`) came up, the peer saying it has `vector`:
    /// its acknowledgements start over (it may have restarted and lost what it had), and a
    /// peer holding dots of this node above the last one issued (this node's clock went back
    /// across a restart) makes this node's stream jump past them.
    func linkEstablished(peer: String, node: ReplicaID, vector: VersionVector) -> (jumped: Bool, sequence: UInt64) {
        lock.withLock {
            state.horizon.reset(peer: node)
            state.log.peerRestarted(peer, through: vector[me])
            var jumped = false
            if vector[me] > state.log.lastSequence {
                state.log.jump(to: vector[me] + (1 << 20))
                state.versionVector.advance(me, to: state.log.lastSequence)
                jumped = true
            }
            state.log.acknowledge(peer: peer, through: vector[me])
            state.horizon.record(peer: node, vector: vector)
            return (jumped, state.log.lastSequence)
        }
    }

    /// Records a peer's acknowledgement (its whole vector): the peer data center `peer`, whose
    /// node `node` sent it.
    func acknowledge(peer: String, node: ReplicaID, vector: VersionVector) {
        lock.withLock {
            state.log.acknowledge(peer: peer, through: vector[me])
            state.horizon.record(peer: node, vector: vector)
        }
    }

    func count(peer: String, _ change: (inout PeerCounters) -> Void) {
        lock.withLock {
            if state.counters[peer] != nil { change(&state.counters[peer]!) }
        }
    }

    // MARK: Receiving

    /// This node's version vector (what it has applied, its own writes included).
    public var versionVector: VersionVector { lock.withLock { state.versionVector } }

    /// Which of `dots` are not applied yet (a duplicate batch after a reconnection is skipped).
    func isApplied(_ dot: Dot) -> Bool { lock.withLock { state.versionVector.covers(dot) } }

    /// Records applied dots (each advances the vector only if it is the next of its origin).
    func recordApplied(_ dots: [Dot]) {
        lock.withLock {
            for dot in dots { state.versionVector.record(dot) }
        }
    }

    /// Records that a snapshot of `origin`'s state through `sequence` was applied.
    func recordSnapshot(origin: ReplicaID, through sequence: UInt64) {
        lock.withLock { state.versionVector.advance(origin, to: sequence) }
    }

    func recordConflict(_ conflict: ConflictRecord) {
        lock.withLock {
            state.conflicts.append(conflict)
            if state.conflicts.count - state.conflictsStart > Self.conflictsKeptMax { state.conflictsStart += 1 }
            if state.conflictsStart > 1024 && state.conflictsStart * 2 > state.conflicts.count {
                state.conflicts.removeFirst(state.conflictsStart)
                state.conflictsStart = 0
            }
        }
    }

    /// The conflicts kept, oldest first.
    public var conflicts: [ConflictRecord] { lock.withLock { Array(state.conflicts[state.conflictsStart...]) } }

    // MARK: Tombstone GC

    /// The dots whose tombstones may go (`TombstoneHorizon`): every full data center has seen
    /// them, and every write concurrent with them has arrived here.
    func tombstoneHorizon() -> VersionVector {
        lock.withLock { state.horizon.horizon(local: state.versionVector) }
    }

    // MARK: INFO

    public struct PeerReport: Sendable {
        public var counters: PeerCounters
        public var acknowledged: UInt64
        public var oldestUnacknowledgedPhysicalMs: UInt64?
        /// The peer needs deltas the log no longer holds: it gets (or is getting) a snapshot.
        public var needsSnapshot: Bool
    }

    /// Counters and acknowledgement state of `peer`.
    public func report(peer: String) -> PeerReport? {
        lock.withLock {
            guard let counters = state.counters[peer], let acknowledged = state.log.acknowledged[peer] else { return nil }
            var oldest: UInt64?
            var needsSnapshot = false
            switch state.log.nextSend(after: acknowledged, maxDeltas: 1, maxBytes: 1) {
            case .deltas(let deltas): oldest = deltas.first.map { Self.physicalMs(of: $0.state) }
            case .snapshot:
                needsSnapshot = true
                if case .deltas(let deltas) = state.log.nextSend(after: state.log.oldestRetained - 1, maxDeltas: 1, maxBytes: 1) {
                    oldest = deltas.first.map { Self.physicalMs(of: $0.state) }
                }
            case .upToDate: break
            }
            return PeerReport(counters: counters, acknowledged: acknowledged, oldestUnacknowledgedPhysicalMs: oldest, needsSnapshot: needsSnapshot)
        }
    }

    public var retainedDeltas: (count: Int, bytes: Int) { lock.withLock { (state.log.retainedCount, state.log.retainedBytes) } }

    /// The wall-clock time a delta's state was written (its newest stamp).
    static func physicalMs(of deltaState: Delta.State) -> UInt64 {
        switch deltaState {
        case .register(let record): return max(record.valueStamp.timestamp.physicalMs, record.expiryStamp.timestamp.physicalMs)
        case .counter(let counter): return counter.resetStamp.timestamp.physicalMs
        }
    }
}
