import MeridianCluster
import MeridianCore
import MeridianPaxos
import MeridianWire

/// What a `ClusterSimulation` runs: the data center, its traffic and its faults.
public struct ClusterSimulationOptions: Sendable {
    public var nodes = 5
    public var replicationFactor = 3
    public var partitions = 16
    public var keys = 48
    /// Simulated time with faults and client traffic.
    public var faultMs: Int64 = 30_000
    /// The longest the system may take to go quiet afterwards.
    public var healMsMax: Int64 = 120_000
    public var stepMs: Int64 = 10
    public var lossPercent = 3
    public var duplicatePercent = 2
    public var delayMsMax: Int64 = 20
    /// Per mille per step that an up member crashes (at most `downMax` down at once).
    public var crashPerMille = 2
    public var downMax = 2
    /// Per mille per step that a down node restarts.
    public var restartPerMille = 8
    /// Per mille per step that a link between two nodes is cut for 0.2–3 s.
    public var cutPerMille = 3
    /// Per mille per step that a node is added or removed (when no change is running).
    public var changePerMille = 1
    public var membersMin = 4
    public var membersMax = 7
    /// Client commands per step (each a write, a delete or a read at a random member).
    public var commandsPerStep = 1
    public var writeAcks = AckCount.quorum
    public var readAcks = AckCount.quorum
    /// Percent of commands that increment a counter key (`counter:N`, `counterKeys` of them)
    /// as a primary does (docs/CLUSTER.md, "The server wiring"): at a node that owns the
    /// key's partition, a read quorum first, then the increment added to what the node holds
    /// merged with what the read returned, as this node's counter contribution, replicated by
    /// `ClusterNode.replicate(record:)`. 0 (the default) leaves the other seeds' runs as they were.
    public var incrementPercent = 0
    public var counterKeys = 6
    /// A member that is not a placement voter loses its disk (store and hints) at a random
    /// moment of the faults, and one (perhaps the same) when they stop; each restarts empty,
    /// knowing it lost its data, and must answer no read before it rebuilt its partitions
    /// from the other owners.
    public var wipeOneMember = false
    public var settings: ClusterSettings = {
        var settings = ClusterSettings()
        settings.antiEntropyIntervalMs = 2_000
        settings.graceMs = 1_000
        settings.moveChunkEntries = 4
        settings.moveChunksPerTick = 1
        // Small message bounds, so that anti-entropy and moves run past one message.
        settings.antiEntropyEntriesMax = 3
        settings.entriesBytesMax = 160
        settings.moveRetryMs = 500
        settings.hintsBytesMax = 1 << 20
        return settings
    }()

    public init() {}
}

/// What a `ClusterSimulation` run saw, and the first invariant it found broken.
public struct ClusterSimulationOutcome: Sendable, CustomStringConvertible {
    public var problem: String?
    public var writesAcknowledged = 0
    public var writesTimedOut = 0
    public var incrementsAcknowledged = 0
    public var readsChecked = 0
    public var crashes = 0
    public var wipes = 0
    public var partitionsRebuilt: UInt64 = 0
    public var joins = 0
    public var leaves = 0
    public var switches = 0
    public var hintsStored: UInt64 = 0
    public var hintsReplayed: UInt64 = 0
    public var readRepairs: UInt64 = 0
    public var antiEntropyRepairs: UInt64 = 0
    public var moveEntries: UInt64 = 0
    public var healMs: Int64 = 0

    public init() {}

    public var passed: Bool { problem == nil }

    public var description: String {
        "acked=\(writesAcknowledged) timedOut=\(writesTimedOut) readsChecked=\(readsChecked) crashes=\(crashes) wipes=\(wipes) rebuilt=\(partitionsRebuilt) joins=\(joins) leaves=\(leaves) switches=\(switches) hints=\(hintsStored)/\(hintsReplayed) readRepairs=\(readRepairs) aeRepairs=\(antiEntropyRepairs) moved=\(moveEntries) healMs=\(healMs)"
                + (incrementsAcknowledged > 0 ? " increments=\(incrementsAcknowledged)" : "")
            + (problem.map { " problem: \($0)" } ?? "")
    }
}

