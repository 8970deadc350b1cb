#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeridianCluster
import MeridianCore
import MeridianPaxos
import MeridianRESP
import MeridianStorage
import MeridianWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The NIO shell around this node's `ClusterNode` and `CommandForwarder` (docs/CLUSTER.md,
/// "The server wiring"): one thread of its own runs both state machines, as the strong engine
/// runs its replica, so that no event loop waits for a merge or a disk sync.
///
/// Inputs — records to replicate after a command ran here, commands to forward to another
/// node, `CLUSTER` frames from the data center's other nodes, forwarded commands' replies from
/// this node's executors, a 10 ms tick — are queued; the thread takes everything queued, runs
/// it through the state machines, makes the step's merges durable (a `write-through` merge is
/// synced before any message of the step leaves), then sends and answers.
///
/// The placement starts as the configuration's (its nodes but the spares, epoch 1) and changes
/// through the data center's placement log (docs/CLUSTER.md, "Rebalancing"): a Paxos group of
/// the placement voters, which this engine runs on the voters (`placementLog`), and which the
/// other nodes reach by `CLUSTER` messages — fetches, changes, switches. Members are known by
/// name (the configuration is the address book) and numbered by the placement.
public final class ClusterEngine: @unchecked Sendable {
    /// A replicated write's end: acknowledged by `write_acks` owners, or not within the
    /// request timeout (it may still reach them: hints and anti-entropy carry it on).
    public typealias WriteCompletion = @Sendable (_ acknowledged: Bool) -> Void
    public typealias ForwardCompletion = @Sendable (ForwardingResult) -> Void
    /// A read quorum's end: every key's owners answered as its `read_acks` asks (their merged
    /// records are in this node's keyspace now), or not within the request timeout.
    public typealias ReadCompletion = @Sendable (_ answered: Bool) -> Void
    /// Runs commands forwarded to this node (the primary) and hands back the reply's RESP bytes.
    public typealias CommandRunner = @Sendable (
        _ commands: [[[UInt8]]], _ protocolVersion: UInt8, _ reply: @escaping @Sendable ([UInt8]) -> Void
    ) -> Void
    public typealias ChangeCompletion = @Sendable (PlacementChangeOutcome) -> Void

    enum Input {
        case replicate(key: [UInt8], record: DurableRecord, acks: AckCount, WriteCompletion)
        case readQuorum(keys: [(key: [UInt8], acks: AckCount)], ReadCompletion)
        case forward(partition: Int, protocolVersion: UInt8, commands: [[[UInt8]]], ForwardCompletion)
        case message(ClusterMessage, from: String)
        case commandRan(request: UInt64, coordinator: Int, reply: [UInt8])
        case linkLost(String)
        case tick
        /// The placement log applied a new placement (this node is a voter).
        case placementApplied(Placement)
        /// The placement log holds a placement (the first one was committed, or was there).
        case placementLogHoldsOne
        /// An operator's change, asked at this node.
        case changePlacement(PlacementChange, ChangeCompletion)
        /// Hints whose record was last written before this time (Unix ms) go.
        case discardHintsWrittenBefore(Int64)
        /// The placement log decided a change another node asked this voter for.
        case changeDecided(request: UInt64, requester: String, PlacementChangeOutcome)
    }

    public struct Statistics: Sendable {
        public var writesReplicated = 0
        public var writesTimedOut = 0
        public var commandsForwarded = 0
        public var forwardedCommandsRun = 0
        public var forwardsRefused = 0
        public var messagesSent = 0
        public var messagesReceived = 0
        public var messagesDropped = 0
        public var messagesRejected = 0
        public var node = ClusterStats()
        public var hintsHeld = 0
        /// Hints dropped to stay within `hints_bytes_max` (anti-entropy repairs what they carried).
        public var hintsDropped = 0
        public var membersAlive = 0
        public var placementEpoch: UInt64 = 0
        /// Partitions this node owns and is still rebuilding from the other owners.
        public var partitionsRebuilding = 0
        /// Whether the placement names this node (a spare, or a node removed, does not).
        public var isMember = false
        /// The running change (add or remove) in words, empty when none runs.
        public var change = ""
        /// Partitions of the running change that have not switched yet.
        public var partitionsMoving = 0
        /// Partitions this node streams in (its moves; rebuilds are counted above).
        public var partitionsStreamingIn = 0
        public var changesCommitted = 0
        public var changesRefused = 0
    }

    /// The data center's nodes as configured (the address book).
    public let nodeNames: [String]
    /// This node's name.
    public let name: String
    /// This node's index among its data center's nodes in the configuration.
    private let configIndex: Int
    /// The nodes that commit the data center's placement.
    public let voterNames: [String]
    public let partitioner: Partitioner
    private let logger: Logger
    private let storage: StorageEngine?
    private let database: Database
    private let settings: ClusterSettings
    /// This node's part of the placement log, when it is a placement voter.
    private let placementLog: StrongEngine?
    /// The configuration's placement: what the placement log holds until its first change.
    private let firstPlacement: Placement
    /// `<data_dir>/cluster-placement`: the newest placement this node learned.
    private let placementFile: String
    /// Whether a replica's merge must be synced before its acknowledgement leaves.
    private let syncsMerges: Bool
    /// Ids of the hints kept in the store's hint log (those of durable namespaces).
    private var durableHints: Set<UInt64> = []
    private let inbox = SerialInbox<Input>()
    /// Guards `sendMessages` and `runCommands`. They are stored properties of this class, read
    /// under a plain lock: kept in a generic box and read through its `inout` accessor, a closure
    /// is wrapped in one more reabstraction thunk at every access, and calls grow slower
    /// without bound.
    private let callbacks = NIOLock()
    private var sendMessages: (@Sendable (String, [[UInt8]]) -> Bool)?
    private var runCommands: CommandRunner?
    private var sender: (@Sendable (String, [[UInt8]]) -> Bool)? { callbacks.withLock { sendMessages } }
    private var runner: CommandRunner? { callbacks.withLock { runCommands } }
    private let published = NIOLockedValueBox(Statistics())
    /// Each partition's primary as the engine last saw it (member id, -1 for none), for the
    /// event loops' routing decision; replaced whole after every step that could change it.
    private let routing: NIOLockedValueBox<Routing>
    /// The placement as the engine last learned it, for CLUSTER commands.
    private let publishedPlacement: NIOLockedValueBox<Placement>
    private let tickTask = NIOLockedValueBox<RepeatedTask?>(nil)

