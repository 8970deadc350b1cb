import MeridianCore

/// One node's settings for the data center's replication (the `cluster` section).
public struct ClusterSettings: Sendable, Equatable {
    public var failureDetection = FailureDetectionSettings()
    /// A replica that has not acknowledged a write after this long gets a hint, and unanswered
    /// requests are sent again this often.
    public var replicaTimeoutMs: Int64 = 500
    /// A client's command fails (with "maybe applied" for writes) after this long.
    public var requestTimeoutMs: Int64 = 2_000
    /// One full anti-entropy pass over the partitions this node leads, spread evenly.
    public var antiEntropyIntervalMs: Int64 = 600_000
    /// Entries one anti-entropy message carries at most; the rest follow on the next pass.
    public var antiEntropyEntriesMax = 1_024
    public var hintsBytesMax = 256 << 20
    /// Hints offered per target per replay round (every 100 ms) at most; each waits for its ack.
    public var hintReplaysPerRound = 64
    /// Entries per move chunk, and chunks sent per stream per tick.
    public var moveChunkEntries = 256
    public var moveChunksPerTick = 4
    /// Partitions one node streams in at once (moves and rebuilds together); the others wait
    /// their turn. Without a bound, a node joining a loaded data center asks for every
    /// partition at once and its sources send them all in the same few ticks.
    public var movesInFlightMax = 8
    /// Key and value bytes one anti-entropy or move message carries at most (besides one entry
    /// of any size): with values up to 1 MiB, a message stays within a 2 MiB peer frame.
    public var entriesBytesMax = 1 << 20
    /// A stream with no progress for this long is requested again from where it stopped.
    public var moveRetryMs: Int64 = 1_000
    /// How long a node keeps a partition it no longer owns (in-flight reads at the old epoch).
    public var graceMs: Int64 = 5_000
    /// How often a node asks for the committed placement even when nothing told it to.
    public var placementRefreshMs: Int64 = 1_000

    public init() {}
}

/// What a client's command ended with.
public enum ClusterClientResult: Sendable, Equatable {
    /// The write reached `write_acks` replicas of every set that counts.
    case written(LWWStamp)
    /// The newest state among `read_acks` replicas (`nil`: none holds the key).
    case read(ReplicaState?)
    /// Not acknowledged in time: a write may still be applied (it reached some replicas, which
    /// spread it by hints and anti-entropy), a read simply failed.
    case timedOut
}

/// What a step asks the shell (or the simulator) to do.
public enum ClusterOutput: Sendable, Equatable {
    /// Make this change of `ClusterDurableState` durable (`ClusterDurableState.apply` is what
    /// it means). The shell makes every `persist` of a batch (one `takeOutputs()`) as durable as
    /// the namespace asks before it carries out any `send` or `reply` of that batch.
    case persist(ClusterPersist)
    case send(to: Int, ClusterMessage)
    case reply(client: UInt64, ClusterClientResult)
    /// Read the committed placement and hand it to `learn(_:)`.
    case fetchPlacement
    /// Commit `Placement.switching(partitions:changeEpoch:)`: this node caught up on them.
    case proposeSwitch(partitions: [Int], changeEpoch: UInt64)
}

/// One change to what survives a restart, as the node returns it for the shell to store.
public enum ClusterPersist: Sendable, Equatable {
    /// The key's state as this node now holds it (after a merge).
    case record(partition: Int, key: [UInt8], ReplicaState)
    /// The node no longer holds the partition.
    case dropPartition(Int)
    /// A hint stored (with its id).
    case hintStored(HintStore.Hint)
    /// A hint gone: replayed, replaced by a newer one, dropped for the bound, or discarded.
    case hintRemoved(UInt64)
    /// A committed placement learned.
    case placement(Placement)
    /// The largest stamp the node issued or took in.
    case lastStamp(HLCTimestamp)
    /// A partition rebuilt after lost data (or brought whole by a move).
    case rebuilt(Int)
}

/// What survives a restart: the shell keeps it on disk, the simulator in memory.
public struct ClusterDurableState<Store: ReplicaStore>: Sendable, Equatable {
    public var store: Store
    public var hints: HintStore
    public var placement: Placement
    /// The largest stamp this node issued, so that its clock never issues a smaller one.
    public var lastStamp: HLCTimestamp = .zero
    /// Partitions whose contents this node cannot vouch for: it lost its data (a new disk, a
    /// wiped data directory) after acknowledging writes. While it owns such a partition it
    /// answers no reads of it and serves no move streams of it; it takes writes, and streams
    /// the partition from every other owner (docs/CLUSTER.md, "Rebuilding a replica that lost
    /// its data"). A partition leaves the set when those streams ended, or when a move into
    /// this node collected its quorum of streams.
    public var rebuilding: Set<Int> = []

    /// `lostData`: the node held partitions before and lost them (the shell knows: its data
    /// directory is new but the committed placement already lists it); every partition it
    /// owns, or comes to own, must be rebuilt before it answers reads.
    public init(store: Store, placement: Placement, hintsBytesMax: Int, lostData: Bool = false) {
        self.store = store
        self.placement = placement
        self.hints = HintStore(bytesMax: hintsBytesMax)
        if lostData { rebuilding = Set(0..<placement.partitionCount) }
    }

    /// Applies one persisted change, as the shell's store (or the simulator's disk) does: a
    /// state built from the node's `persist` outputs alone equals the node's own.
    public mutating func apply(_ change: ClusterPersist) {
        switch change {
        case .record(let partition, let key, let state): store.merge(key: key, state: state, partition: partition)
        case .dropPartition(let partition): store.drop(partition: partition)
        case .hintStored(let hint): hints.restore(hint)
        case .hintRemoved(let id): hints.remove(id: id)
        case .placement(let next): placement = next
        case .lastStamp(let stamp): lastStamp = max(lastStamp, stamp)
        case .rebuilt(let partition): rebuilding.remove(partition)
        }
    }

    /// Whether the two hold the same data (hint statistics aside: they are counters, not state).
    public func holdsTheSame(as other: ClusterDurableState<Store>) -> Bool {
        store == other.store && hints.hints == other.hints.hints && placement == other.placement
            && lastStamp == other.lastStamp && rebuilding == other.rebuilding
    }
}