/// A deterministic simulation of one data center scaled out (docs/CLUSTER.md): `ClusterNode`s
/// (coordinators, replicas, SWIM members, hint keepers, anti-entropy peers, move endpoints)
/// exchange `ClusterMessage`s over a network that loses, duplicates, delays and reorders them
/// and cuts links for a while; nodes crash (keeping the disk their `persist` outputs built, which
/// must hold everything they held) and restart; nodes
/// join and leave through committed placement changes. The placement is committed as the
/// server will commit it (docs/CLUSTER.md, "The server wiring"): the first three members are
/// the placement log's voters, running `PaxosReplica` over the same faulty network and crashing
/// with their node; a change, and each partition's switch, is a compare-and-set of the
/// placement's bytes (`PlacementCodec`) submitted to a live voter, and nodes learn what the
/// voters applied late, from broadcasts that may be lost and from their own fetches.
///
/// After the faults stop, `run` restarts every member, heals the links, lets the change in
/// progress finish and the system go quiet, then checks the invariants of docs/CLUSTER.md:
/// every acknowledged write is on every owner (or superseded), owners converge, hints drain,
/// partitions end on exactly their owners. During the run, whenever W + R > RF, it checks that
/// a read whose coordinator knew the committed epoch, and whose epoch did not change before the
/// answer, sees every write acknowledged before it began.
/// The replicas live in `Store`: `MemoryReplicaStore`, or `KeyspaceReplicaStore` (the keyspace
/// the server runs on, docs/CLUSTER.md "The server wiring").
public struct ClusterSimulation<Store: ReplicaStore> {
    public typealias Options = ClusterSimulationOptions
    public typealias Outcome = ClusterSimulationOutcome

    enum Event {
        case message(from: Int, to: Int, ClusterMessage)
        case paxos(from: Int, to: Int, PaxosMessage)
        case placement(to: Int)
        case proposal(from: Int, partitions: [Int], changeEpoch: UInt64)
    }

    struct Scheduled {
        var atMs: Int64
        var order: UInt64
        var event: Event
    }

    struct SimulatedNode {
        var node: ClusterNode<Store>?
        /// The node's disk: built only from its `persist` outputs, and what a restart gets.
        var saved: ClusterDurableState<Store>
        var random: SplitMix64
        /// A placement voter's part of the placement log, and its disk.
        var voter: PaxosReplica?
        var voterDisk = PaxosDurableState()
        var voterStarted = false
    }

    /// The key of the placement in the placement log.
    static var placementKey: [UInt8] { Array("placement".utf8) }
    /// The placement log's voters: the first members (ids 0, 1, 2), never removed.
    let voters: [Int]
    var nextLogClient: UInt64 = 1

    enum Command {
        case write(key: Int, value: [UInt8]?)
        /// An increment's first step: the read quorum.
        case incrementRead(key: Int, delta: UInt64)
        /// An increment's second step: the record with the node's contribution raised.
        case incrementWrite(key: Int, delta: UInt64)
        case read(key: Int, epoch: UInt64, acknowledgedBefore: LWWStamp?, checked: Bool)
    }

    public let seed: UInt64
    public let options: Options
    var random: SplitMix64
    var nowMs: Int64 = 0
    /// The newest placement any voter has applied (the initial one until a change commits).
    var committed: Placement
    let initial: Placement
    var nodes: [Int: SimulatedNode] = [:]
    var queue: [Scheduled] = []
    var order: UInt64 = 0
    var cuts: [(a: Int, b: Int, untilMs: Int64)] = []
    var clients: [UInt64: (node: Int, command: Command)] = [:]
    var nextClient: UInt64 = 1
    var nextValue = 0
    /// Per key: the newest acknowledged stamp.
    var acknowledged: [Int: LWWStamp] = [:]
    /// Per counter key and executing node: the increments acknowledged.
    var acknowledgedIncrements: [Int: [Int: UInt64]] = [:]
    var outcome = Outcome()
    var faults = true
    /// Nodes removed by a finished change: stopped, never restarted.
    var retired: Set<Int> = []
    /// When a member loses its disk during the faults (nil: done, or not asked for).
    var wipeAtMs: Int64?