    // Engine thread only.
    private var node: ClusterNode<ShardedReplicaStore>
    private var forwarder: CommandForwarder
    private var random: SplitMix64
    private var writeWaiters: [UInt64: WriteCompletion] = [:]
    /// Read quorums in progress: each read's client number → the quorum it belongs to.
    private var readWaiters: [UInt64: (quorum: Int, key: [UInt8])] = [:]
    private var readQuorums: [Int: (remaining: Int, answered: Bool, completion: ReadCompletion)] = [:]
    private var nextReadQuorum = 0
    private var store: ShardedReplicaStore
    private var forwardWaiters: [UInt64: ForwardCompletion] = [:]
    /// Commands the forwarder had no room for on their primary's link, in arrival order.
    private var forwardsWaitingForRoom: [(client: UInt64, partition: Int, protocolVersion: UInt8, passedOn: Bool, commands: [[[UInt8]]])] = []
    private var nextClient: UInt64 = 1
    private var statistics = Statistics()
    private var lastPublishNs: UInt64 = 0
    /// Placement messages to send this step, by node name.
    private var sendsByName: [String: [[UInt8]]] = [:]
    /// What the published table was computed from (`publishRouting`).
    private var routingInputs: [Int] = []
    /// Members this node has no link to right now (a send found none, or the link dropped),
    /// until a message from them arrives: no command is routed to them meanwhile, even while
    /// SWIM still believes them alive (its verdict takes a probe period and a suspicion).
    private var unreachable: Set<Int> = []
    private let memberMarker: String
    private var memberMarkerWritten: Bool
    /// When the member marker's time was last brought to now.
    private var lastMarkerTouchNs: UInt64 = 0
    /// How often: every minute, or a tenth of the dead states' grace when that is shorter.
    private let markerTouchIntervalNs: UInt64
    /// The id each node last had as a member.
    private var formerMemberIDs: [String: Int] = [:]
    /// Member ids by name and names by id, in the current placement.
    private var memberIDs: [String: Int] = [:]
    private var memberNames: [Int: String] = [:]
    /// What this voter's placement log last applied (nil until it reported).
    private var appliedPlacement: Placement?
    /// Changes this node asked a voter for: request → deadline and completion.
    private var changesAsked: [UInt64: AskedChange] = [:]
    /// Changes sent to a voter in this step, by voter: when the send finds no link, the change
    /// never left, and goes to the next voter at the next tick.
    private var changesSentThisStep: [String: [UInt64]] = [:]

    struct AskedChange {
        var deadlineMs: Int64
        var completion: ChangeCompletion
        var change: PlacementChange
        /// Whether it is with a voter (this node, when it is one); false: to be sent.
        var sent: Bool
    }
    /// Numbered from the incarnation: a voter's late answer to a request of this node's
    /// previous run never matches one of this run.
    private var nextChangeRequest: UInt64
    /// Outputs of a core replaced in the middle of a step (`learnPlacement`), carried out with
    /// the step's own.
    private var leftoverOutputs: [ClusterOutput] = []
    /// When each node of the data center was last heard from (any `CLUSTER` message).
    private var lastHeardMs: [String: Int64] = [:]
    /// Whether the placement log holds a placement (a voter commits the first one itself).
    private var firstPlacementCommitted = false
    private var nextFirstPlacementAttemptMs: Int64 = 0
    /// Which voter the next fetch or change goes to (they take turns).
    private var voterTurn = 0
    private var lastFetchMs: Int64 = 0

    /// Each partition's primary for the event loops' routing, and who this node is.
    struct Routing {
        var me: Int
        var isMember: Bool
        var primaries: [Int]
    }

    static let tickMs: Int64 = 10
    /// The placement log's one key.
    static let placementKey = Array("placement".utf8)
    /// A node the placement does not name (a spare) runs under this id plus its index in the
    /// configuration until a placement names it: ids the placement hands out stay far below.
    static let nonMemberIDBase = 1 << 24
    /// How long an operator's change may wait for a voter's answer.
    static let changeTimeoutMs: Int64 = 10_000
    /// The answer to a command on keys at a node the placement does not name.
    static let notMemberReply = "TRYAGAIN this node is not a member of its data center's placement (a spare joins with `meridian cluster add-node NAME`); connect to a member"

    /// The answer to a command passed on by an owner rebuilding the partition, at another owner
    /// that rebuilds it too (a new data center's first seconds, or two owners that lost their
    /// data at once): nothing ran; the client may retry.
    static let rebuildingReply = Array("-TRYAGAIN the partition's replicas are being rebuilt; the command did not run\r\n".utf8)

    static func nowMs() -> Int64 { Int64(SystemClock.monotonicNs() / 1_000_000) }