extension ClusterDurableState where Store == MemoryReplicaStore {
    /// A state whose replicas live in memory (the simulator, the unit tests).
    public init(placement: Placement, hintsBytesMax: Int, lostData: Bool = false) {
        self.init(store: MemoryReplicaStore(), placement: placement, hintsBytesMax: hintsBytesMax, lostData: lostData)
    }
}

/// Counters for INFO and the simulator.
public struct ClusterStats: Sendable, Equatable {
    public var writesAcknowledged: UInt64 = 0
    public var writesTimedOut: UInt64 = 0
    public var readsAnswered: UInt64 = 0
    public var readRepairs: UInt64 = 0
    public var hintsStored: UInt64 = 0
    public var hintsReplayed: UInt64 = 0
    /// Hints whose target no longer owns the partition (the write's quorum holds it).
    public var hintsDiscarded: UInt64 = 0
    public var antiEntropyEntriesSent: UInt64 = 0
    public var antiEntropyRepairs: UInt64 = 0
    public var moveEntriesReceived: UInt64 = 0
    public var movedEpochAnswers: UInt64 = 0
    public var partitionsDropped: UInt64 = 0
    /// Partitions rebuilt from every other owner after this node lost its data.
    public var partitionsRebuilt: UInt64 = 0

    public init() {}
}

/// One node of a data center (docs/CLUSTER.md): the coordinator of client commands, a replica
/// of its partitions, a SWIM member, a hint keeper, an anti-entropy peer and a move endpoint.
///
/// Deterministic: time and randomness come in, `outputs` go out. **Order of duties: persist
/// before send.** Every change to `durable` comes out as a `.persist` output; the shell makes
/// every `persist` of a batch (one `takeOutputs()`) as durable as the namespace asks before it
/// carries out any `send` or `reply` of that batch — an ack or a `written` reply promises the
/// write is stored.
public struct ClusterNode<Store: ReplicaStore>: Sendable {
    public let id: Int
    /// Who this node is in write stamps: its data center and node index in the configuration
    /// (the same `ReplicaID` its cross-DC deltas carry), so stamps tie-break the same way in
    /// every data center.
    public let origin: ReplicaID
    public let settings: ClusterSettings
    public private(set) var durable: ClusterDurableState<Store>
    public private(set) var stats = ClusterStats()
    /// Everything the steps since the last `takeOutputs()` produced, in order.
    public private(set) var outputs: [ClusterOutput] = []

    private var membership: SWIMMembership
    private var clock: HybridLogicalClock
    private let partitioner: Partitioner
    /// Request numbers start from the incarnation, so that a late answer to the previous run's
    /// request can never be taken for an answer to this run's.
    private var nextRequest: UInt64
    /// The highest placement epoch a peer's message named: while this node's placement is
    /// behind it, it drops no partition (a newer epoch may give it back).
    private var highestEpochSeen: UInt64
    private var writes: [UInt64: PendingWrite] = [:]
    private var reads: [UInt64: PendingRead] = [:]
    /// Hint replays in flight: request → hint id.
    private var replays: [UInt64: (hint: UInt64, target: Int, sentAtMs: Int64)] = [:]
    /// Streams this node receives, per partition and source.
    private var incoming: [Int: IncomingMove] = [:]
    /// Streams this node sends.
    private var outgoing: [OutgoingMove] = []
    private var placementLearnedAtMs: Int64
    private var nextPlacementRefreshMs: Int64
    private var nextAntiEntropyMs: Int64
    private var antiEntropyCursor = 0
    /// The epoch whose replica sets the standing hints were last checked against.
    private var hintsCheckedEpoch: UInt64 = 0
    private var nextHintReplayMs: Int64 = 0
    private var nextOwnershipCheckMs: Int64 = 0
    /// After a restart that lost data, no stream is asked for before this time (nil once
    /// passed): see `init`.
    private var streamsHeldUntilMs: Int64?
    /// Whether partitions wait for a free place among `movesInFlightMax`.
    private var movesWaiting = false

    struct PendingWrite {
        var client: UInt64?
        var partition: Int
        var key: [UInt8]
        var state: ReplicaState
        var acks: AckCount
        var epoch: UInt64
        var targets: [Int]
        var groups: [[Int]]
        var acked: Set<Int> = []
        var hinted: Set<Int> = []
        var replied = false
        var startedAtMs: Int64
        var sentAtMs: Int64
    }

    struct PendingRead {
        var client: UInt64
        var partition: Int
        var key: [UInt8]
        var acks: AckCount
        var epoch: UInt64
        var targets: [Int]
        var answers: [Int: ReplicaState?] = [:]
        var startedAtMs: Int64
        var sentAtMs: Int64
    }

    /// A partition streamed in: a move into this node (`changeEpoch` is the change's), or a
    /// rebuild after lost data (`changeEpoch` 0, every other owner a source and needed).
    struct IncomingMove {
        var changeEpoch: UInt64
        var sources: [Int]
        var after: [Int: [UInt8]?] = [:]
        /// The stream number of the latest request to each source: a chunk of an earlier request
        /// (a stream replaced after a stall, or one asked for before this node restarted) is
        /// refused, so chunks of one stream never continue another.
        var stream: [Int: UInt64] = [:]
        var finished: Set<Int> = []
        var progressAtMs: [Int: Int64] = [:]
        var proposed = false
        /// When the last chunk arrived (or the move started): a move with nothing for a while
        /// (a source down) gives up its place among `movesInFlightMax` and keeps asking.
        var lastChunkAtMs: Int64 = 0

        var isRebuild: Bool { changeEpoch == 0 }
    }

    struct OutgoingMove {
        var partition: Int
        var to: Int
        var changeEpoch: UInt64
        var stream: UInt64
        var after: [UInt8]?
    }