    /// An empty store for a node (started without a disk, or wiped).
    let makeStore: (_ partitionCount: Int) -> Store

    public init(seed: UInt64, options: Options = Options(), makeStore: @escaping (_ partitionCount: Int) -> Store) {
        self.makeStore = makeStore
        self.seed = seed
        self.options = options
        self.random = SplitMix64(seed: seed)
        self.committed = Placement(
            memberNames: (0..<options.nodes).map { "node-\($0)" }, partitionCount: options.partitions,
            replicationFactor: options.replicationFactor)
        self.initial = committed
        self.voters = Array(0..<min(3, options.nodes))
        for id in 0..<options.nodes { start(id, durable: nil) }
        if options.wipeOneMember {
            wipeAtMs = Int64.random(in: options.faultMs / 4...options.faultMs / 2, using: &random) / options.stepMs * options.stepMs
        }
    }

    static func key(_ index: Int) -> [UInt8] { Array("key:\(index)".utf8) }
    static func counterKey(_ index: Int) -> [UInt8] { Array("counter:\(index)".utf8) }

    mutating func start(_ id: Int, durable: ClusterDurableState<Store>?) {
        let state = durable ?? ClusterDurableState(
            store: makeStore(options.partitions), placement: committed, hintsBytesMax: options.settings.hintsBytesMax)
        let node = ClusterNode(
            id: id, origin: ReplicaID(datacenter: 0, node: UInt16(id)), durable: state, settings: options.settings, nowMs: nowMs,
            incarnation: UInt64(nowMs) + 1)
        var simulated = nodes[id] ?? SimulatedNode(node: nil, saved: state, random: SplitMix64(seed: 0))
        simulated.node = node
        simulated.saved = state
        simulated.random = SplitMix64(seed: seed &* 31 &+ UInt64(id) &+ UInt64(nowMs))
        nodes[id] = simulated
        if voters.contains(id) {
            let configuration = PaxosConfiguration(voterCount: voters.count, learners: voters, me: id, partitionCount: 1)
            nodes[id]!.voter = PaxosReplica(
                configuration: configuration, durable: nodes[id]!.voterDisk, now: logTime,
                seed: seed &* 7 &+ UInt64(id) &+ UInt64(nowMs), restarted: nodes[id]!.voterStarted)
            nodes[id]!.voterStarted = true
        }
        collect(id)
    }

    var logTime: PaxosTime { PaxosTime(monotonicMs: nowMs, wallMs: 1_700_000_000_000 + nowMs) }

    /// The member crashes and comes back (when restarted) with an empty disk.
    mutating func wipe(_ id: Int) {
        crash(id)
        nodes[id]!.saved = ClusterDurableState(
            store: makeStore(options.partitions), placement: committed, hintsBytesMax: options.settings.hintsBytesMax, lostData: true)
        outcome.wipes += 1
    }

    mutating func crash(_ id: Int) {
        guard let node = nodes[id]?.node else { return }
        // What it persisted is what it keeps (`saved` follows its persist outputs): it must be
        // everything it held (compared here, where it matters, rather than after every step).
        if outcome.problem == nil, !nodes[id]!.saved.holdsTheSame(as: node.durable) {
            outcome.problem = "member \(id) crashed with a persisted state that differs from its state in memory"
        }
        nodes[id]!.node = nil
        nodes[id]!.voter = nil
        // Its clients lose their connection: the outcome of their commands is unknown.
        clients = clients.filter { $0.value.node != id }
        outcome.crashes += 1
    }