    /// `<data_dir>/cluster-member` is a file that exists once this node held all its partitions
    /// (written when its rebuilds end). A node starts as having lost its data — it rebuilds every
    /// partition it owns from the other owners before it answers reads of it — when the
    /// marker is missing (a new or wiped data directory), or when some namespace keeps
    /// nothing on disk (its keys did not survive the restart). `savedPlacement`: what
    /// `loadPlacement` found in the data directory; `placementLog`: this node's part of the
    /// placement log when it is a placement voter.
    public init(
        configuration: MeridianConfiguration, datacenter: Int, node configIndex: Int, database: Database, settings: ClusterSettings,
        dataDirectory: String, savedPlacement: Placement?, placementLog: StrongEngine?, logger: Logger
    ) {
        let dc = configuration.cluster.datacenters[datacenter]
        self.nodeNames = dc.nodes.map(\.name)
        self.name = dc.nodes[configIndex].name
        self.configIndex = configIndex
        self.voterNames = configuration.cluster.placementVoters(of: dc)
        self.logger = logger
        self.storage = database.storage
        self.database = database
        self.settings = settings
        self.placementLog = placementLog
        self.syncsMerges = database.hasWriteThroughNamespaces
        self.markerTouchIntervalNs = UInt64(min(60_000, max(100, configuration.cluster.scaleOut.deadStateGraceMs / 10))) * 1_000_000
        self.firstPlacement = Placement(
            memberNames: configuration.cluster.firstMembers(of: dc), partitionCount: configuration.cluster.partitions,
            replicationFactor: configuration.cluster.replicationFactor)
        let placement = savedPlacement ?? firstPlacement
        self.placementFile = dataDirectory + "/cluster-placement"
        self.partitioner = Partitioner(partitionCount: placement.partitionCount)
        self.memberMarker = dataDirectory + "/cluster-member"
        let lostData = access(memberMarker, F_OK) != 0 || configuration.namespaces.contains { $0.durability == .memory }
        // A node that was away longer than dead_state_grace may hold values whose deletes the
        // others collected meanwhile, and anti-entropy would bring them back (docs/CLUSTER.md,
        // "Collecting dead states"). Forgetting its records would be wrong when the whole data
        // center was stopped (nothing was collected then), so it is the operator's call: the
        // node says so. The marker's time is when it last ran as a member (refreshed every minute).
        var markerStatus = stat()
        let graceMs = configuration.cluster.scaleOut.deadStateGraceMs
        if !lostData, stat(memberMarker, &markerStatus) == 0,
           Int64(markerStatus.st_mtim.tv_sec) * 1000 < SystemClock.nowUnixMs() - graceMs {
            logger.warning(
                "this node last ran longer ago than cluster.dead_state_grace: if the other owners ran meanwhile, keys deleted then may come back from this node; to prevent it, stop it and start it with an empty data directory (it rebuilds from the others)",
                metadata: ["marker": "\(memberMarker)", "last_ran_unix_s": "\(markerStatus.st_mtim.tv_sec)", "dead_state_grace_ms": "\(graceMs)"])
        }
        self.memberMarkerWritten = !lostData
        self.store = ShardedReplicaStore(database: database)
        var durable = ClusterDurableState(
            store: store, placement: placement, hintsBytesMax: settings.hintsBytesMax, lostData: lostData)
        // Hints of durable namespaces come back from the store's hint log (what they owe the
        // other owners survives this node's restart).
        if let storage = database.storage {
            let me = placement.members.first { $0.name == dc.nodes[configIndex].name }?.id
            let partitioner = Partitioner(partitionCount: placement.partitionCount)
            let loaded = Self.loadHints(from: storage, logger: logger)
            let staleBefore = SystemClock.nowUnixMs() - configuration.cluster.scaleOut.deadStateGraceMs
            for hint in loaded {
                // A hint for another layout (the partition count changed with no placement saved)
                // or owed to this node itself could never be delivered, and one older than the
                // dead states' grace must not be (see `discardHints`): it goes.
                guard hint.partition < placement.partitionCount, hint.target != me, hint.state.lastWrittenUnixMs >= staleBefore,
                      hint.key.withUnsafeBytes({ partitioner.partition(of: $0) }) == hint.partition else { continue }
                durable.apply(.hintStored(hint))
            }
            durableHints = Set(durable.hints.hints.map(\.id))
            for hint in loaded where !durableHints.contains(hint.id) { storage.deleteLog(key: HintCodec.key(id: hint.id)) }
            if !durableHints.isEmpty { logger.info("hints restored from disk", metadata: ["hints": "\(durableHints.count)"]) }
        }
        let now = Self.nowMs()
        // The incarnation grows across restarts (the wall clock's milliseconds will do).
        let incarnation = UInt64(max(1, SystemClock.nowUnixMs()))
        let me = placement.members.first { $0.name == dc.nodes[configIndex].name }?.id ?? Self.nonMemberIDBase + configIndex
        self.node = ClusterNode(
            id: me, origin: database.origin, durable: durable, settings: settings, nowMs: now, incarnation: incarnation)
        self.forwarder = CommandForwarder(
            requestTimeoutMs: settings.requestTimeoutMs, inFlightPerLinkMax: configuration.cluster.scaleOut.forwardsInFlight,
            messageBytesMax: Frame.payloadBytesMax, incarnation: incarnation)
        self.random = SplitMix64(seed: UInt64(truncatingIfNeeded: SystemClock.nowUnixMs()) &+ UInt64(configIndex))
        self.nextChangeRequest = (incarnation & 0x0000_0FFF_FFFF_FFFF) << 20 | 1
        self.routing = NIOLockedValueBox(Routing(me: me, isMember: false, primaries: (0..<placement.partitionCount).map { _ in -1 }))
        self.publishedPlacement = NIOLockedValueBox(placement)
        indexMembers()
        publishRouting()
        publishStatistics()
        if let placementLog {
            placementLog.watch(key: Self.placementKey, partition: 0) { [weak self] bytes in
                guard let self else { return }
                // Nothing committed yet: the first placement is committed at the first tick
                // (`commitFirstPlacement`), and only then reported and sent to others.
                guard let bytes else { return }
                do {
                    self.enqueue([.placementApplied(try PlacementCodec.decode(bytes))])
                } catch {
                    self.logger.critical("the placement log holds a placement that does not decode", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// The placement this node learned before it stopped (`<data_dir>/cluster-placement`), nil
    /// when it never learned one past the configuration's. Throws when the file cannot be read
    /// or belongs to another layout (partitions and replication factor are fixed).
    public static func loadPlacement(dataDirectory: String, configuration: MeridianConfiguration) throws -> Placement? {
        let path = dataDirectory + "/cluster-placement"
        guard access(path, F_OK) == 0 else { return nil }
        guard let file = fopen(path, "rb") else { throw PlacementFileError(path: path, problem: "cannot be opened (errno \(errno))") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        let placement: Placement
        do {
            placement = try PlacementCodec.decode(bytes)
        } catch {
            throw PlacementFileError(path: path, problem: "does not hold a placement (\(error))")
        }
        guard placement.partitionCount == configuration.cluster.partitions,
              placement.replicationFactor == configuration.cluster.replicationFactor else {
            throw PlacementFileError(
                path: path,
                problem: "holds a placement of \(placement.partitionCount) partitions with replication factor \(placement.replicationFactor); the configuration says \(configuration.cluster.partitions) and \(configuration.cluster.replicationFactor) (both are fixed for the cluster's life)")
        }
        return placement
    }

    public struct PlacementFileError: Error, CustomStringConvertible {
        public var path: String
        public var problem: String
        public var description: String { "\(path) \(problem)" }
    }

    /// Starts the engine thread and its tick on `loop`.
    public func start(tickingOn loop: EventLoop) {
        inbox.start { [weak self] inputs in self?.step(inputs) }
        let task = loop.scheduleRepeatedTask(initialDelay: .milliseconds(Self.tickMs), delay: .milliseconds(Self.tickMs)) { [weak self] _ in
            self?.enqueue([.tick])
        }
        tickTask.withLockedValue { $0 = task }
    }

    /// How messages leave: `send(node name, payloads)`; false when there is no link.
    public func attach(sender send: @escaping @Sendable (String, [[UInt8]]) -> Bool) {
        callbacks.withLock { sendMessages = send }
        // The placement log's messages travel in the same frames, wrapped.
        placementLog?.attach { peer, payloads in send(peer, payloads.map { ClusterCodec.encode(.placementLog($0)) }) }
    }

    /// How forwarded commands run on this node.
    public func attach(runner run: @escaping CommandRunner) {
        callbacks.withLock { runCommands = run }
    }

    public func stop() {
        tickTask.withLockedValue { $0?.cancel() }
        inbox.stop()
        placementLog?.stop()
    }

    // MARK: From event loops

    /// The partition of a key.
    public func partition(of key: ByteBuffer) -> Int {
        key.withUnsafeReadableBytes { partitioner.partition(of: $0) }
    }

    /// The partition's primary as the engine last saw it (nil: no owner alive).
    public func primary(of partition: Int) -> Int? {
        guard partition >= 0 && partition < partitioner.partitionCount else { return nil }
        let member = routing.withLockedValue { $0.primaries[partition] }
        return member < 0 ? nil : member
    }

    /// Whether commands on the partition run on this node (it is the primary the engine saw).
    public func isPrimaryHere(_ partition: Int) -> Bool {
        guard partition >= 0 && partition < partitioner.partitionCount else { return false }
        return routing.withLockedValue { $0.primaries[partition] == $0.me }
    }

    /// Whether the placement names this node: one that it does not (a spare not added yet, a
    /// node removed) serves no commands on keys.
    public var isMember: Bool { routing.withLockedValue { $0.isMember } }

    /// The placement as the engine last learned it.
    public var currentPlacement: Placement { publishedPlacement.withLockedValue { $0 } }

    /// This node's member id in the current placement (nil when it names no such node).
    public var memberID: Int? { routing.withLockedValue { $0.isMember ? $0.me : nil } }

    /// Discards the hints whose record was last written before `cutoffUnixMs` (docs/CLUSTER.md,
    /// "Collecting dead states"): the dead states' collection calls it with the same cutoff.
    public func discardHints(writtenBeforeUnixMs cutoffUnixMs: Int64) {
        enqueue([.discardHintsWrittenBefore(cutoffUnixMs)])
    }

    /// Asks the placement log to commit `change` (an operator's add or remove): at a voter
    /// directly, elsewhere through a voter. `completion` is called once, on an engine thread.
    public func changePlacement(_ change: PlacementChange, completion: @escaping ChangeCompletion) {
        enqueue([.changePlacement(change, completion)])
    }

    /// Replicates records to their partitions' owners, each waiting for its `acks`: the records
    /// a command left in this node's keyspace (the primary after it ran), or what another data
    /// center sent (merged at the owners as it is, with its origin's stamps and dots).
    /// `completion` is called once, on the engine thread: acknowledged only when every record
    /// was (none: at once).
    public func replicate(
        _ records: [(key: [UInt8], record: DurableRecord, acks: AckCount)], completion: @escaping WriteCompletion
    ) {
        guard !records.isEmpty else { return completion(true) }
        let outstanding = NIOLockedValueBox((remaining: records.count, allAcknowledged: true))
        let each: WriteCompletion = { acknowledged in
            let finished = outstanding.withLockedValue { state -> Bool? in
                state.remaining -= 1
                state.allAcknowledged = state.allAcknowledged && acknowledged
                return state.remaining == 0 ? state.allAcknowledged : nil
            }
            if let finished { completion(finished) }
        }
        enqueue(records.map { .replicate(key: $0.key, record: $0.record, acks: $0.acks, each) })
    }

    /// Reads `keys` from their owners as each key's `read_acks` asks and merges what they hold
    /// into this node's keyspace (docs/CLUSTER.md, "The partition's primary executes": a primary
    /// that may be stale reads before it runs a command that reads); `completion` is called
    /// once, on the engine thread.
    public func readQuorum(keys: [(key: [UInt8], acks: AckCount)], completion: @escaping ReadCompletion) {
        enqueue([.readQuorum(keys: keys, completion)])
    }

    /// Sends a command to its partition's primary; `completion` is called once, on the engine
    /// thread, with the primary's reply or why there is none.
    public func forward(partition: Int, protocolVersion: UInt8, commands: [[[UInt8]]], completion: @escaping ForwardCompletion) {
        enqueue([.forward(partition: partition, protocolVersion: protocolVersion, commands: commands, completion)])
    }

    /// Runs commands on this node as if another node had forwarded them here (one part of a
    /// command split by partition, of which this node is the primary).
    public func runHere(commands: [[[UInt8]]], protocolVersion: UInt8, reply: @escaping @Sendable ([UInt8]) -> Void) {
        guard let run = runner else {
            var out = ByteBufferAllocator().buffer(capacity: 64)
            out.writeErrorReply("TRYAGAIN the node is starting")
            reply(Array(out.readableBytesView))
            return
        }
        run(commands, protocolVersion, reply)
    }

    /// A `CLUSTER` frame's payload from the node named `peer`.
    public func receive(_ payload: [UInt8], fromPeer peer: String) throws(WireError) {
        guard peer != name, nodeNames.contains(peer) else { return }
        let message = try ClusterCodec.decode(payload)
        if case .placementLog(let bytes) = message {
            // Straight to the placement log's own thread.
            try placementLog?.receive(bytes, fromPeer: peer)
            return
        }
        enqueue([.message(message, from: peer)])
    }

    /// The link to `peer` closed: commands forwarded over it may have run, and get no reply.
    public func linkLost(toPeer peer: String) {
        guard peer != name else { return }
        enqueue([.linkLost(peer)])
    }

    /// What INFO shows (published by the engine thread at most every 100 ms).
    public var currentStatistics: Statistics { published.withLockedValue { $0 } }

    // MARK: Engine thread

    private func enqueue(_ inputs: [Input]) {
        inbox.enqueue(inputs)
    }

    private func step(_ inputs: [Input]) {
        let now = Self.nowMs()
        var replies: [(to: Int, request: UInt64, outcome: MeridianCluster.CommandOutcome)] = []
        for input in inputs {
            switch input {
            case .replicate(let key, let record, let acks, let completion):
                let client = takeClient()
                writeWaiters[client] = completion
                node.replicate(client: client, key: key, record: record, acks: acks, nowMs: now)
            case .readQuorum(let keys, let completion):
                let quorum = nextReadQuorum
                nextReadQuorum += 1
                readQuorums[quorum] = (keys.count, true, completion)
                for (key, acks) in keys {
                    let client = takeClient()
                    readWaiters[client] = (quorum, key)
                    node.read(client: client, key: key, acks: acks, nowMs: now)
                }
            case .forward(let partition, let protocolVersion, let commands, let completion):
                let client = takeClient()
                forwardWaiters[client] = completion
                statistics.commandsForwarded += 1
                let primary = routingPrimary(of: partition)
                // Behind commands already waiting for room on the same primary's link, in order.
                let waitsBehind = primary != nil && forwardsWaitingForRoom.contains { routingPrimary(of: $0.partition) == primary }
                if waitsBehind || !forwarder.forward(
                    client: client, partition: partition, protocolVersion: protocolVersion, commands: commands,
                    epoch: node.placement.epoch, primary: primary, nowMs: now) {
                    forwardsWaitingForRoom.append((client, partition, protocolVersion, false, commands))
                }
            case .message(let message, let peer):
                statistics.messagesReceived += 1
                lastHeardMs[peer] = now
                if receivePlacementMessage(message, from: peer, nowMs: now) { continue }
                guard let from = memberIDs[peer], from != node.id else { continue }
                if node.placement.member(from) == nil {
                    // A node this placement does not name: it knows a newer one (a member just
                    // added), or it just left, or it is a spare. Its failure-detection messages
                    // do not count; the rest is answered on its merits (a command for a
                    // partition this node does not own is refused as moved, and runs when it
                    // does; replication merges and is acknowledged).
                    fetchPlacement(nowMs: now)
                    if case .swim = message { continue }
                }
                unreachable.remove(from)
                switch message {
                case .command(let request, let epoch, let partition, let protocolVersion, let passedOn, let commands):
                    let rebuilding = node.durable.rebuilding.contains(partition)
                    if let refusal = node.refusesForwarded(partition: partition, epoch: epoch) {
                        statistics.forwardsRefused += 1
                        replies.append((from, request, refusal))
                    } else if rebuilding && !passedOn {
                        // This node lacks the partition's records until its rebuild ends: the
                        // command goes on to the next owner, and its answer back to the
                        // coordinator.
                        passOn(request: request, coordinator: from, partition: partition, protocolVersion: protocolVersion, commands: commands, nowMs: now)
                    } else if rebuilding {
                        // Passed on by another owner that rebuilds it too: it goes no further
                        // (it would circle), and nothing ran.
                        statistics.forwardsRefused += 1
                        replies.append((from, request, .executed(reply: Self.rebuildingReply)))
                    } else if let run = runner {
                        statistics.forwardedCommandsRun += 1
                        run(commands, protocolVersion) { [weak self] reply in
                            self?.enqueue([.commandRan(request: request, coordinator: from, reply: reply)])
                        }
                    }
                case .commandReply:
                    forwarder.receive(message, from: from)
                default:
                    node.receive(message, from: from, nowMs: now)
                }
            case .commandRan(let request, let coordinator, let reply):
                if coordinator == node.id {
                    // Forwarded to this node itself (it became the primary while the command
                    // waited): the reply goes straight back to the forwarder.
                    forwarder.receive(.commandReply(request: request, outcome: .executed(reply: reply)), from: node.id)
                    continue
                }
                // The reply travels in one frame with its request number and length.
                let fits = reply.count + 32 <= Frame.payloadBytesMax
                replies.append((coordinator, request, fits ? MeridianCluster.CommandOutcome.executed(reply: reply) : .replyTooLarge))
            case .linkLost(let peer):
                guard let member = memberIDs[peer] else { continue }
                unreachable.insert(member)
                forwarder.linkLost(member)
            case .placementApplied(let placement):
                let isNew = placement.epoch > (appliedPlacement?.epoch ?? 0)
                appliedPlacement = placement
                learnPlacement(placement, nowMs: now)
                if isNew && placement.epoch > 1 {
                    // Every node of the data center hears of it now (a spare too: it may be
                    // the one added); anyone who misses this fetches within a second.
                    let message = ClusterCodec.encode(.placement(placement))
                    for peer in nodeNames where peer != name { sendsByName[peer, default: []].append(message) }
                }
            case .changePlacement(let change, let completion):
                if placementLog != nil, let refusal = liveRefusal(of: change, nowMs: now) {
                    statistics.changesRefused += 1
                    completion(.refused(refusal))
                    continue
                }
                let request = nextChangeRequest
                nextChangeRequest += 1
                changesAsked[request] = AskedChange(deadlineMs: now + Self.changeTimeoutMs, completion: completion, change: change, sent: true)
                if placementLog != nil {
                    commitChange(change) { [weak self, name] outcome in
                        self?.enqueue([.changeDecided(request: request, requester: name, outcome)])
                    }
                } else {
                    sendChange(request: request)
                }
            case .discardHintsWrittenBefore(let cutoffUnixMs):
                node.discardHints { $0.state.lastWrittenUnixMs < cutoffUnixMs }
            case .changeDecided(let request, let requester, let outcome):
                if requester == name {
                    finishChange(request: request, outcome: outcome)
                } else {
                    sendsByName[requester, default: []].append(ClusterCodec.encode(.placementChangeReply(request: request, outcome: outcome)))
                }
            case .placementLogHoldsOne:
                firstPlacementCommitted = true
            case .tick:
                if placementLog != nil, !firstPlacementCommitted, now >= nextFirstPlacementAttemptMs {
                    nextFirstPlacementAttemptMs = now + 1_000
                    commitFirstPlacement()
                }
                for (request, asked) in changesAsked {
                    if now >= asked.deadlineMs {
                        finishChange(request: request, outcome: .refused(asked.sent
                            ? "no placement voter answered within \(Self.changeTimeoutMs / 1000) s; the change may have been committed (see INFO cluster)"
                            : "no placement voter could be reached within \(Self.changeTimeoutMs / 1000) s; the change was not made"))
                    } else if !asked.sent {
                        sendChange(request: request)
                    }
                }
                node.tick(nowMs: now, random: &random)
                let placement = node.placement
                forwarder.tick(nowMs: now, epoch: placement.epoch) { routingPrimary(of: $0) }
                retryForwardsWaitingForRoom(nowMs: now)
            }
        }
        var outgoing: [Int: [[UInt8]]] = [:]
        var mergedRecords = false
        // A node the placement does not name speaks to no one but the placement voters.
        let isMember = isMemberNow
        for output in leftoverOutputs + node.takeOutputs() {
            switch output {
            case .persist(let change):
                // Records and dropped partitions are already in the shards and queued for the
                // disk (the store is the keyspace); hints of durable namespaces go to the store's
                // hint log; the placement is saved when learned; the last stamp is kept in
                // memory only (docs/CLUSTER.md, "The server wiring").
                switch change {
                case .record: mergedRecords = true
                // A hint counts for no acknowledgement: nothing waits for it to reach the disk.
                case .hintStored(let hint): persist(hint)
                case .hintRemoved(let id): forgetHint(id)
                default: break
                }
            case .send(let to, let message):
                // A node the placement does not name takes no part in failure detection.
                if case .swim = message, !isMember { continue }
                outgoing[to, default: []].append(ClusterCodec.encode(message))
            case .reply(let client, let result):
                if let read = readWaiters.removeValue(forKey: client) {
                    finishRead(of: read.quorum, key: read.key, result: result)
                    continue
                }
                guard let completion = writeWaiters.removeValue(forKey: client) else { continue }
                switch result {
                case .written:
                    statistics.writesReplicated += 1
                    completion(true)
                case .timedOut, .read:
                    statistics.writesTimedOut += 1
                    completion(false)
                }
            case .fetchPlacement:
                fetchPlacement(nowMs: now)
            case .proposeSwitch(let partitions, let changeEpoch):
                // Partitions this node finished streaming: the switch is committed by the
                // placement log (asked again after `move_retry` until it is). The streamed
                // records reach the disk first: once switched, the old owners drop theirs.
                waitForDisk()
                let change = PlacementChange.switching(partitions: partitions, changeEpoch: changeEpoch)
                if placementLog != nil {
                    commitChange(change) { _ in }
                } else if let voter = nextVoter() {
                    sendsByName[voter, default: []].append(ClusterCodec.encode(.placementChange(request: 0, change: change)))
                }
            }
        }
        for (to, request, outcome) in replies {
            outgoing[to, default: []].append(ClusterCodec.encode(.commandReply(request: request, outcome: outcome)))
        }
        var forwardedTo: [Int: [UInt64]] = [:]
        for output in forwarder.takeOutputs() {
            switch output {
            case .send(node.id, .command(let request, _, _, let protocolVersion, _, let commands)):
                // This node is the primary now (never while it rebuilds the partition: the
                // routing skips it): it runs the command as if it had been sent here.
                runLocally(request: request, commands: commands, protocolVersion: protocolVersion)
            case .send(let to, let message):
                if case .command(let request, _, _, _, _, _) = message { forwardedTo[to, default: []].append(request) }
                outgoing[to, default: []].append(ClusterCodec.encode(message))
            case .reply(let client, let result):
                forwardWaiters.removeValue(forKey: client)?(result)
            case .fetchPlacement:
                fetchPlacement(nowMs: now)
            }
        }
        if mergedRecords, syncsMerges {
            // Acknowledgements of merges leave only once a write-through record is on disk.
            waitForDisk()
        }
        let send = sender
        for (peer, payloads) in sendsByName {
            // Placement messages: a lost one is asked again (fetches, switches), goes to the
            // next voter (an operator's change that never left), or times out.
            if let send, send(peer, payloads) {
                statistics.messagesSent += payloads.count
            } else {
                statistics.messagesDropped += payloads.count
                for request in changesSentThisStep[peer] ?? [] { changesAsked[request]?.sent = false }
            }
        }
        sendsByName.removeAll(keepingCapacity: true)
        changesSentThisStep.removeAll(keepingCapacity: true)
        for (to, payloads) in outgoing {
            if let peer = memberNames[to], let send, send(peer, payloads) {
                statistics.messagesSent += payloads.count
            } else {
                // No link right now: the core re-sends, hints, or times out as for a lost
                // message; a forwarded command that never left waits for the next primary.
                statistics.messagesDropped += payloads.count
                unreachable.insert(to)
                for request in forwardedTo[to] ?? [] { forwarder.notSent(request: request) }
            }
        }
        publishRouting()
        leftoverOutputs.removeAll()
        // Only a member's marker means anything: a node outside the placement owns nothing, so
        // "holds every partition it owns" would be true of it before it holds anything.
        if !memberMarkerWritten && isMemberNow && node.rebuildingPartitions.isEmpty { writeMemberMarker() }
        let nowNs = SystemClock.monotonicNs()
        if memberMarkerWritten && nowNs - lastMarkerTouchNs >= markerTouchIntervalNs {
            // The marker's time is when this node last ran as a member (see `init`).
            lastMarkerTouchNs = nowNs
            utimes(memberMarker, nil)
        }
        if nowNs - lastPublishNs >= 100_000_000 {
            lastPublishNs = nowNs
            publishStatistics()
        }
    }

    /// What INFO shows, from the engine thread (and once from `init`, before the first step).
    private func publishStatistics() {
        do {
            var snapshot = statistics
            snapshot.node = node.stats
            snapshot.hintsHeld = node.durable.hints.count
            snapshot.hintsDropped = Int(node.durable.hints.dropped)
            snapshot.membersAlive = node.placement.memberIDs.filter { node.liveness(of: $0) == .alive }.count
            snapshot.placementEpoch = node.placement.epoch
            snapshot.partitionsRebuilding = node.rebuildingPartitions.count
            snapshot.isMember = isMemberNow
            let placement = node.placement
            snapshot.change = !placement.isChanging ? "" : placement.members.filter { $0.state != .active }
                .map { "\($0.state == .joining ? "adding" : "removing") \($0.name)" }.joined(separator: ",")
            snapshot.partitionsMoving = placement.changingPartitions.filter { placement.isMoving($0) }.count
            snapshot.partitionsStreamingIn = node.incomingMoves.filter { placement.isMoving($0) }.count
            published.withLockedValue { $0 = snapshot }
        }
    }

    /// Whether the placement names this node (by name: ids are the placement's).
    private var isMemberNow: Bool { node.placement.member(node.id)?.name == name }

    private func removeMemberMarker() {
        memberMarkerWritten = false
        guard unlink(memberMarker) == 0 else { return }
        Self.syncDirectory(of: memberMarker)
    }

    private func writeMemberMarker() {
        memberMarkerWritten = true
        // The rebuilt records first: a marker on disk says they are.
        waitForDisk()
        Self.makeDirectory(of: memberMarker)
        let descriptor = open(memberMarker, O_CREAT | O_WRONLY, 0o644)
        guard descriptor >= 0 else {
            logger.error("cannot write the cluster member marker; the next start rebuilds every partition", metadata: ["path": "\(memberMarker)"])
            return
        }
        fsync(descriptor)
        close(descriptor)
        Self.syncDirectory(of: memberMarker)
        logger.info("holds every partition it owns", metadata: ["marker": "\(memberMarker)"])
    }

    /// Queues a hint of a durable namespace for the store's hint log, as urgently as its
    /// namespace's records (memory namespaces keep their hints in memory only: their records do
    /// not survive a restart either).
    private func persist(_ hint: HintStore.Hint) {
        guard let storage else { return }
        let namespace = hint.key.withUnsafeBytes { database.namespaces.index(of: $0) }
        guard let urgency = database.durableUrgency[namespace] else { return }
        storage.appendLog(key: HintCodec.key(id: hint.id), valueBytes: hint.bytes, urgency: urgency) { HintCodec.encode(hint) }
        durableHints.insert(hint.id)
    }

    /// Removes a hint from the store's hint log (replayed, replaced by a newer one for the same
    /// key and owner, evicted for the bound, or discarded).
    private func forgetHint(_ id: UInt64) {
        guard let storage, durableHints.remove(id) != nil else { return }
        storage.deleteLog(key: HintCodec.key(id: id))
    }

    /// The hints in the store's hint log, oldest first; an entry that does not decode is logged
    /// and removed (anti-entropy repairs what it owed).
    static func loadHints(from storage: StorageEngine, logger: Logger) -> [HintStore.Hint] {
        var hints: [HintStore.Hint] = []
        var start = HintCodec.firstKey
        while true {
            let batch: [(key: [UInt8], value: [UInt8])]
            do {
                batch = try storage.scanLog(from: start, to: HintCodec.endKey, limit: 4_096)
            } catch {
                logger.error("the hint log cannot be read; its hints are lost (anti-entropy repairs what they owed)", metadata: ["error": "\(error)"])
                return hints
            }
            for (key, value) in batch {
                do {
                    hints.append(try HintCodec.decode(key: key, value: value))
                } catch {
                    logger.error("a hint on disk does not decode; removed", metadata: ["error": "\(error)"])
                    storage.deleteLog(key: key)
                }
            }
            guard batch.count == 4_096, let last = batch.last else { return hints }
            start = last.key + [0]
        }
    }

    /// Returns once everything the keyspace queued for the disk so far is synced (the engine
    /// thread waits; never an event loop).
    private func waitForDisk() {
        guard let storage else { return }
        let sequence = storage.flushNow()
        while storage.durableSequence.load(ordering: .acquiring) < sequence { usleep(200) }
    }

    /// Creates the directory that holds `path` (one level, as the data directory's files need).
    private static func makeDirectory(of path: String) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        mkdir(String(path[..<slash]), 0o755)
    }

    /// Syncs the directory that holds `path`, so that a file created, renamed or removed there
    /// stays so after a crash.
    private static func syncDirectory(of path: String) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let descriptor = open(directory.isEmpty ? "/" : directory, O_RDONLY)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }

    private func finishRead(of quorum: Int, key: [UInt8], result: ClusterClientResult) {
        guard var state = readQuorums[quorum] else { return }
        switch result {
        case .read(let record?):
            // The merge of what the owners answered: the command runs on it.
            store.merge(key: key, state: record, partition: node.partition(of: key))
        case .read(nil), .written:
            break
        case .timedOut:
            state.answered = false
        }
        state.remaining -= 1
        if state.remaining == 0 {
            readQuorums[quorum] = nil
            state.completion(state.answered)
        } else {
            readQuorums[quorum] = state
        }
    }

    private func passOn(
        request: UInt64, coordinator: Int, partition: Int, protocolVersion: UInt8, commands: [[[UInt8]]], nowMs: Int64
    ) {
        let client = takeClient()
        let isWrite = commands.contains { command in
            command.first.flatMap { name in name.withUnsafeBytes { CommandTable.lookup($0) } }
                .map { CommandTable.shape($0).flags.contains(.write) } ?? true
        }
        forwardWaiters[client] = { [weak self] result in
            self?.enqueue([.commandRan(request: request, coordinator: coordinator, reply: CommandExecutor.replyBytes(of: result, isWrite: isWrite))])
        }
        statistics.commandsForwarded += 1
        if !forwarder.forward(
            client: client, partition: partition, protocolVersion: protocolVersion, passedOn: true, commands: commands,
            epoch: node.placement.epoch, primary: routingPrimary(of: partition), nowMs: nowMs) {
            forwardsWaitingForRoom.append((client, partition, protocolVersion, true, commands))
        }
    }

    private func runLocally(request: UInt64, commands: [[[UInt8]]], protocolVersion: UInt8) {
        guard let run = runner else { return }
        statistics.forwardedCommandsRun += 1
        run(commands, protocolVersion) { [weak self, id = node.id] reply in
            self?.enqueue([.commandRan(request: request, coordinator: id, reply: reply)])
        }
    }

    private func takeClient() -> UInt64 {
        defer { nextClient += 1 }
        return nextClient
    }

    private func retryForwardsWaitingForRoom(nowMs: Int64) {
        // In arrival order; a command whose link is still full keeps the later ones for the
        // same primary waiting behind it, not those for other primaries.
        var stillWaiting: [(client: UInt64, partition: Int, protocolVersion: UInt8, passedOn: Bool, commands: [[[UInt8]]])] = []
        var fullPrimaries = Set<Int>()
        for waiting in forwardsWaitingForRoom {
            let primary = routingPrimary(of: waiting.partition)
            if let primary, fullPrimaries.contains(primary) {
                stillWaiting.append(waiting)
                continue
            }
            if !forwarder.forward(
                client: waiting.client, partition: waiting.partition, protocolVersion: waiting.protocolVersion, passedOn: waiting.passedOn,
                commands: waiting.commands, epoch: node.placement.epoch, primary: primary, nowMs: nowMs) {
                if let primary { fullPrimaries.insert(primary) }
                stillWaiting.append(waiting)
            }
        }
        forwardsWaitingForRoom = stillWaiting
    }

    /// The member commands of `partition` go to: the core's primary (the first owner SWIM
    /// believes alive, this node unless it rebuilds the partition), skipping owners this node
    /// has no link to.
    private func routingPrimary(of partition: Int) -> Int? {
        guard !unreachable.isEmpty else { return node.primary(of: partition) }
        return node.placement.owners(of: partition).first { owner in
            owner == node.id ? !node.durable.rebuilding.contains(partition) : node.liveness(of: owner) == .alive && !unreachable.contains(owner)
        }
    }

    private func publishRouting() {
        // The table changes only with what `routingPrimary` looks at: skip the partitions when
        // none of it changed since the last step (most steps).
        // (The rebuilding set by its count and sum: it only shrinks today, and a partition that
        // joined it would change the sum too.)
        var inputs: [Int] = [
            Int(truncatingIfNeeded: node.placement.epoch), node.id, node.durable.rebuilding.count, node.durable.rebuilding.reduce(0, +),
        ]
        for member in node.placement.memberIDs {
            inputs.append(member)
            inputs.append(node.liveness(of: member) == .alive ? 1 : 0)
            inputs.append(unreachable.contains(member) ? 1 : 0)
        }
        guard inputs != routingInputs else { return }
        routingInputs = inputs
        let table = (0..<node.placement.partitionCount).map { routingPrimary(of: $0) ?? -1 }
        let isMember = isMemberNow
        routing.withLockedValue { $0 = Routing(me: node.id, isMember: isMember, primaries: table) }
    }

    // MARK: Placement (engine thread)

    /// Numbers every node of the data center: members by the placement; a node that was a
    /// member keeps its last id after it left (the placement never hands an id out twice), so
    /// that the answers to what was under way with it — commands forwarded to it while it was
    /// a primary, its replications — still match; the others (spares, nodes this node's
    /// placement does not list yet) by `nonMemberIDBase` plus their index in the configuration.
    private func indexMembers() {
        memberIDs = [:]
        memberNames = [:]
        for member in node.placement.members { formerMemberIDs[member.name] = member.id }
        // An id the placement gives to another name is that name's now.
        let current = Set(node.placement.members.map(\.name))
        formerMemberIDs = formerMemberIDs.filter { name, id in current.contains(name) || node.placement.member(id) == nil }
        for (index, node) in nodeNames.enumerated() {
            let id = formerMemberIDs[node] ?? Self.nonMemberIDBase + index
            memberIDs[node] = id
            memberNames[id] = node
        }
    }

    /// Placement messages, from any node of the data center (a spare too); true when `message`
    /// was one.
    private func receivePlacementMessage(_ message: ClusterMessage, from peer: String, nowMs: Int64) -> Bool {
        switch message {
        case .placementFetch(let epoch):
            // Equal epochs too: the asker compares (and a spare learns it is heard).
            if let applied = appliedPlacement, applied.epoch >= epoch {
                sendsByName[peer, default: []].append(ClusterCodec.encode(.placement(applied)))
            }
        case .placement(let placement):
            // Only what a voter's log applied is a committed placement.
            if voterNames.contains(peer) { learnPlacement(placement, nowMs: nowMs) }
        case .placementChange(let request, let change):
            guard placementLog != nil else {
                if request != 0 {
                    sendsByName[peer, default: []].append(ClusterCodec.encode(.placementChangeReply(
                        request: request, outcome: .refused("'\(name)' is not a placement voter"))))
                }
                return true
            }
            if let refusal = liveRefusal(of: change, nowMs: nowMs) {
                if request != 0 {
                    sendsByName[peer, default: []].append(ClusterCodec.encode(.placementChangeReply(request: request, outcome: .refused(refusal))))
                }
                return true
            }
            commitChange(change) { [weak self] outcome in
                guard request != 0 else { return }
                self?.enqueue([.changeDecided(request: request, requester: peer, outcome)])
            }
        case .placementChangeReply(let request, let outcome):
            finishChange(request: request, outcome: outcome)
        default:
            return false
        }
        return true
    }

    private func finishChange(request: UInt64, outcome: PlacementChangeOutcome) {
        guard let asked = changesAsked.removeValue(forKey: request) else { return }
        if case .committed = outcome { statistics.changesCommitted += 1 } else { statistics.changesRefused += 1 }
        asked.completion(outcome)
    }

    /// Takes a newer placement: saved first (a restart starts from it), then given to the core
    /// — or, when it names this node under another id (a spare just added), the core starts
    /// over as that member, holding nothing it owns yet (its moves bring it).
    private func learnPlacement(_ next: Placement, nowMs: Int64) {
        // Equal epochs differ only when this node's configuration made another first placement
        // than the one the log committed (spares or order differ): the log's stands.
        let disagrees = next.epoch == node.placement.epoch && next != node.placement
        guard next.epoch > node.placement.epoch || disagrees else { return }
        guard next.partitionCount == firstPlacement.partitionCount, next.replicationFactor == firstPlacement.replicationFactor else {
            logger.error("a placement of another layout was refused", metadata: ["placement": "\(next)"])
            return
        }
        if disagrees {
            logger.critical("this node's configuration gives another first placement than its data center committed; it takes the committed one (make every node's configuration list the same nodes, in the same order, with the same spares)", metadata: [
                "committed": "\(next)", "configured": "\(node.placement)",
            ])
            // The ids of the configured first placement meant nothing; the marker goes before
            // the placement is saved (a crash between must not keep it). The core cannot take
            // another placement at the same epoch: it starts over, rebuilding what it owns.
            formerMemberIDs = [:]
            removeMemberMarker()
            savePlacement(next)
            let named = next.members.first(where: { $0.name == name })?.id
            startOver(as: named ?? Self.nonMemberIDBase + configIndex, placement: next, nowMs: nowMs)
            indexMembers()
            publishedPlacement.withLockedValue { $0 = next }
            return
        }
        let startsOver = next.members.first(where: { $0.name == name }).map { $0.id != node.id }
            ?? (next.member(node.id).map { $0.name != name } ?? false)
        if startsOver { removeMemberMarker() }
        savePlacement(next)
        // The core starts over when the placement names this node under another id (a spare
        // just added), or gives the id it runs as to another node (its configuration put it in
        // the first placement where the log's has someone else); a node just removed keeps its
        // core, so that what it still had under way finishes.
        if let named = next.members.first(where: { $0.name == name })?.id, named != node.id {
            startOver(as: named, placement: next, nowMs: nowMs)
        } else if let holder = next.member(node.id), holder.name != name {
            startOver(as: Self.nonMemberIDBase + configIndex, placement: next, nowMs: nowMs)
        } else {
            node.learn(next, nowMs: nowMs)
        }
        indexMembers()
        publishedPlacement.withLockedValue { $0 = next }
        logger.info("placement learned", metadata: ["placement": "\(next)"])
    }

    /// Replaces the core by one running as member `id` of `placement`, holding what the
    /// keyspace holds, with `lostData` (it owns nothing it has streamed in under that id). What
    /// the old core had produced this step is still carried out; what it was waiting for
    /// (replications, read quorums) fails as a timeout would. The marker goes: it described
    /// the old member.
    private func startOver(as id: Int, placement: Placement, nowMs: Int64) {
        // The old core's hints go with it, on disk too.
        leftoverOutputs += node.takeOutputs().filter {
            switch $0 {
            case .persist(.hintStored), .persist(.hintRemoved): false
            default: true
            }
        }
        if let storage {
            // Synced before the new core makes hints: its ids start over, and a removal queued
            // with them would remove theirs (a batch writes appends before removals).
            storage.trimLog(from: HintCodec.firstKey, to: HintCodec.endKey)
            waitForDisk()
            durableHints.removeAll()
        }
        for (_, completion) in writeWaiters { completion(false) }
        writeWaiters.removeAll()
        for (_, quorum) in readQuorums { quorum.completion(false) }
        readQuorums.removeAll()
        readWaiters.removeAll()
        let durable = ClusterDurableState(store: store, placement: placement, hintsBytesMax: settings.hintsBytesMax, lostData: true)
        node = ClusterNode(
            id: id, origin: database.origin, durable: durable, settings: settings, nowMs: nowMs,
            incarnation: UInt64(max(1, SystemClock.nowUnixMs())))
        unreachable.removeAll()
        removeMemberMarker()
        logger.info(id >= Self.nonMemberIDBase ? "the placement does not name this node" : "the placement names this node", metadata: ["member": "\(id)"])
    }

    /// Writes the placement to `<data_dir>/cluster-placement` (a new file renamed over the old,
    /// both synced): a node restarts from the newest placement it learned.
    private func savePlacement(_ placement: Placement) {
        let bytes = PlacementCodec.encode(placement)
        let temporary = placementFile + ".new"
        Self.makeDirectory(of: placementFile)
        let descriptor = open(temporary, O_CREAT | O_TRUNC | O_WRONLY, 0o644)
        guard descriptor >= 0 else {
            logger.error("cannot save the placement; a restart starts from an older one and fetches the newest", metadata: ["path": "\(temporary)"])
            return
        }
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fsync(descriptor)
        close(descriptor)
        guard written == bytes.count, rename(temporary, placementFile) == 0 else {
            logger.error("cannot save the placement; a restart starts from an older one and fetches the newest", metadata: ["path": "\(placementFile)"])
            return
        }
        Self.syncDirectory(of: placementFile)
    }

    /// Sends an operator's change to the next placement voter.
    private func sendChange(request: UInt64) {
        guard let asked = changesAsked[request], let voter = nextVoter() else { return }
        changesAsked[request]?.sent = true
        sendsByName[voter, default: []].append(ClusterCodec.encode(.placementChange(request: request, change: asked.change)))
        changesSentThisStep[voter, default: []].append(request)
    }

    /// Asks a placement voter for a newer placement (a voter learns from its own log); at most
    /// one fetch per 100 ms, the voters taking turns.
    private func fetchPlacement(nowMs: Int64) {
        guard placementLog == nil, nowMs - lastFetchMs >= 100, let voter = nextVoter() else { return }
        lastFetchMs = nowMs
        sendsByName[voter, default: []].append(ClusterCodec.encode(.placementFetch(epoch: node.placement.epoch)))
    }

    /// The next placement voter to ask (not this node), taking turns.
    private func nextVoter() -> String? {
        let others = voterNames.filter { $0 != name }
        guard !others.isEmpty else { return nil }
        voterTurn += 1
        return others[voterTurn % others.count]
    }

    static let noQuorumReason = "the placement voters have no quorum; the change was not committed"

    /// Commits the configuration's placement as the log's first (compare-and-set on an absent
    /// key: a voter that comes second changes nothing), so that every node compares its own
    /// first placement with the committed one; asked again every second until the log holds one.
    private func commitFirstPlacement() {
        guard let log = placementLog else { return }
        let write = StrongCommand(.set(key: Self.placementKey, value: PlacementCodec.encode(firstPlacement), options: SetOptions(condition: .ifAbsent)))
        log.submit(write, partition: 0) { [weak self] result in
            // OK: committed here; nil: one was there already.
            if case .reply = result { self?.enqueue([.placementLogHoldsOne]) }
        }
    }

    /// Runs `change` through the placement log (this node is a voter): reads the committed
    /// placement (linearizably), applies the change to it, and commits the result by
    /// compare-and-set on the bytes it read; a change committed meanwhile (another voter's)
    /// makes it read again, three times at most. `reply` is called once, on the log's thread.
    private func commitChange(_ change: PlacementChange, attempt: Int = 1, reply: @escaping ChangeCompletion) {
        guard let log = placementLog else { return }
        let first = firstPlacement
        log.submit(StrongCommand(.get(key: Self.placementKey)), partition: 0) { [weak self] result in
            guard let self else { return }
            guard case .reply(let read) = result else { return reply(.refused(Self.noQuorumReason)) }
            var currentBytes: [UInt8]?
            if case .bulk(let bytes) = read { currentBytes = bytes }
            var current = first
            if let currentBytes {
                guard let decoded = try? PlacementCodec.decode(currentBytes) else {
                    return reply(.refused("the placement log holds bytes that are not a placement"))
                }
                current = decoded
            }
            if let refusal = self.refusal(of: change, at: current) { return reply(.refused(refusal)) }
            var effective = change
            if case .switching(let partitions, let changeEpoch) = change, changeEpoch == current.changeEpoch {
                // A switch asked again, or by two voters at once: what switched already is done.
                let moving = partitions.filter { (0..<current.partitionCount).contains($0) && current.isMoving($0) }
                if !moving.isEmpty && moving.count < partitions.count { effective = .switching(partitions: moving, changeEpoch: changeEpoch) }
            }
            let next: Placement
            do {
                next = try current.applying(effective)
            } catch {
                return reply(.refused(String(describing: error)))
            }
            let condition: SetOptions.Condition = currentBytes.map { .ifEqual($0) } ?? .ifAbsent
            let write = StrongCommand(.set(key: Self.placementKey, value: PlacementCodec.encode(next), options: SetOptions(condition: condition)))
            log.submit(write, partition: 0) { [weak self] result in
                switch result {
                case .reply(.ok):
                    reply(.committed(epoch: next.epoch))
                case .reply:
                    if attempt < 3, let self {
                        self.commitChange(change, attempt: attempt + 1, reply: reply)
                    } else {
                        reply(.refused("the placement changed while this change was being made; try again"))
                    }
                case .noQuorum:
                    reply(.refused(Self.noQuorumReason))
                case .uncertain:
                    reply(.refused("the placement log did not answer in time; the change may have been committed (see INFO cluster)"))
                }
            }
        }
    }

    /// How long a node may have been silent and still be added: a spare asks a voter for the
    /// placement every second, the voters taking turns.
    static let addedNodeSilenceMsMax: Int64 = 10_000

    /// Why this voter refuses `change` before asking the log: a node to add that it has not
    /// heard from lately (its partitions would wait for it, and writes to them with them).
    private func liveRefusal(of change: PlacementChange, nowMs: Int64) -> String? {
        guard case .add(let added) = change, nodeNames.contains(added), added != name else { return nil }
        guard let heard = lastHeardMs[added], nowMs - heard <= Self.addedNodeSilenceMsMax else {
            return "'\(added)' has not been heard from in the last \(Self.addedNodeSilenceMsMax / 1000) s: start it first (it receives its partitions while it runs)"
        }
        return nil
    }

    /// Why the data center refuses `change` on top of `current`, beyond what `Placement` checks.
    private func refusal(of change: PlacementChange, at current: Placement) -> String? {
        switch change {
        case .add(let added):
            guard nodeNames.contains(added) else {
                return "'\(added)' is not a node of this data center in the configuration (every node's configuration lists the nodes it may add, as spares)"
            }
        case .remove(let removed):
            if voterNames.contains(removed) {
                return "'\(removed)' is a placement voter, and the placement voters are fixed (cluster.placement_voters)"
            }
            if current.members.contains(where: { $0.name == removed }) && current.members.count - 1 < current.replicationFactor {
                return "removing '\(removed)' would leave \(current.members.count - 1) members for replication factor \(current.replicationFactor)"
            }
        case .switching:
            break
        }
        return nil
    }
}
