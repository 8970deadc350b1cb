#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeridianCluster
import MeridianCore
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
/// Member `i` is the data center's node `i` in the configuration; the placement is the
/// configuration's at epoch 1 (adding and removing nodes is not served yet).
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

    enum Input {
        case replicate(key: [UInt8], record: DurableRecord, acks: AckCount, WriteCompletion)
        case readQuorum(keys: [(key: [UInt8], acks: AckCount)], ReadCompletion)
        case forward(partition: Int, protocolVersion: UInt8, commands: [[[UInt8]]], ForwardCompletion)
        case message(ClusterMessage, from: Int)
        case commandRan(request: UInt64, coordinator: Int, reply: [UInt8])
        case linkLost(Int)
        case tick
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
    }

    /// The data center's node names, by member id.
    public let memberNames: [String]
    public let me: Int
    public let partitioner: Partitioner
    private let logger: Logger
    private let storage: StorageEngine?
    /// Whether a replica's merge must be synced before its acknowledgement leaves.
    private let syncsMerges: Bool
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
    private let routing: NIOLockedValueBox<[Int]>
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
    private var publishedRouting: [Int] = []
    /// What the published table was computed from (`publishRouting`).
    private var routingInputs: [Int] = []
    /// Members this node has no link to right now (a send found none, or the link dropped),
    /// until a message from them arrives: no command is routed to them meanwhile, even while
    /// SWIM still believes them alive (its verdict takes a probe period and a suspicion).
    private var unreachable: Set<Int> = []
    private let memberMarker: String
    private var memberMarkerWritten: Bool

    static let tickMs: Int64 = 10

    /// The answer to a command passed on by an owner rebuilding the partition, at another owner
    /// that rebuilds it too (a new data center's first seconds, or two owners that lost their
    /// data at once): nothing ran; the client may retry.
    static let rebuildingReply = Array("-TRYAGAIN the partition's replicas are being rebuilt; the command did not run\r\n".utf8)

    static func nowMs() -> Int64 { Int64(SystemClock.monotonicNs() / 1_000_000) }

    /// `memberMarker`: a file that exists once this node held all its partitions (written
    /// when its rebuilds end). A node starts as having lost its data — it rebuilds every
    /// partition it owns from the other owners before it answers reads of it — when the
    /// marker is missing (a new or wiped data directory), or when some namespace keeps
    /// nothing on disk (its keys did not survive the restart).
    public init(
        configuration: MeridianConfiguration, datacenter: Int, node me: Int, database: Database, settings: ClusterSettings,
        memberMarker: String, logger: Logger
    ) {
        let dc = configuration.cluster.datacenters[datacenter]
        self.memberNames = dc.nodes.map(\.name)
        self.me = me
        self.logger = logger
        self.storage = database.storage
        self.syncsMerges = database.hasWriteThroughNamespaces
        let placement = Placement(
            memberNames: memberNames, partitionCount: configuration.cluster.partitions,
            replicationFactor: configuration.cluster.replicationFactor)
        self.partitioner = Partitioner(partitionCount: placement.partitionCount)
        self.memberMarker = memberMarker
        let lostData = access(memberMarker, F_OK) != 0 || configuration.namespaces.contains { $0.durability == .memory }
        self.memberMarkerWritten = !lostData
        self.store = ShardedReplicaStore(database: database)
        let durable = ClusterDurableState(
            store: store, placement: placement, hintsBytesMax: settings.hintsBytesMax, lostData: lostData)
        let now = Self.nowMs()
        // The incarnation grows across restarts (the wall clock's milliseconds will do).
        let incarnation = UInt64(max(1, SystemClock.nowUnixMs()))
        self.node = ClusterNode(
            id: me, origin: database.origin, durable: durable, settings: settings, nowMs: now, incarnation: incarnation)
        self.forwarder = CommandForwarder(
            requestTimeoutMs: settings.requestTimeoutMs, inFlightPerLinkMax: configuration.cluster.scaleOut.forwardsInFlight,
            messageBytesMax: Frame.payloadBytesMax, incarnation: incarnation)
        self.random = SplitMix64(seed: UInt64(truncatingIfNeeded: SystemClock.nowUnixMs()) &+ UInt64(me))
        self.routing = NIOLockedValueBox((0..<placement.partitionCount).map { _ in -1 })
        publishRouting()
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
    }

    /// How forwarded commands run on this node.
    public func attach(runner run: @escaping CommandRunner) {
        callbacks.withLock { runCommands = run }
    }

    public func stop() {
        tickTask.withLockedValue { $0?.cancel() }
        inbox.stop()
    }

    // MARK: From event loops

    /// The partition of a key.
    public func partition(of key: ByteBuffer) -> Int {
        key.withUnsafeReadableBytes { partitioner.partition(of: $0) }
    }

    /// The partition's primary as the engine last saw it (nil: no owner alive).
    public func primary(of partition: Int) -> Int? {
        guard partition >= 0 && partition < partitioner.partitionCount else { return nil }
        let member = routing.withLockedValue { $0[partition] }
        return member < 0 ? nil : member
    }

    /// Replicates a record this node's keyspace holds after a command ran here; `completion`
    /// is called once, on the engine thread.
    public func replicate(key: [UInt8], record: DurableRecord, acks: AckCount, completion: @escaping WriteCompletion) {
        enqueue([.replicate(key: key, record: record, acks: acks, completion)])
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
        guard let member = memberNames.firstIndex(of: peer), member != me else { return }
        let message = try ClusterCodec.decode(payload)
        enqueue([.message(message, from: member)])
    }

    /// The link to `peer` closed: commands forwarded over it may have run, and get no reply.
    public func linkLost(toPeer peer: String) {
        guard let member = memberNames.firstIndex(of: peer), member != me else { return }
        enqueue([.linkLost(member)])
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
            case .message(let message, let from):
                statistics.messagesReceived += 1
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
                if coordinator == me {
                    // Forwarded to this node itself (it became the primary while the command
                    // waited): the reply goes straight back to the forwarder.
                    forwarder.receive(.commandReply(request: request, outcome: .executed(reply: reply)), from: me)
                    continue
                }
                // The reply travels in one frame with its request number and length.
                let fits = reply.count + 32 <= Frame.payloadBytesMax
                replies.append((coordinator, request, fits ? MeridianCluster.CommandOutcome.executed(reply: reply) : .replyTooLarge))
            case .linkLost(let member):
                unreachable.insert(member)
                forwarder.linkLost(member)
            case .tick:
                node.tick(nowMs: now, random: &random)
                let placement = node.placement
                forwarder.tick(nowMs: now, epoch: placement.epoch) { routingPrimary(of: $0) }
                retryForwardsWaitingForRoom(nowMs: now)
            }
        }
        var outgoing: [Int: [[UInt8]]] = [:]
        var mergedRecords = false
        for output in node.takeOutputs() {
            switch output {
            case .persist(let change):
                // Records and dropped partitions are already in the shards and queued for the
                // disk (the store is the keyspace); hints, the placement and the last stamp are
                // kept in memory only for now (docs/CLUSTER.md, "The server wiring").
                if case .record = change { mergedRecords = true }
            case .send(let to, let message):
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
            case .fetchPlacement, .proposeSwitch:
                // The placement is the configuration's, at epoch 1: nothing to fetch or switch.
                break
            }
        }
        for (to, request, outcome) in replies {
            outgoing[to, default: []].append(ClusterCodec.encode(.commandReply(request: request, outcome: outcome)))
        }
        var forwardedTo: [Int: [UInt64]] = [:]
        for output in forwarder.takeOutputs() {
            switch output {
            case .send(me, .command(let request, _, _, let protocolVersion, _, let commands)):
                // This node is the primary now (never while it rebuilds the partition: the
                // routing skips it): it runs the command as if it had been sent here.
                runLocally(request: request, commands: commands, protocolVersion: protocolVersion)
            case .send(let to, let message):
                if case .command(let request, _, _, _, _, _) = message { forwardedTo[to, default: []].append(request) }
                outgoing[to, default: []].append(ClusterCodec.encode(message))
            case .reply(let client, let result):
                forwardWaiters.removeValue(forKey: client)?(result)
            case .fetchPlacement:
                break
            }
        }
        if mergedRecords, syncsMerges, let storage {
            // Acknowledgements of merges leave only once a write-through record is on disk.
            let sequence = storage.flushNow()
            while storage.durableSequence.load(ordering: .acquiring) < sequence { usleep(200) }
        }
        let send = sender
        for (to, payloads) in outgoing {
            if let send, send(memberNames[to], payloads) {
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
        if !memberMarkerWritten && node.rebuildingPartitions.isEmpty { writeMemberMarker() }
        let nowNs = SystemClock.monotonicNs()
        if nowNs - lastPublishNs >= 100_000_000 {
            lastPublishNs = nowNs
            var snapshot = statistics
            snapshot.node = node.stats
            snapshot.hintsHeld = node.durable.hints.count
            snapshot.hintsDropped = Int(node.durable.hints.dropped)
            snapshot.membersAlive = memberNames.indices.filter { node.liveness(of: $0) == .alive }.count
            snapshot.placementEpoch = node.placement.epoch
            snapshot.partitionsRebuilding = node.durable.rebuilding.filter { node.placement.owners(of: $0).contains(me) }.count
            published.withLockedValue { $0 = snapshot }
        }
    }

    private func writeMemberMarker() {
        memberMarkerWritten = true
        if let storage {
            // The rebuilt records first: a marker on disk says they are.
            let sequence = storage.flushNow()
            while storage.durableSequence.load(ordering: .acquiring) < sequence { usleep(200) }
        }
        let directory = String(memberMarker[..<(memberMarker.lastIndex(of: "/") ?? memberMarker.startIndex)])
        if !directory.isEmpty { mkdir(directory, 0o755) }
        let descriptor = open(memberMarker, O_CREAT | O_WRONLY, 0o644)
        guard descriptor >= 0 else {
            logger.error("cannot write the cluster member marker; the next start rebuilds every partition", metadata: ["path": "\(memberMarker)"])
            return
        }
        fsync(descriptor)
        close(descriptor)
        if !directory.isEmpty {
            // The marker's directory entry, too.
            let directoryDescriptor = open(directory, O_RDONLY)
            if directoryDescriptor >= 0 {
                fsync(directoryDescriptor)
                close(directoryDescriptor)
            }
        }
        logger.info("holds every partition it owns", metadata: ["marker": "\(memberMarker)"])
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
        run(commands, protocolVersion) { [weak self, me] reply in
            self?.enqueue([.commandRan(request: request, coordinator: me, reply: reply)])
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
            owner == me ? !node.durable.rebuilding.contains(partition) : node.liveness(of: owner) == .alive && !unreachable.contains(owner)
        }
    }

    private func publishRouting() {
        // The table changes only with what `routingPrimary` looks at: skip the partitions when
        // none of it changed since the last step (most steps).
        // (The rebuilding set by its count and sum: it only shrinks today, and a partition that
        // joined it would change the sum too.)
        var inputs: [Int] = [
            Int(truncatingIfNeeded: node.placement.epoch), node.durable.rebuilding.count, node.durable.rebuilding.reduce(0, +),
        ]
        for member in memberNames.indices {
            inputs.append(node.liveness(of: member) == .alive ? 1 : 0)
            inputs.append(unreachable.contains(member) ? 1 : 0)
        }
        guard inputs != routingInputs else { return }
        routingInputs = inputs
        let table = (0..<node.placement.partitionCount).map { routingPrimary(of: $0) ?? -1 }
        guard table != publishedRouting else { return }
        publishedRouting = table
        routing.withLockedValue { $0 = table }
    }
}