    /// Runs the seed: faults and traffic, then healing, then the checks.
    public mutating func run() -> Outcome {
        while nowMs < options.faultMs && outcome.problem == nil {
            step()
        }
        faults = false
        cuts.removeAll()
        let healStart = nowMs
        // A voter keeps its placement log (a voter that lost it would have to rejoin the group as
        // a new voter, which is not built): the disk a victim loses is its data.
        if options.wipeOneMember, let victim = committed.memberIDs.filter({ !voters.contains($0) }).randomElement(using: &random) {
            wipe(victim)
        }
        for id in nodes.keys.sorted() where nodes[id]!.node == nil && !retired.contains(id) && committed.member(id) != nil {
            start(id, durable: nodes[id]!.saved)
        }
        while outcome.problem == nil && nowMs - healStart < options.healMsMax {
            step()
            if nowMs % 1_000 == 0, quiet() { break }
        }
        outcome.healMs = nowMs - healStart
        if outcome.problem == nil { outcome.problem = check() }
        for id in nodes.keys.sorted() where outcome.problem == nil {
            if let node = nodes[id]?.node, !nodes[id]!.saved.holdsTheSame(as: node.durable) {
                outcome.problem = "member \(id)'s persisted state differs from its state in memory"
            }
        }
        for id in nodes.keys.sorted() {
            guard let stats = nodes[id]?.node?.stats else { continue }
            outcome.hintsStored += stats.hintsStored
            outcome.hintsReplayed += stats.hintsReplayed
            outcome.readRepairs += stats.readRepairs
            outcome.antiEntropyRepairs += stats.antiEntropyRepairs
            outcome.moveEntries += stats.moveEntriesReceived
            outcome.partitionsRebuilt += stats.partitionsRebuilt
        }
        return outcome
    }

    mutating func step() {
        nowMs += options.stepMs
        if faults { injectFaults() }
        if faults { issueCommands() }
        deliverDueEvents()
        for id in nodes.keys.sorted() where nodes[id]!.node != nil {
            var generator = nodes[id]!.random
            nodes[id]!.node!.tick(nowMs: nowMs, random: &generator)
            nodes[id]!.random = generator
            collect(id)
        }
        for id in voters where nodes[id]?.voter != nil {
            nodes[id]!.voter!.tick(now: logTime)
            drainLog(id)
        }
        retireRemovedNodes()
    }

    // MARK: Faults and traffic

    mutating func injectFaults() {
        let members = committed.memberIDs
        if let at = wipeAtMs, nowMs >= at, members.filter({ nodes[$0]?.node == nil }).count < options.downMax,
           let victim = members.filter({ nodes[$0]?.node != nil && !voters.contains($0) }).randomElement(using: &random) {
            wipeAtMs = nil
            wipe(victim)
        }
        let down = members.filter { nodes[$0]?.node == nil }
        if Int.random(in: 0..<1_000, using: &random) < options.crashPerMille, down.count < options.downMax {
            let up = members.filter { nodes[$0]?.node != nil }
            if let victim = up.randomElement(using: &random) { crash(victim) }
        }
        if !down.isEmpty, Int.random(in: 0..<1_000, using: &random) < options.restartPerMille {
            let id = down.randomElement(using: &random)!
            start(id, durable: nodes[id]!.saved)
        }
        if Int.random(in: 0..<1_000, using: &random) < options.cutPerMille, members.count >= 2 {
            let a = members.randomElement(using: &random)!
            let b = members.filter { $0 != a }.randomElement(using: &random)!
            cuts.append((a, b, nowMs + Int64.random(in: 200...3_000, using: &random)))
        }
        cuts.removeAll { $0.untilMs <= nowMs }
        if !committed.isChanging, Int.random(in: 0..<1_000, using: &random) < options.changePerMille {
            changeMembership()
        }
    }

    mutating func changeMembership() {
        guard let voter = voters.filter({ nodes[$0]?.voter != nil }).randomElement(using: &random) else { return }
        let current = appliedPlacement(at: voter)
        let members = current.members
        let add = members.count < options.membersMax && (members.count <= options.membersMin || Bool.random(using: &random))
        let next: Placement
        if add {
            guard let added = try? current.adding(name: "node-\(current.nextMemberID)") else { return }
            next = added
        } else {
            // Voters stay: the placement log's voters are fixed.
            guard members.count > options.membersMin,
                  let leaving = members.filter({ !voters.contains($0.id) }).randomElement(using: &random),
                  let removed = try? current.removing(name: leaving.name) else { return }
            next = removed
        }
        propose(next, replacing: current, at: voter)
    }