    /// A node starting (or restarting) from `durable`. `incarnation` must grow across restarts
    /// (the start time will do): it is how the node refutes the others' belief that it is down.
    public init(
        id: Int, origin: ReplicaID, durable: ClusterDurableState<Store>, settings: ClusterSettings, nowMs: Int64, incarnation: UInt64
    ) {
        self.id = id
        self.origin = origin
        self.nextRequest = (incarnation & 0x0000_0FFF_FFFF_FFFF) << 20 | 1
        self.highestEpochSeen = durable.placement.epoch
        self.settings = settings
        self.durable = durable
        self.partitioner = Partitioner(partitionCount: durable.placement.partitionCount)
        self.clock = HybridLogicalClock(last: durable.lastStamp)
        self.membership = SWIMMembership(
            me: id, members: durable.placement.memberIDs, settings: settings.failureDetection, incarnation: incarnation, nowMs: nowMs)
        self.placementLearnedAtMs = nowMs
        self.nextPlacementRefreshMs = nowMs
        self.nextAntiEntropyMs = nowMs + settings.antiEntropyIntervalMs / Int64(max(1, durable.placement.partitionCount))
        // A coordinator may still count an ack this node sent before it lost its data, and
        // reply `written` once another owner acks — up to the client's deadline. A stream that
        // starts after every such deadline passed finds those writes on the owners that acked
        // them; one that starts earlier may pass the key before they arrive. So a node that lost
        // data waits out one request timeout (and one replica timeout of slack) before it asks
        // for any stream (rebuild or move).
        self.streamsHeldUntilMs = durable.rebuilding.isEmpty ? nil : nowMs + settings.requestTimeoutMs + settings.replicaTimeoutMs
        startIncomingMoves(nowMs: nowMs)
    }

    public var placement: Placement { durable.placement }

    /// Hands out and clears what the steps produced.
    public mutating func takeOutputs() -> [ClusterOutput] {
        defer { outputs.removeAll(keepingCapacity: true) }
        return outputs
    }

    /// What SWIM believes about `member`.
    public func liveness(of member: Int) -> MemberLiveness {
        member == id ? .alive : membership.liveness(of: member)
    }