    /// Submits "replace `current` by `next`" to the placement log at `voter`: a compare-and-set
    /// on the placement's bytes (on an absent key while the initial placement stands). A stale
    /// `current` loses the compare; whoever wanted the change asks again.
    mutating func propose(_ next: Placement, replacing current: Placement, at voter: Int) {
        let condition: SetOptions.Condition = appliedBytes(at: voter) == nil
            ? .ifAbsent : .ifEqual(PlacementCodec.encode(current))
        let command = StrongCommand(.set(key: Self.placementKey, value: PlacementCodec.encode(next), options: SetOptions(condition: condition)))
        nextLogClient += 1
        nodes[voter]!.voter!.submit(command, partition: 0, client: nextLogClient, now: logTime)
        drainLog(voter)
    }

    /// The placement's bytes as `voter` has applied them (nil: never changed).
    func appliedBytes(at voter: Int) -> [UInt8]? {
        guard let state = nodes[voter]?.voter?.state(0),
              case .bulk(let bytes) = state.read(StrongCommand(.get(key: Self.placementKey)), nowMs: nowMs) else { return nil }
        return bytes
    }

    /// The placement as `voter` has applied it.
    func appliedPlacement(at voter: Int) -> Placement {
        guard let bytes = appliedBytes(at: voter) else { return initial }
        guard let placement = try? PlacementCodec.decode(bytes) else { preconditionFailure("the placement log holds bytes that do not decode") }
        return placement
    }

    /// Carries out a voter's effects: its disk first, then its messages; then looks at what it
    /// applied.
    mutating func drainLog(_ voter: Int) {
        guard var replica = nodes[voter]?.voter else { return }
        let effects = replica.effects
        replica.effects = PaxosEffects()
        nodes[voter]!.voter = replica
        if outcome.problem == nil, let violation = replica.violations.first { outcome.problem = "placement voter \(voter): \(violation)" }
        for change in effects.persist { nodes[voter]!.voterDisk.apply(change) }
        for (to, message) in effects.messages {
            schedule(.paxos(from: voter, to: to, message), delayMs: to == voter ? 1 : Int64.random(in: 1...options.delayMsMax, using: &random), lossy: to != voter)
        }
        if !effects.applied.isEmpty { learnCommitted(appliedPlacement(at: voter)) }
    }

    /// A voter applied `next`: when it is newer than any placement seen, members that joined
    /// start, and every node is told.
    mutating func learnCommitted(_ next: Placement) {
        guard next.epoch > committed.epoch else { return }
        if committed.isChanging {
            outcome.switches += committed.changingPartitions.filter { committed.isMoving($0) && !next.isMoving($0) }.count
        }
        outcome.joins += next.members.filter { $0.state == .joining && committed.member($0.id) == nil }.count
        outcome.leaves += next.members.filter { $0.state == .leaving && committed.member($0.id)?.state != .leaving }.count
        committed = next
        for member in next.members where nodes[member.id] == nil {
            start(member.id, durable: nil)
        }
        for id in nodes.keys.sorted() where nodes[id]!.node != nil {
            schedule(.placement(to: id), delayMs: Int64.random(in: 1...options.delayMsMax, using: &random), lossy: true)
        }
    }

    /// Stops the nodes a finished change removed (after the grace period, so that they served
    /// their streams and in-flight reads).
    mutating func retireRemovedNodes() {
        for id in nodes.keys.sorted() where committed.member(id) == nil && !retired.contains(id) {
            guard let node = nodes[id]?.node else {
                retired.insert(id)
                continue
            }
            if node.placement.epoch >= committed.epoch && node.placement.member(id) == nil && node.durable.store.heldPartitions.isEmpty {
                nodes[id]!.node = nil
                retired.insert(id)
            }
        }
    }

    mutating func issueCommands() {
        for _ in 0..<options.commandsPerStep {
            let up = committed.memberIDs.filter { nodes[$0]?.node != nil }
            guard let at = up.randomElement(using: &random) else { return }
            let key = Int.random(in: 0..<options.keys, using: &random)
            let client = nextClient
            nextClient += 1
            if options.incrementPercent > 0, Int.random(in: 0..<100, using: &random) < options.incrementPercent {
                issueIncrement(client: client, delta: UInt64.random(in: 1...5, using: &random))
                continue
            }
            let roll = Int.random(in: 0..<10, using: &random)
            if roll < 6 {
                nextValue += 1
                let value: [UInt8]? = roll == 0 ? nil : Array("v\(nextValue)".utf8)
                clients[client] = (at, .write(key: key, value: value))
                nodes[at]!.node!.write(client: client, key: Self.key(key), value: value, acks: options.writeAcks, nowMs: nowMs)
            } else {
                // A read is checked when its coordinator knows the committed epoch at the start
                // and that epoch is still the committed one at the answer (see `record`).
                let current = nodes[at]!.node!.placement.epoch == committed.epoch
                clients[client] = (at, .read(key: key, epoch: committed.epoch, acknowledgedBefore: acknowledged[key], checked: current))
                nodes[at]!.node!.read(client: client, key: Self.key(key), acks: options.readAcks, nowMs: nowMs)
            }
            collect(at)
        }
    }

    /// An increment of a random counter key at a node that owns its partition by its own
    /// placement (the primary executes; any owner may believe it is the primary).
    mutating func issueIncrement(client: UInt64, delta: UInt64) {
        let key = Int.random(in: 0..<options.counterKeys, using: &random)
        let bytes = Self.counterKey(key)
        let owners = committed.memberIDs.filter { id in
            guard let node = nodes[id]?.node else { return false }
            return node.placement.owners(of: node.partition(of: bytes)).contains(id)
        }
        guard let at = owners.randomElement(using: &random) else { return }
        clients[client] = (at, .incrementRead(key: key, delta: delta))
        nodes[at]!.node!.read(client: client, key: bytes, acks: options.readAcks, nowMs: nowMs)
        collect(at)
    }

    /// The read quorum of an increment answered at `at`: add the increment to what `at` holds
    /// merged with what the read returned, and replicate the record.
    mutating func continueIncrement(key: Int, delta: UInt64, read: ReplicaState?, at: Int) {
        guard let node = nodes[at]?.node else { return }
        let bytes = Self.counterKey(key)
        let partition = node.partition(of: bytes)
        // No longer an owner (the placement moved on): it gives up, as a primary that learns
        // it is not one any more forwards instead.
        guard node.placement.owners(of: partition).contains(at) else { return }
        let held = node.durable.store.state(of: bytes, partition: partition)
        let merged: ReplicaState? = switch (held, read) {
        case (let held?, let read?): held.merged(with: read)
        case (let held?, nil): held
        case (nil, let read?): read
        case (nil, nil): nil
        }
        var counter = merged?.counter ?? PNCounter()
        counter.add(Int64(delta), origin: ReplicaID(datacenter: 0, node: UInt16(at)))
        let record = ReplicaState(
            value: PNCounter.decimalBytes(counter.value), valueStamp: merged?.valueStamp ?? .zero,
            expiryUnixMs: Entry.noExpiry, expiryStamp: merged?.expiryStamp ?? .zero, encoding: .byContent, counter: counter)
        let client = nextClient
        nextClient += 1
        clients[client] = (at, .incrementWrite(key: key, delta: delta))
        nodes[at]!.node!.replicate(client: client, key: bytes, record: record, acks: options.writeAcks, nowMs: nowMs)
        collect(at)
    }

    // MARK: Events

    mutating func schedule(_ event: Event, delayMs: Int64, lossy: Bool) {
        if lossy && faults && Int.random(in: 0..<100, using: &random) < options.lossPercent { return }
        order += 1
        queue.append(Scheduled(atMs: nowMs + delayMs, order: order, event: event))
        if lossy && faults && Int.random(in: 0..<100, using: &random) < options.duplicatePercent {
            order += 1
            queue.append(Scheduled(atMs: nowMs + delayMs + Int64.random(in: 1...options.delayMsMax, using: &random), order: order, event: event))
        }
    }