    /// The partition of a key (Redis Cluster's CRC16 with hash tags).
    public func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { partitioner.partition(of: $0) }
    }

    // MARK: Forwarded commands (docs/CLUSTER.md, "Forwarding")

    /// The partition's primary as this node sees it: the first owner, in placement order, that
    /// SWIM believes alive, skipping this node while it rebuilds the partition (it cannot read
    /// it). nil when no owner is alive: a command for the partition waits (`CommandForwarder`).
    public func primary(of partition: Int) -> Int? {
        placement.owners(of: partition).first { owner in
            owner == id ? !durable.rebuilding.contains(partition) : membership.liveness(of: owner) == .alive
        }
    }

    /// Whether this node refuses a command forwarded to it for `partition` by a coordinator that
    /// routed by placement `epoch`: nil — run it — while this node owns the partition (when the
    /// coordinator's placement is newer, `.fetchPlacement` comes out too); otherwise the answer
    /// to send, "moved" with this node's epoch (nothing ran). Two nodes that both run commands
    /// for one partition (SWIM views differing for a moment) merge their records as concurrent
    /// writes do.
    public mutating func refusesForwarded(partition: Int, epoch: UInt64) -> CommandOutcome? {
        guard partition >= 0, partition < placement.partitionCount, placement.owners(of: partition).contains(id) else {
            if epoch > placement.epoch { sawEpoch(epoch) }
            return .movedEpoch(placement.epoch)
        }
        if epoch > placement.epoch { sawEpoch(epoch) }
        return nil
    }

    // MARK: Client commands (this node coordinates)

    /// A client's write (`value == nil` deletes). The reply comes as `.reply(client:)`.
    public mutating func write(client: UInt64, key: [UInt8], value: [UInt8]?, acks: AckCount, nowMs: Int64) {
        let stamp = LWWStamp(
            timestamp: clock.now(physicalMs: UInt64(max(0, nowMs))), origin: origin)
        durable.lastStamp = stamp.timestamp
        outputs.append(.persist(.lastStamp(stamp.timestamp)))
        // A write sets the value and clears the expiry, with one stamp for both fields.
        coordinateWrite(client: client, key: key, state: .written(value, stamp: stamp), acks: acks, nowMs: nowMs)
    }

    /// Replicates a record the caller produced (the partition's primary after it executed a
    /// command on its keyspace, docs/CLUSTER.md "The server wiring"): stamped by the caller,
    /// merged here first, and answered like `write`. This node's clock takes in its stamps.
    public mutating func replicate(client: UInt64, key: [UInt8], record: ReplicaState, acks: AckCount, nowMs: Int64) {
        observe(record, nowMs: nowMs)
        coordinateWrite(client: client, key: key, state: record, acks: acks, nowMs: nowMs)
    }

    /// Discards the hints `isStale` picks (the shell's age limit, docs/CLUSTER.md "Collecting
    /// dead states": a hint older than the dead states' grace could bring back a key whose
    /// delete its target held and collected). The write's own quorum holds what they carried.
    public mutating func discardHints(where isStale: (HintStore.Hint) -> Bool) {
        for id in durable.hints.ids(where: isStale) {
            durable.hints.remove(id: id)
            outputs.append(.persist(.hintRemoved(id)))
            stats.hintsDiscarded += 1
        }
    }

    /// A client's read of one key.
    public mutating func read(client: UInt64, key: [UInt8], acks: AckCount, nowMs: Int64) {
        let partition = partition(of: key)
        let request = takeRequestNumber()
        var pending = PendingRead(
            client: client, partition: partition, key: key, acks: acks, epoch: placement.epoch,
            targets: placement.owners(of: partition), startedAtMs: nowMs, sentAtMs: nowMs)
        sendRead(&pending, request: request)
        reads[request] = pending
        finishReadIfAnswered(request)
    }

    private mutating func coordinateWrite(client: UInt64?, key: [UInt8], state: ReplicaState, acks: AckCount, nowMs: Int64) {
        let partition = partition(of: key)
        let request = takeRequestNumber()
        var pending = PendingWrite(
            client: client, partition: partition, key: key, state: state, acks: acks, epoch: placement.epoch,
            targets: placement.writeTargets(of: partition), groups: placement.ackGroups(of: partition),
            startedAtMs: nowMs, sentAtMs: nowMs)
        sendWrite(&pending, request: request)
        writes[request] = pending
        finishWriteIfAcknowledged(request)
    }

    private mutating func sendWrite(_ pending: inout PendingWrite, request: UInt64) {
        for target in pending.targets where !pending.acked.contains(target) {
            if target == id {
                storeMerge(key: pending.key, state: pending.state, partition: pending.partition)
                pending.acked.insert(id)
            } else if membership.liveness(of: target) == .down {
                hint(&pending, target: target)
            } else {
                outputs.append(.send(to: target, .replicate(
                    epoch: pending.epoch, request: request, partition: pending.partition, key: pending.key,
                    state: pending.state, hinted: false)))
            }
        }
    }

    private mutating func hint(_ pending: inout PendingWrite, target: Int) {
        guard !pending.hinted.contains(target) else { return }
        pending.hinted.insert(target)
        let (stored, removed) = durable.hints.add(target: target, partition: pending.partition, key: pending.key, state: pending.state)
        for id in removed { outputs.append(.persist(.hintRemoved(id))) }
        if let stored { outputs.append(.persist(.hintStored(stored))) }
        stats.hintsStored += 1
    }

    private mutating func finishWriteIfAcknowledged(_ request: UInt64) {
        guard var pending = writes[request] else { return }
        if !pending.replied, pending.groups.allSatisfy({ group in
            group.filter { pending.acked.contains($0) }.count >= pending.acks.required(of: group.count)
        }) {
            pending.replied = true
            if let client = pending.client {
                outputs.append(.reply(client: client, .written(pending.state.valueStamp)))
                stats.writesAcknowledged += 1
            }
        }
        // Done once every target acknowledged or has a hint standing in for it.
        if pending.replied, pending.targets.allSatisfy({ pending.acked.contains($0) || pending.hinted.contains($0) }) {
            writes[request] = nil
        } else {
            writes[request] = pending
        }
    }

    private mutating func sendRead(_ pending: inout PendingRead, request: UInt64) {
        for target in pending.targets where pending.answers[target] == nil {
            if target == id {
                // A replica rebuilding the partition cannot vouch for its copy: the others answer.
                if !durable.rebuilding.contains(pending.partition) {
                    pending.answers[id] = .some(durable.store.state(of: pending.key, partition: pending.partition))
                }
            } else if membership.liveness(of: target) != .down {
                outputs.append(.send(to: target, .read(
                    epoch: pending.epoch, request: request, partition: pending.partition, key: pending.key)))
            }
        }
    }

    private mutating func finishReadIfAnswered(_ request: UInt64) {
        guard let pending = reads[request] else { return }
        guard pending.answers.count >= pending.acks.required(of: pending.targets.count) else { return }
        reads[request] = nil
        // The field-wise merge of every answer: the newest value and the newest expiry.
        var newest: ReplicaState? = nil
        for case let state? in pending.answers.values {
            newest = newest.map { $0.merged(with: state) } ?? state
        }
        outputs.append(.reply(client: pending.client, .read(newest)))
        stats.readsAnswered += 1
        // Read repair: every replica that answered with something older gets the merge.
        guard let newest else { return }
        for target in pending.answers.keys.sorted() where pending.answers[target]! != newest {
            stats.readRepairs += 1
            if target == id {
                storeMerge(key: pending.key, state: newest, partition: pending.partition)
            } else {
                outputs.append(.send(to: target, .replicate(
                    epoch: placement.epoch, request: 0, partition: pending.partition, key: pending.key,
                    state: newest, hinted: false)))
            }
        }
    }

    // MARK: Messages

    /// Handles one message from another node of the data center.
    public mutating func receive(_ message: ClusterMessage, from sender: Int, nowMs: Int64) {
        switch message {
        case .swim(let swim):
            for send in membership.receive(swim, from: sender, nowMs: nowMs) {
                outputs.append(.send(to: send.to, .swim(send.message)))
            }
        case .replicate(let epoch, let request, let partition, let key, let state, _):
            guard partition >= 0, partition < placement.partitionCount, self.partition(of: key) == partition else { return }
            if epoch < placement.epoch && request != 0 {
                stats.movedEpochAnswers += 1
                outputs.append(.send(to: sender, .movedEpoch(request: request, epoch: placement.epoch)))
                return
            }
            if epoch > placement.epoch { sawEpoch(epoch) }
            merge(key: key, state: state, partition: partition, nowMs: nowMs)
            if request != 0 { outputs.append(.send(to: sender, .replicateAck(request: request))) }
        case .replicateAck(let request):
            if let replay = replays[request] {
                guard replay.target == sender else { return }
                replays[request] = nil
                if durable.hints.remove(id: replay.hint) {
                    outputs.append(.persist(.hintRemoved(replay.hint)))
                    stats.hintsReplayed += 1
                }
            } else if var pending = writes[request], pending.targets.contains(sender) {
                pending.acked.insert(sender)
                writes[request] = pending
                finishWriteIfAcknowledged(request)
            }
        case .read(let epoch, let request, let partition, let key):
            guard partition >= 0, partition < placement.partitionCount, self.partition(of: key) == partition else { return }
            if epoch < placement.epoch {
                stats.movedEpochAnswers += 1
                outputs.append(.send(to: sender, .movedEpoch(request: request, epoch: placement.epoch)))
                return
            }
            if epoch > placement.epoch { sawEpoch(epoch) }
            // Rebuilding: silence, so the coordinator counts only replicas that hold their data.
            guard !durable.rebuilding.contains(partition) else { return }
            outputs.append(.send(to: sender, .readReply(request: request, state: durable.store.state(of: key, partition: partition))))
        case .readReply(let request, let state):
            guard var pending = reads[request], pending.targets.contains(sender) else { return }
            if let state { observe(state, nowMs: nowMs) }
            pending.answers[sender] = .some(state)
            reads[request] = pending
            finishReadIfAnswered(request)
        case .movedEpoch(_, let epoch):
            // The request is retried on the new placement once it is learned (`learn`).
            if epoch > placement.epoch { sawEpoch(epoch) }
        case .antiEntropyDigests(let partition, let level, let nodes, let digests):
            answerDigests(partition: partition, level: level, nodes: nodes, digests: digests, to: sender)
        case .antiEntropyStamps(let partition, let leaves, let stamps):
            compareStamps(partition: partition, leaves: leaves, stamps: stamps, from: sender)
        case .command, .commandReply, .placementFetch, .placement, .placementChange, .placementChangeReply, .placementLog:
            // Forwarded commands and the placement log are the shell's (its `CommandForwarder`,
            // its executor, its placement voters); a placement arrives through `learn`.
            break
        case .antiEntropyEntries(let partition, let entries, let wanted):
            mergeEntries(partition: partition, entries: entries, wanted: wanted, from: sender, nowMs: nowMs)
        case .moveRequest(let partition, let changeEpoch, let stream, let after):
            guard partition >= 0, partition < placement.partitionCount else { return }
            if changeEpoch == 0 {
                // A rebuild: an owner that lost its data asks every other owner for its copy.
                // Any owner serves, even one rebuilding too: the requester needs every other
                // owner's copy, so whatever survives anywhere reaches it.
                guard placement.owners(of: partition).contains(id), placement.owners(of: partition).contains(sender) else { return }
                if outgoing.contains(where: { $0.partition == partition && $0.to == sender && $0.stream >= stream }) { return }
                outgoing.removeAll { $0.partition == partition && $0.to == sender }
                outgoing.append(OutgoingMove(partition: partition, to: sender, changeEpoch: 0, stream: stream, after: after))
                return
            }
            // A move counts on a quorum of full copies: a source rebuilding the partition stays
            // silent and the requester asks another.
            guard !durable.rebuilding.contains(partition) else { return }
            // Stream only once this node knows the move: from then on it refuses writes at older
            // epochs, so every write it takes after the stream passed a key is a dual write that
            // reaches the new replica too. A source behind fetches the placement; the requester
            // asks again.
            guard placement.isChanging, placement.changeEpoch == changeEpoch else {
                if changeEpoch > placement.epoch { sawEpoch(changeEpoch) }
                return
            }
            // A fresh request replaces a stream in progress (the requester saw no progress); an
            // older one (duplicated or overtaken on the way) is ignored: stream numbers grow.
            if outgoing.contains(where: { $0.partition == partition && $0.to == sender && $0.stream >= stream }) { return }
            outgoing.removeAll { $0.partition == partition && $0.to == sender }
            outgoing.append(OutgoingMove(partition: partition, to: sender, changeEpoch: changeEpoch, stream: stream, after: after))
        case .moveChunk(let partition, let changeEpoch, let stream, let after, let entries, let last):
            receiveChunk(
                partition: partition, changeEpoch: changeEpoch, stream: stream, after: after, entries: entries, last: last,
                from: sender, nowMs: nowMs)
        }
    }

    // MARK: Placement

    /// A committed placement (what a placement voter applied). Older epochs are
    /// ignored. Requests in flight are re-addressed to the new replica sets (their acks from
    /// replicas that stay in the set still count: the write is stored there).
    public mutating func learn(_ next: Placement, nowMs: Int64) {
        guard next.epoch > placement.epoch else { return }
        durable.placement = next
        outputs.append(.persist(.placement(next)))
        placementLearnedAtMs = nowMs
        membership.setMembers(next.memberIDs, nowMs: nowMs)
        for request in writes.keys.sorted() {
            guard var pending = writes[request] else { continue }
            pending.epoch = next.epoch
            pending.targets = next.writeTargets(of: pending.partition)
            pending.groups = next.ackGroups(of: pending.partition)
            pending.acked.formIntersection(pending.targets)
            pending.hinted.formIntersection(pending.targets)
            pending.sentAtMs = nowMs
            sendWrite(&pending, request: request)
            writes[request] = pending
            finishWriteIfAcknowledged(request)
        }
        for request in reads.keys.sorted() {
            guard var pending = reads[request] else { continue }
            pending.epoch = next.epoch
            pending.targets = next.owners(of: pending.partition)
            pending.answers = pending.answers.filter { pending.targets.contains($0.key) }
            pending.sentAtMs = nowMs
            sendRead(&pending, request: request)
            reads[request] = pending
            finishReadIfAnswered(request)
        }
        startIncomingMoves(nowMs: nowMs)
    }

    /// Starts streaming every partition that this node enters in the current change, and every
    /// partition it owns but must rebuild.
    private mutating func startIncomingMoves(nowMs: Int64) {
        if let until = streamsHeldUntilMs {
            guard nowMs >= until else { return }
            streamsHeldUntilMs = nil
        }
        incoming = incoming.filter { partition, move in
            move.isRebuild
                ? rebuildSources(of: partition).map { $0 == move.sources } ?? false
                : placement.isMoving(partition) && move.changeEpoch == placement.changeEpoch
        }
        movesWaiting = false
        var streaming = streamsInFlight(nowMs: nowMs)
        for partition in durable.rebuilding.sorted() where incoming[partition] == nil {
            guard let sources = rebuildSources(of: partition) else { continue }
            guard streaming < settings.movesInFlightMax else {
                movesWaiting = true
                return
            }
            streaming += 1
            var rebuild = IncomingMove(changeEpoch: 0, sources: sources)
            rebuild.lastChunkAtMs = nowMs
            for source in sources { requestStream(&rebuild, partition: partition, from: source, nowMs: nowMs) }
            incoming[partition] = rebuild
            finishRebuildIfComplete(partition)
        }
        guard placement.isChanging else { return }
        for partition in placement.changingPartitions where placement.isMoving(partition) {
            let sources = placement.previousReplicas(of: partition)
            guard placement.nextReplicas(of: partition).contains(id), !sources.contains(id), incoming[partition] == nil else { continue }
            guard streaming < settings.movesInFlightMax else {
                movesWaiting = true
                return
            }
            streaming += 1
            var move = IncomingMove(changeEpoch: placement.changeEpoch, sources: sources)
            move.lastChunkAtMs = nowMs
            // A quorum of sources is enough; live ones first. Another is asked when one stalls.
            let ordered = sources.filter { liveness(of: $0) != .down } + sources.filter { liveness(of: $0) == .down }
            for source in ordered.prefix(AckCount.quorum.required(of: sources.count)) {
                requestStream(&move, partition: partition, from: source, nowMs: nowMs)
            }
            incoming[partition] = move
        }
    }

    /// Moves and rebuilds that hold a place among `movesInFlightMax`: those still streaming —
    /// not those whose switch is asked for, nor those that got no chunk for three `move_retry`
    /// periods (a source down: they keep asking, and the partitions behind them start).
    private func streamsInFlight(nowMs: Int64) -> Int {
        incoming.values.reduce(0) { count, move in
            count + (!move.proposed && nowMs - move.lastChunkAtMs < 3 * settings.moveRetryMs ? 1 : 0)
        }
    }

    /// The other owners a rebuild of `partition` streams from, or nil when this node does not
    /// own it (a move brings it, if ever).
    private func rebuildSources(of partition: Int) -> [Int]? {
        let owners = placement.owners(of: partition)
        guard owners.contains(id) else { return nil }
        return owners.filter { $0 != id }
    }

    /// A rebuild is complete once every other owner's stream ended: an acknowledged write is on
    /// `write_acks` owners, so on at least one other owner unless every copy was on this node.
    private mutating func finishRebuildIfComplete(_ partition: Int) {
        guard let rebuild = incoming[partition], rebuild.isRebuild, rebuild.finished.count == rebuild.sources.count else { return }
        incoming[partition] = nil
        durable.rebuilding.remove(partition)
        outputs.append(.persist(.rebuilt(partition)))
        stats.partitionsRebuilt += 1
    }

    private mutating func requestStream(_ move: inout IncomingMove, partition: Int, from source: Int, nowMs: Int64) {
        move.after[source] = .some(nil)
        askAgain(&move, partition: partition, from: source, nowMs: nowMs)
    }

    /// Asks `source` for the partition from where its stream got to, under a new stream number.
    private mutating func askAgain(_ move: inout IncomingMove, partition: Int, from source: Int, nowMs: Int64) {
        let stream = takeRequestNumber()
        move.stream[source] = stream
        move.progressAtMs[source] = nowMs
        outputs.append(.send(to: source, .moveRequest(
            partition: partition, changeEpoch: move.changeEpoch, stream: stream, after: move.after[source] ?? nil)))
    }

    private mutating func receiveChunk(
        partition: Int, changeEpoch: UInt64, stream: UInt64, after: [UInt8]?, entries: [ReplicaEntry], last: Bool,
        from source: Int, nowMs: Int64
    ) {
        guard var move = incoming[partition], move.changeEpoch == changeEpoch, move.sources.contains(source),
              move.stream[source] == stream,
              !move.finished.contains(source), let expected = move.after[source], expected == after else { return }
        // A key of another partition is a sender's bug: the chunk is refused whole.
        guard entries.allSatisfy({ self.partition(of: $0.key) == partition }) else { return }
        for entry in entries {
            merge(key: entry.key, state: entry.state, partition: partition, nowMs: nowMs)
        }
        stats.moveEntriesReceived += UInt64(entries.count)
        move.after[source] = .some(entries.last?.key ?? after)
        move.progressAtMs[source] = nowMs
        move.lastChunkAtMs = nowMs
        if last { move.finished.insert(source) }
        incoming[partition] = move
        finishRebuildIfComplete(partition)
    }

    // MARK: Anti-entropy

    private mutating func answerDigests(partition: Int, level: Int, nodes: [Int], digests: [Digest128], to peer: Int) {
        guard partition >= 0, partition < placement.partitionCount, level >= 0, level <= PartitionDigest.leafLevel,
              nodes.count == digests.count, nodes.count <= PartitionDigest.leafCount else { return }
        let mine = durable.store.digest(of: partition)
        let width = PartitionDigest.width(of: level)
        let differing = zip(nodes, digests).filter { $0.0 >= 0 && $0.0 < width && mine.digest(level: level, index: $0.0) != $0.1 }.map(\.0)
        guard !differing.isEmpty else { return }
        if level == PartitionDigest.leafLevel {
            // The stamps of whole leaves only, as many as the message bounds allow (at least
            // one): the peer compares what it holds in exactly those leaves, so a leaf sent in
            // part would make the keys left out look missing. The leaves left out differ again
            // next pass.
            let byLeaf = durable.store.entriesByLeaf(of: partition, leaves: differing)
            var leaves: [Int] = []
            var stamps: [KeyStamps] = []
            var bytes = 0
            for leaf in differing {
                let more = (byLeaf[leaf] ?? []).map(KeyStamps.init)
                let moreBytes = more.reduce(0) { $0 + $1.approximateBytes }
                if !leaves.isEmpty && (stamps.count + more.count > settings.antiEntropyEntriesMax || bytes + moreBytes > settings.entriesBytesMax) {
                    break
                }
                leaves.append(leaf)
                stamps += more
                bytes += moreBytes
            }
            outputs.append(.send(to: peer, .antiEntropyStamps(partition: partition, leaves: leaves, stamps: stamps)))
        } else {
            let children = differing.flatMap { parent in
                (0..<PartitionDigest.fanout).map { parent * PartitionDigest.fanout + $0 }
            }
            outputs.append(.send(to: peer, .antiEntropyDigests(
                partition: partition, level: level + 1, nodes: children,
                digests: children.map { mine.digest(level: level + 1, index: $0) })))
        }
    }

    /// The peer's stamps of whole leaves: answer with the states it lacks or holds older, and
    /// ask for the keys this node lacks or holds older (`KeyStamps.exchange`: equal digests
    /// travel no further; otherwise the newer stamps decide, and counters go both ways). Keys
    /// that are equal cost no value bytes.
    private mutating func compareStamps(partition: Int, leaves: [Int], stamps: [KeyStamps], from peer: Int) {
        guard partition >= 0, partition < placement.partitionCount, leaves.count <= PartitionDigest.leafCount,
              leaves.allSatisfy({ $0 >= 0 && $0 < PartitionDigest.leafCount }) else { return }
        // Only keys of the named leaves of this partition count: anything else is a sender's bug.
        let named = Set(leaves)
        guard stamps.allSatisfy({ self.partition(of: $0.key) == partition && named.contains(PartitionDigest.leaf(of: $0.key)) }) else { return }
        var theirs: [[UInt8]: KeyStamps] = [:]
        for entry in stamps { theirs[entry.key] = entry }
        let mine = durable.store.entriesByLeaf(of: partition, leaves: leaves.sorted())
        // One decision per key held (each costs the key's digest); a key the peer listed that
        // this node does not hold in those leaves is one it lacks.
        var send: [ReplicaEntry] = []
        var wantsTheirs: [[UInt8]: Bool] = [:]
        for leaf in mine.keys.sorted() {
            for entry in mine[leaf]! {
                let decision = theirs[entry.key]?.exchange(with: entry.state) ?? (send: true, want: false)
                if decision.send { send.append(entry) }
                wantsTheirs[entry.key] = decision.want
            }
        }
        var wanted: [[UInt8]] = []
        var wantedBytes = 0
        for their in stamps where wantsTheirs[their.key] ?? true {
            guard wanted.count < settings.antiEntropyEntriesMax, wantedBytes < settings.entriesBytesMax else { break }
            wanted.append(their.key)
            wantedBytes += their.key.count + 4
        }
        // Over the bounds, the rest goes on the next pass: the leaves still differ, and what was
        // sent no longer does, so every pass makes progress.
        let limited = send.bounded(limit: settings.antiEntropyEntriesMax, bytesMax: settings.entriesBytesMax)
        guard !limited.isEmpty || !wanted.isEmpty else { return }
        stats.antiEntropyEntriesSent += UInt64(limited.count)
        outputs.append(.send(to: peer, .antiEntropyEntries(partition: partition, entries: limited, wanted: wanted)))
    }

    /// The peer's states (merged), and the keys it wants: sent back after the merge, so each is
    /// the newer of both sides.
    private mutating func mergeEntries(partition: Int, entries: [ReplicaEntry], wanted: [[UInt8]], from peer: Int, nowMs: Int64) {
        guard partition >= 0, partition < placement.partitionCount else { return }
        guard entries.allSatisfy({ self.partition(of: $0.key) == partition }),
              wanted.allSatisfy({ self.partition(of: $0) == partition }) else { return }
        for entry in entries {
            if merge(key: entry.key, state: entry.state, partition: partition, nowMs: nowMs) { stats.antiEntropyRepairs += 1 }
        }
        let back = wanted.compactMap { key in
            durable.store.state(of: key, partition: partition).map { ReplicaEntry(key: key, state: $0) }
        }
        guard !back.isEmpty else { return }
        let limited = back.bounded(limit: settings.antiEntropyEntriesMax, bytesMax: settings.entriesBytesMax)
        stats.antiEntropyEntriesSent += UInt64(limited.count)
        outputs.append(.send(to: peer, .antiEntropyEntries(partition: partition, entries: limited, wanted: [])))
    }

    // MARK: Timers

    /// Drives every timer: SWIM probes, retries and timeouts, hint replay, anti-entropy, move
    /// streams and their switch, dropping partitions this node no longer owns.
    public mutating func tick(nowMs: Int64, random: inout some RandomNumberGenerator) {
        for send in membership.tick(nowMs: nowMs, random: &random) {
            outputs.append(.send(to: send.to, .swim(send.message)))
        }
        if nowMs >= nextPlacementRefreshMs {
            nextPlacementRefreshMs = nowMs + settings.placementRefreshMs
            outputs.append(.fetchPlacement)
        }
        tickWrites(nowMs: nowMs)
        tickReads(nowMs: nowMs)
        replayHints(nowMs: nowMs)
        tickAntiEntropy(nowMs: nowMs)
        tickMoves(nowMs: nowMs)
        dropPartitionsNoLongerOwned(nowMs: nowMs)
    }

    private mutating func tickWrites(nowMs: Int64) {
        for request in writes.keys.sorted() {
            guard var pending = writes[request] else { continue }
            if !pending.replied, nowMs - pending.startedAtMs >= settings.requestTimeoutMs {
                pending.replied = true
                if let client = pending.client {
                    outputs.append(.reply(client: client, .timedOut))
                    stats.writesTimedOut += 1
                }
            }
            if nowMs - pending.sentAtMs >= settings.replicaTimeoutMs {
                // Whoever has not acknowledged by now gets a hint; until the client's deadline
                // the write is also sent again (a lost message must not cost the quorum).
                for target in pending.targets where !pending.acked.contains(target) && target != id {
                    hint(&pending, target: target)
                }
                pending.sentAtMs = nowMs
                if !pending.replied { sendWrite(&pending, request: request) }
            }
            writes[request] = pending
            finishWriteIfAcknowledged(request)
        }
    }

    private mutating func tickReads(nowMs: Int64) {
        for request in reads.keys.sorted() {
            guard var pending = reads[request] else { continue }
            if nowMs - pending.startedAtMs >= settings.requestTimeoutMs {
                reads[request] = nil
                outputs.append(.reply(client: pending.client, .timedOut))
                continue
            }
            if nowMs - pending.sentAtMs >= settings.replicaTimeoutMs {
                pending.sentAtMs = nowMs
                sendRead(&pending, request: request)
                reads[request] = pending
            }
        }
    }

    private mutating func replayHints(nowMs: Int64) {
        for (request, replay) in replays where nowMs - replay.sentAtMs >= settings.replicaTimeoutMs {
            replays[request] = nil
        }
        guard nowMs >= nextHintReplayMs, !durable.hints.isEmpty else { return }
        nextHintReplayMs = nowMs + Self.hintReplayIntervalMs
        if hintsCheckedEpoch != placement.epoch {
            // A target that left the data center, or no longer receives the partition's writes,
            // does not need the hint: the write's own quorum (and a move's quorum stream) holds it.
            hintsCheckedEpoch = placement.epoch
            for hint in durable.hints.hints where !placement.writeTargets(of: hint.partition).contains(hint.target) {
                durable.hints.remove(id: hint.id)
                outputs.append(.persist(.hintRemoved(hint.id)))
                stats.hintsDiscarded += 1
            }
        }
        let inFlight = Set(replays.values.map(\.hint))
        for target in durable.hints.targets {
            guard membership.liveness(of: target) == .alive else { continue }
            for hint in durable.hints.pending(for: target, limit: settings.hintReplaysPerRound) where !inFlight.contains(hint.id) {
                let request = takeRequestNumber()
                replays[request] = (hint.id, target, nowMs)
                outputs.append(.send(to: target, .replicate(
                    epoch: placement.epoch, request: request, partition: hint.partition, key: hint.key,
                    state: hint.state, hinted: true)))
            }
        }
    }

    private mutating func tickAntiEntropy(nowMs: Int64) {
        guard nowMs >= nextAntiEntropyMs else { return }
        let count = placement.partitionCount
        nextAntiEntropyMs = nowMs + max(1, settings.antiEntropyIntervalMs / Int64(count))
        let partition = antiEntropyCursor % count
        antiEntropyCursor = (antiEntropyCursor + 1) % count
        // The first live owner compares the partition with every other live owner; a moving
        // partition waits for its switch (the stream is its repair).
        guard !placement.isMoving(partition) else { return }
        let owners = placement.owners(of: partition)
        guard owners.first(where: { liveness(of: $0) == .alive }) == id else { return }
        let root = durable.store.digest(of: partition).root
        for peer in owners where peer != id && liveness(of: peer) == .alive {
            outputs.append(.send(to: peer, .antiEntropyDigests(partition: partition, level: 0, nodes: [0], digests: [root])))
        }
    }

    private mutating func tickMoves(nowMs: Int64) {
        if streamsHeldUntilMs != nil || (movesWaiting && streamsInFlight(nowMs: nowMs) < settings.movesInFlightMax) {
            startIncomingMoves(nowMs: nowMs)
        }
        // Send the next chunks of every outgoing stream.
        var finished: [Int] = []
        for index in outgoing.indices {
            for _ in 0..<settings.moveChunksPerTick {
                let stream = outgoing[index]
                let entries = durable.store.entries(
                    of: stream.partition, after: stream.after, limit: settings.moveChunkEntries, bytesMax: settings.entriesBytesMax)
                // The chunk after the last key is empty: an empty chunk ends the stream.
                let last = entries.isEmpty
                outputs.append(.send(to: stream.to, .moveChunk(
                    partition: stream.partition, changeEpoch: stream.changeEpoch, stream: stream.stream, after: stream.after,
                    entries: entries, last: last)))
                outgoing[index].after = entries.last?.key ?? stream.after
                if last {
                    finished.append(index)
                    break
                }
            }
        }
        for index in finished.reversed() { outgoing.remove(at: index) }
        // Re-request stalled incoming streams; propose the switch of caught-up partitions.
        var caughtUp: [Int] = []
        for partition in incoming.keys.sorted() {
            guard var move = incoming[partition] else { continue }
            for source in move.sources where move.after[source] != nil && !move.finished.contains(source) {
                if nowMs - (move.progressAtMs[source] ?? nowMs) >= settings.moveRetryMs {
                    askAgain(&move, partition: partition, from: source, nowMs: nowMs)
                    // A stalled source may be down: a source not asked yet is asked as well.
                    if let spare = move.sources.first(where: { move.after[$0] == nil }) {
                        requestStream(&move, partition: partition, from: spare, nowMs: nowMs)
                    }
                }
            }
            // A quorum of the old replicas holds every acknowledged write; streams from that
            // many of them cover them all (docs/CLUSTER.md, "Rebalancing").
            if move.isRebuild {
                incoming[partition] = move
                continue
            }
            if move.finished.count >= AckCount.quorum.required(of: move.sources.count),
               !move.proposed || nowMs - (move.progressAtMs.values.max() ?? nowMs) >= settings.moveRetryMs {
                caughtUp.append(partition)
                move.proposed = true
                // The quorum's copies are all this node needs, whatever it lost before.
                if durable.rebuilding.remove(partition) != nil { outputs.append(.persist(.rebuilt(partition))) }
                for source in move.sources { move.progressAtMs[source] = max(move.progressAtMs[source] ?? nowMs, nowMs) }
            }
            incoming[partition] = move
        }
        if !caughtUp.isEmpty {
            outputs.append(.proposeSwitch(partitions: caughtUp, changeEpoch: placement.changeEpoch))
        }
    }

    private mutating func dropPartitionsNoLongerOwned(nowMs: Int64) {
        guard nowMs >= nextOwnershipCheckMs, nowMs - placementLearnedAtMs >= settings.graceMs,
              placement.epoch >= highestEpochSeen else { return }
        nextOwnershipCheckMs = nowMs + Self.ownershipCheckIntervalMs
        for partition in durable.store.heldPartitions where !placement.writeTargets(of: partition).contains(id) {
            // A stream of it would go on with empty chunks, and an empty chunk ends a stream:
            // a requester still at an older placement would take it as all there is.
            outgoing.removeAll { $0.partition == partition }
            durable.store.drop(partition: partition)
            outputs.append(.persist(.dropPartition(partition)))
            stats.partitionsDropped += 1
        }
    }

    /// How often standing hints are offered to their targets (each offer sends up to
    /// `hintReplaysPerRound` per target).
    static var hintReplayIntervalMs: Int64 { 100 }
    /// How often the node looks for partitions it holds but no longer owns.
    static var ownershipCheckIntervalMs: Int64 { 1_000 }

    /// Merges a peer's state of a key (and moves the clock past its stamps).
    @discardableResult
    private mutating func merge(key: [UInt8], state: ReplicaState, partition: Int, nowMs: Int64) -> Bool {
        observe(state, nowMs: nowMs)
        return storeMerge(key: key, state: state, partition: partition)
    }

    /// Merges into the store and, when that changed the key, persists its new state.
    @discardableResult
    private mutating func storeMerge(key: [UInt8], state: ReplicaState, partition: Int) -> Bool {
        guard durable.store.merge(key: key, state: state, partition: partition),
              let merged = durable.store.state(of: key, partition: partition) else { return false }
        outputs.append(.persist(.record(partition: partition, key: key, merged)))
        return true
    }

    /// Hybrid logical clock receive: a write this node stamps after seeing a state is stamped
    /// above it, so a client that wrote through another node and then through this one sees
    /// its second write win even when that node's clock runs ahead. A stamp further ahead than
    /// the clock bound is not taken in (it still merges: the cross-DC path refuses such stamps
    /// at the border, so inside the DC they come only from a node's own clock).
    private mutating func observe(_ state: ReplicaState, nowMs: Int64) {
        let physical = UInt64(max(0, nowMs))
        for stamp in [state.valueStamp.timestamp, state.expiryStamp.timestamp] where stamp > clock.last {
            if (try? clock.receive(stamp, physicalMs: physical)) != nil {
                durable.lastStamp = clock.last
                outputs.append(.persist(.lastStamp(clock.last)))
            }
        }
    }

    /// A peer named a newer placement epoch: fetch the committed placement.
    private mutating func sawEpoch(_ epoch: UInt64) {
        highestEpochSeen = max(highestEpochSeen, epoch)
        outputs.append(.fetchPlacement)
    }

    private mutating func takeRequestNumber() -> UInt64 {
        defer { nextRequest += 1 }
        return nextRequest
    }

    // MARK: Introspection (tests, simulator, INFO)

    /// Writes and reads this node still coordinates.
    public var pendingRequests: Int { writes.count + reads.count }
    /// Partitions this node is streaming in (moves and rebuilds).
    public var incomingMoves: [Int] { incoming.keys.sorted() }
    /// Partitions this node owns but is still rebuilding after it lost its data.
    public var rebuildingPartitions: [Int] { durable.rebuilding.filter { placement.owners(of: $0).contains(id) }.sorted() }
}