    func isCut(_ a: Int, _ b: Int) -> Bool {
        cuts.contains { ($0.a == a && $0.b == b) || ($0.a == b && $0.b == a) }
    }

    mutating func deliverDueEvents() {
        var due = queue.filter { $0.atMs <= nowMs }
        guard !due.isEmpty else { return }
        queue.removeAll { $0.atMs <= nowMs }
        due.sort { ($0.atMs, $0.order) < ($1.atMs, $1.order) }
        for scheduled in due {
            switch scheduled.event {
            case .message(let from, let to, let message):
                guard nodes[to]?.node != nil, !isCut(from, to) else { continue }
                nodes[to]!.node!.receive(message, from: from, nowMs: nowMs)
                collect(to)
            case .paxos(let from, let to, let message):
                guard nodes[to]?.voter != nil, !isCut(from, to) else { continue }
                nodes[to]!.voter!.receive(message, from: from, now: logTime)
                drainLog(to)
            case .placement(let to):
                // The node reads what a live voter it can reach has applied.
                guard nodes[to]?.node != nil,
                      let voter = voters.filter({ nodes[$0]?.voter != nil && !isCut($0, to) }).randomElement(using: &random) else { continue }
                nodes[to]!.node!.learn(appliedPlacement(at: voter), nowMs: nowMs)
                collect(to)
            case .proposal(let from, let partitions, let changeEpoch):
                // The proposing node's request reaches a live voter, which checks it against what
                // it has applied and submits the compare-and-set.
                guard let voter = voters.filter({ nodes[$0]?.voter != nil && !isCut($0, from) }).randomElement(using: &random) else { continue }
                let current = appliedPlacement(at: voter)
                let valid = partitions.filter { current.isMoving($0) }
                guard changeEpoch == current.changeEpoch, !valid.isEmpty,
                      let next = try? current.switching(partitions: valid, changeEpoch: changeEpoch) else { continue }
                propose(next, replacing: current, at: voter)
            }
        }
    }

    /// Carries out a node's outputs: messages into the network, replies to the clients.
    mutating func collect(_ id: Int) {
        guard let outputs = nodes[id]?.node?.takeOutputs() else { return }
        for case .persist(let change) in outputs { nodes[id]!.saved.apply(change) }
        for output in outputs {
            switch output {
            case .persist:
                break
            case .send(let to, let message):
                schedule(.message(from: id, to: to, message), delayMs: Int64.random(in: 1...options.delayMsMax, using: &random), lossy: true)
            case .reply(let client, let result):
                guard let (at, command) = clients.removeValue(forKey: client) else { continue }
                record(command, result, at: at)
            case .fetchPlacement:
                schedule(.placement(to: id), delayMs: Int64.random(in: 1...options.delayMsMax, using: &random), lossy: true)
            case .proposeSwitch(let partitions, let changeEpoch):
                schedule(.proposal(from: id, partitions: partitions, changeEpoch: changeEpoch), delayMs: options.delayMsMax, lossy: true)
            }
        }
    }

    mutating func record(_ command: Command, _ result: ClusterClientResult, at: Int) {
        switch (command, result) {
        case (.incrementRead(let key, let delta), .read(let state)):
            continueIncrement(key: key, delta: delta, read: state, at: at)
        case (.incrementWrite(let key, let delta), .written):
            outcome.incrementsAcknowledged += 1
            acknowledgedIncrements[key, default: [:]][at, default: 0] += delta
        case (.write(let key, _), .written(let stamp)):
            outcome.writesAcknowledged += 1
            if acknowledged[key].map({ stamp > $0 }) ?? true { acknowledged[key] = stamp }
        case (.write, .timedOut):
            outcome.writesTimedOut += 1
        case (.read(let key, let epoch, let before, let checked), .read(let state)):
            let factor = options.replicationFactor
            let overlapping = options.writeAcks.required(of: factor) + options.readAcks.required(of: factor) > factor
            guard checked, overlapping, committed.epoch == epoch, let before else { return }
            outcome.readsChecked += 1
            // W + R > RF: the read meets a replica of every set that acknowledged a write.
            if state.map({ $0.valueStamp < before }) ?? true {
                outcome.problem = "a read of key:\(key) returned \(state.map { "\($0.valueStamp)" } ?? "nothing") but \(before) was acknowledged before it began"
            }
        default:
            break
        }
    }

    // MARK: Checks

    /// Whether the system has gone quiet: the placement settled and known everywhere, no hints,
    /// owners equal, non-owners empty.
    func quiet() -> Bool {
        !committed.isChanging && check() == nil
    }

    /// The first invariant that does not hold, or nil.
    func check() -> String? {
        if committed.isChanging { return "the change of epoch \(committed.changeEpoch) did not finish: \(committed)" }
        let members = committed.memberIDs
        for id in members {
            guard let node = nodes[id]?.node else { return "member \(id) is down after healing" }
            if node.placement.epoch != committed.epoch { return "member \(id) knows epoch \(node.placement.epoch), not \(committed.epoch)" }
            if !node.durable.hints.isEmpty { return "member \(id) still holds \(node.durable.hints.hints.count) hints" }
            if !node.rebuildingPartitions.isEmpty { return "member \(id) is still rebuilding partitions \(node.rebuildingPartitions)" }
        }
        for partition in 0..<committed.partitionCount {
            let owners = committed.owners(of: partition)
            let reference = nodes[owners[0]]!.node!.durable.store.states(of: partition)
            for owner in owners {
                // The tree kept up merge by merge equals the tree of what the replica holds.
                let store = nodes[owner]!.node!.durable.store
                var rebuilt = PartitionDigest()
                for (key, state) in store.states(of: partition) {
                    rebuilt.toggle(PartitionDigest.entryDigest(key: key, state: state), leaf: PartitionDigest.leaf(of: key))
                }
                if rebuilt != store.digest(of: partition) { return "partition \(partition): owner \(owner)'s tree drifted from its keys" }
            }
            for owner in owners.dropFirst() {
                let entries = nodes[owner]!.node!.durable.store.states(of: partition)
                if entries != reference {
                    return "partition \(partition): owners \(owners[0]) and \(owner) differ (\(reference.count) vs \(entries.count) keys)"
                }
            }
            for id in members where !owners.contains(id) {
                if !nodes[id]!.node!.durable.store.states(of: partition).isEmpty {
                    return "member \(id) still holds partition \(partition), owned by \(owners)"
                }
            }
        }
        for (key, byNode) in acknowledgedIncrements.sorted(by: { $0.key < $1.key }) {
            let bytes = Self.counterKey(key)
            let partition = nodes[members[0]]!.node!.partition(of: bytes)
            for owner in committed.owners(of: partition) {
                let counter = nodes[owner]!.node!.durable.store.state(of: bytes, partition: partition)?.counter
                for (origin, total) in byNode {
                    let held = counter?.contributions.first { $0.origin == ReplicaID(datacenter: 0, node: UInt16(origin)) }?.p ?? 0
                    if held < total {
                        return "counter:\(key): owner \(owner) holds \(held) of node \(origin)'s increments, \(total) were acknowledged"
                    }
                }
            }
        }
        for (key, stamp) in acknowledged.sorted(by: { $0.key < $1.key }) {
            let bytes = Self.key(key)
            let partition = nodes[members[0]]!.node!.partition(of: bytes)
            for owner in committed.owners(of: partition) {
                let state = nodes[owner]!.node!.durable.store.state(of: bytes, partition: partition)
                if state.map({ $0.valueStamp < stamp }) ?? true {
                    return "acknowledged write \(stamp) of key:\(key) lost on owner \(owner) of partition \(partition)"
                }
            }
        }
        return nil
    }
}

extension ClusterSimulation where Store == MemoryReplicaStore {
    /// A run whose replicas live in memory.
    public init(seed: UInt64, options: Options = Options()) {
        self.init(seed: seed, options: options) { _ in MemoryReplicaStore() }
    }
}
