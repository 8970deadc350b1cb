import MeridianCore
import MeridianWire

/// A deterministic simulation of eventual replication between full data centers
/// (docs/REPLICATION.md). Each data center is the server's own state machines: a `Keyspace`
/// (commands' writes, `localDelta`, `mergeRemote`, tombstones, counters, expiry), an
/// `OutboundLog`, a `VersionVector`, an HLC with the clock bound, and a `TombstoneHorizon`
/// for tombstone GC. Batches go through the real `DeltaBatch` codec. The network loses,
/// duplicates, delays and reorders messages and cuts links for a while; data centers crash
/// and restart. Everything comes from one seed: a failing seed replays exactly.
///
/// After the faults stop and the links heal, `run` lets the system go quiet and reports
/// whether every data center holds the same live keys (value, stamps, expiry, counter) and the
/// same version vector, and whether every counter adds up every increment made.
public struct ReplicationSimulation {
    public struct Options: Sendable {
        public var datacenters = 3
        public var keys = 12
        public var writeSteps = 400
        public var lossPercent = 10
        public var duplicatePercent = 5
        public var delayStepsMax = 30
        /// Chance per step that a random link goes down for a while.
        public var partitionPercent = 2
        /// Retained bytes per outbound log: small, so laggards get snapshots.
        public var logBytesMax = 2_000
        /// Each data center's clock is off by up to this much (within the bound below).
        public var clockSkewMsMax: UInt64 = 400
        /// `max_clock_offset`: stamps further ahead of a receiver's clock are refused.
        public var maxClockOffsetMs: UInt64 = 500
        /// When set, data center 0's clock runs this far ahead (beyond the bound) for the first
        /// half of the writes, then is corrected: its batches are refused until real time
        /// catches up with its stamps, then accepted.
        public var runawayClockMs: UInt64 = 0
        /// Chance per step that a data center crashes and restarts: it loses what it had in
        /// flight and its link state, and keeps its keyspace, version vector and outbound log
        /// (durable namespaces keep all three on disk).
        public var crashPercent = 1
        /// Counter keys (the `INCR` family) besides the register keys.
        public var counterKeys = 3
        /// Percentage of writes that set a TTL (some of which run out during the run).
        public var expiryPercent = 15
        /// Milliseconds of simulated time per step.
        public var stepMs: UInt64 = 10
        /// Crashes lose what a restarted server loses (see `crash`), not only link state.
        public var restartsLikeTheServer = false

        public init() {}
    }

    /// The outcome of one seed.
    public struct Outcome: Sendable, CustomStringConvertible {
        public var converged: Bool
        public var problem: String?
        public var writes = 0
        public var batchesSent = 0
        public var batchesLost = 0
        public var batchesRefused = 0
        public var snapshots = 0
        public var conflicts = 0
        public var crashes = 0
        public var tombstonesCollected = 0
        public var expiredKeys = 0
        public var steps = 0

        public init(converged: Bool) {
            self.converged = converged
        }

        public var description: String {
            "converged=\(converged) writes=\(writes) batches=\(batchesSent) lost=\(batchesLost) refused=\(batchesRefused) snapshots=\(snapshots) conflicts=\(conflicts) crashes=\(crashes) tombstonesCollected=\(tombstonesCollected) expired=\(expiredKeys) steps=\(steps)"
                + (problem.map { " problem: \($0)" } ?? "")
        }
    }

    enum Message {
        case batch(from: Int, payload: [UInt8])
        case snapshot(from: Int, through: UInt64, states: [SnapshotState])
        case ack(from: Int, vector: VersionVector)
    }

    struct InFlight {
        var deliverAt: Int
        var to: Int
        var message: Message
        /// Position on its directed link: messages of one link arrive in order (TCP, one link
        /// per pair). Tombstone GC relies on it: a peer's acknowledgement must not overtake a
        /// snapshot the peer sent before it.
        var linkOrder: Int
        var link: Int
    }

    struct Replica {
        var id: ReplicaID
        var clock: HybridLogicalClock
        var skewMs: UInt64
        var keyspace = Keyspace(evictableNamespaces: [false], loggedNamespaces: [true], replicatedNamespaces: [true])
        var versionVector = VersionVector()
        var log: OutboundLog
        var horizon: TombstoneHorizon
        /// Per peer: what was sent on the current attempt, and when an ack last moved.
        var sentThrough: [Int: UInt64] = [:]
        var lastProgressStep: [Int: Int] = [:]
        var conflicts = 0
    }

    let seed: UInt64
    let options: Options
    var random: SplitMix64
    var replicas: [Replica] = []
    var network: [InFlight] = []
    /// Links that are down until the step given.
    var downUntil: [Int: Int] = [:]
    /// Per directed link: the order and delivery step of the last message sent on it.
    var linkSent: [Int: (order: Int, deliverAt: Int)] = [:]
    var step = 0
    var outcome = Outcome(converged: false)
    /// Every acknowledged increment, per counter key: what each counter must add up to
    /// (counters are never reset, deleted or expired here).
    var incrementTotals: [[UInt8]: Int64] = [:]
    /// Events of one key, for reading a failing seed (`traceKey`).
    public var traceKey: [UInt8]?
    public private(set) var trace: [String] = []

    mutating func note(_ key: [UInt8], _ text: @autoclosure () -> String) {
        if key == traceKey { trace.append("step \(step): \(text())") }
    }

    public init(seed: UInt64, options: Options = Options()) {
        self.seed = seed
        self.options = options
        self.random = SplitMix64(seed: seed)
        let names = (0..<options.datacenters).map { "dc\($0)" }
        let ids = (0..<options.datacenters).map { ReplicaID(datacenter: UInt16($0), node: 0) }
        for index in 0..<options.datacenters {
            replicas.append(Replica(
                id: ids[index], clock: HybridLogicalClock(maxClockOffsetMs: options.maxClockOffsetMs),
                skewMs: UInt64.random(in: 0...min(options.clockSkewMsMax, options.maxClockOffsetMs), using: &random),
                log: OutboundLog(origin: ids[index], peers: names.enumerated().filter { $0.offset != index }.map(\.element), retainedBytesMax: options.logBytesMax),
                horizon: TombstoneHorizon(peers: ids.enumerated().filter { $0.offset != index }.map(\.element))))
        }
    }

    /// Simulated wall clock of a data center, in Unix ms.
    func nowMs(_ index: Int) -> UInt64 {
        var now = 1_000_000 + UInt64(step) * options.stepMs + replicas[index].skewMs
        if index == 0 && options.runawayClockMs > 0 && step < options.writeSteps / 2 { now += options.runawayClockMs }
        return now
    }

    /// Runs the writes with faults, then heals and runs until quiet (or a step budget).
    public mutating func run() -> Outcome {
        for _ in 0..<options.writeSteps {
            step += 1
            if Int.random(in: 0..<100, using: &random) < 60 { write() }
            if Int.random(in: 0..<100, using: &random) < options.crashPercent { crash(Int.random(in: 0..<replicas.count, using: &random)) }
            if Int.random(in: 0..<100, using: &random) < options.partitionPercent {
                let link = Int.random(in: 0..<(options.datacenters * options.datacenters), using: &random)
                downUntil[link] = step + Int.random(in: 10...120, using: &random)
            }
            tick(faults: true)
        }
        downUntil = [:]
        let quietBudget = 20_000
        var quietSteps = 0
        while quietSteps < quietBudget {
            step += 1
            quietSteps += 1
            tick(faults: false)
            if network.isEmpty && everyLogAcknowledged() && quietSteps > 100 { break }
        }
        outcome.steps = step
        outcome.conflicts = replicas.reduce(0) { $0 + $1.conflicts }
        outcome.problem = divergence()
        outcome.converged = outcome.problem == nil
        return outcome
    }

    // MARK: Writes (what the server's commands and `drainKeyChanges` do)

    mutating func write() {
        let index = Int.random(in: 0..<replicas.count, using: &random)
        let now = nowMs(index)
        let stamp = LWWStamp(timestamp: replicas[index].clock.now(physicalMs: now), origin: replicas[index].id)
        var keyspace = replicas[index].keyspace
        defer { replicas[index].keyspace = keyspace }
        if options.counterKeys > 0 && Int.random(in: 0..<4, using: &random) == 0 {
            let key = Array("c\(Int.random(in: 0..<options.counterKeys, using: &random))".utf8)
            let amount = Int64.random(in: -3...5, using: &random)
            let slot = liveSlot(&keyspace, key, now: now)
            guard case .value(let sum, let counter, let valueStamp) = keyspace.counterIncrement(
                key: key, slot: slot, amount: amount, origin: replicas[index].id, stamp: stamp) else {
                outcome.problem = "seed \(seed): INCRBY on a counter key failed"
                return
            }
            if let slot {
                keyspace.setValue(at: slot, PNCounter.decimalBytes(sum), stamp: valueStamp)
                keyspace.setCounter(at: slot, counter)
            } else {
                let entry = Entry(value: PNCounter.decimalBytes(sum), valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp, lastAccessUnixMs: Int64(now), namespaceIndex: 0)
                let newSlot = key.withUnsafeBytes { keyspace.insert(bytes: $0, entry: entry) }
                keyspace.setCounter(at: newSlot, counter)
            }
            incrementTotals[key, default: 0] += amount
        } else {
            let key = Array("k\(Int.random(in: 0..<options.keys, using: &random))".utf8)
            let slot = liveSlot(&keyspace, key, now: now)
            let ttl: Int64? = Int.random(in: 0..<100, using: &random) < options.expiryPercent
                ? Int64.random(in: 50...3_000, using: &random) : nil
            switch Int.random(in: 0..<10, using: &random) {
            case 0, 1:
                if let slot { keyspace.remove(slot: slot) }
            case 2:
                // EXPIRE or PERSIST on a live key: the expiry field alone.
                if let slot { keyspace.setExpiry(at: slot, unixMs: ttl.map { Int64(now) + $0 } ?? Entry.noExpiry, stamp: stamp) }
            default:
                let value = Array("v\(step)@\(index)".utf8)
                let expiry = ttl.map { Int64(now) + $0 } ?? Entry.noExpiry
                if let slot {
                    keyspace.setValue(at: slot, value, stamp: stamp)
                    keyspace.setExpiry(at: slot, unixMs: expiry, stamp: stamp)
                } else {
                    let entry = Entry(value: value, valueStamp: stamp, expiryUnixMs: expiry, expiryStamp: stamp, lastAccessUnixMs: Int64(now), namespaceIndex: 0)
                    key.withUnsafeBytes { _ = keyspace.insert(bytes: $0, entry: entry) }
                }
            }
        }
        // Ship the changes, as `Database.drainKeyChanges` does for local writes.
        var handled = Set<[UInt8]>()
        for change in keyspace.takeKeyChanges().reversed() where handled.insert(change.key).inserted {
            let deleteStamp = { LWWStamp(timestamp: self.replicas[index].clock.now(physicalMs: now), origin: self.replicas[index].id) }
            guard let delta = keyspace.localDelta(key: change.key, kind: change.kind, replacedDot: change.replacedDot, deleteStamp: deleteStamp) else { continue }
            let dot = replicas[index].log.nextDot
            let record = keyspace.recordLocalDot(dot, of: delta, key: change.key)
            replicas[index].log.append(Delta(dot: dot, previousDot: delta.previousDot, key: change.key, state: .register(record)), bytes: change.key.count + record.encoded().count + 16)
            note(change.key, "dc\(index) local \(change.kind) → \(dot) \(delta.record)")
            replicas[index].versionVector.advance(replicas[index].id, to: dot.sequence)
            outcome.writes += 1
        }
    }

    /// The live slot of `key`, expiring it lazily as a command would.
    mutating func liveSlot(_ keyspace: inout Keyspace, _ key: [UInt8], now: UInt64) -> Int? {
        guard let slot = keyspace.slot(ofBytes: key) else { return nil }
        if keyspace.entry(at: slot).isExpired(atUnixMs: Int64(now)) {
            note(key, "expired lazily at \(now)")
            outcome.expiredKeys += 1
            keyspace.expire(slot: slot)
            _ = keyspace.takeKeyChanges()
            return nil
        }
        return slot
    }

    /// A crash and restart: messages to and from the node are lost, and so is its link state.
    /// With `restartsLikeTheServer`, also what the server loses: its outbound log, its version
    /// vector, its clock and every dot it issued (the next run's dots start far above), its
    /// tombstone horizon; its keyspace comes back from disk (live keys, and dead states as
    /// tombstones), and its clock moves past every stamp read back.
    mutating func crash(_ index: Int) {
        outcome.crashes += 1
        if options.restartsLikeTheServer { restartLikeTheServer(index) }
        network.removeAll { $0.to == index }
        replicas[index].sentThrough = [:]
        replicas[index].lastProgressStep = [:]
        for other in replicas.indices where other != index {
            replicas[other].sentThrough[index] = nil
        }
    }

    mutating func restartLikeTheServer(_ index: Int) {
        let id = replicas[index].id
        let names = replicas.indices.filter { $0 != index }.map { "dc\($0)" }
        let firstSequence = replicas[index].log.lastSequence + 1_000_000
        replicas[index].log = OutboundLog(origin: id, peers: names, lastSequence: firstSequence, retainedBytesMax: options.logBytesMax)
        replicas[index].versionVector = VersionVector([(id, firstSequence)])
        replicas[index].horizon = TombstoneHorizon(peers: replicas.indices.filter { $0 != index }.map { replicas[$0].id })
        var reloaded = Keyspace(evictableNamespaces: [false], loggedNamespaces: [true], replicatedNamespaces: [true])
        var clock = HybridLogicalClock(maxClockOffsetMs: options.maxClockOffsetMs)
        let now = nowMs(index)
        replicas[index].keyspace.forEachReplicatedState { key, namespace, record, _ in
            _ = try? clock.receive(max(record.valueStamp.timestamp, record.expiryStamp.timestamp), physicalMs: now + options.maxClockOffsetMs)
            if namespace != nil, !record.isExpired(atUnixMs: Int64(now)), let entry = record.entry(namespaceIndex: 0, lastAccessUnixMs: Int64(now)) {
                key.withUnsafeBytes { _ = reloaded.insert(bytes: $0, entry: entry, logged: false) }
            } else {
                reloaded.restoreDeadState(key: key, record: record)
            }
        }
        replicas[index].keyspace = reloaded
        replicas[index].clock = clock
    }

    // MARK: Network

    mutating func tick(faults: Bool) {
        // Deliver what is due: interleaved at random across links, in order within each link.
        var due = network.indices.filter { network[$0].deliverAt <= step }
        due.shuffle(using: &random)
        var byLink: [Int: [InFlight]] = [:]
        var linkOrder: [Int] = []
        for index in due {
            let message = network[index]
            if byLink[message.link] == nil { linkOrder.append(message.link) }
            byLink[message.link, default: []].append(message)
        }
        var delivering: [InFlight] = []
        for link in linkOrder { delivering += byLink[link]!.sorted { $0.linkOrder < $1.linkOrder } }
        network.removeAll { $0.deliverAt <= step }
        for message in delivering { deliver(message) }
        for index in replicas.indices { send(from: index, faults: faults) }
        if step % 25 == 0 {
            for index in replicas.indices { collectTombstones(index) }
        }
    }

    mutating func transmit(_ message: Message, from: Int, to: Int, faults: Bool) {
        if let until = downUntil[from * options.datacenters + to], until > step { return }
        if faults && Int.random(in: 0..<100, using: &random) < options.lossPercent {
            if case .batch = message { outcome.batchesLost += 1 }
            return
        }
        // Delays vary, but a link never reorders: a message waits for the ones sent before it.
        let link = from * options.datacenters + to
        let previous = linkSent[link] ?? (order: 0, deliverAt: 0)
        let delay = 1 + Int.random(in: 0..<(faults ? options.delayStepsMax : 3), using: &random)
        let deliverAt = max(step + delay, previous.deliverAt)
        network.append(InFlight(deliverAt: deliverAt, to: to, message: message, linkOrder: previous.order + 1, link: link))
        linkSent[link] = (previous.order + 1, deliverAt)
        // A batch is sent again after a reconnect (the same deltas: the log's entries never
        // change); a snapshot never is (a new one is taken), so only batches are duplicated.
        if case .batch = message, faults && Int.random(in: 0..<100, using: &random) < options.duplicatePercent {
            let again = deliverAt + Int.random(in: 0...options.delayStepsMax, using: &random)
            network.append(InFlight(deliverAt: again, to: to, message: message, linkOrder: previous.order + 2, link: link))
            linkSent[link] = (previous.order + 2, again)
        }
    }

    mutating func send(from index: Int, faults: Bool) {
        for peer in replicas.indices where peer != index {
            let name = "dc\(peer)"
            let acked = replicas[index].log.acknowledged[name]!
            // A new link starts where the peer's vector (sent in its handshake) says it is.
            let handshake = replicas[peer].versionVector[replicas[index].id]
            var sent = replicas[index].sentThrough[peer] ?? handshake
            // Silence for a while: the link is re-established, from the peer's vector again.
            if step - (replicas[index].lastProgressStep[peer] ?? 0) > 60 && sent > acked {
                sent = handshake
                replicas[index].lastProgressStep[peer] = step
            }
            switch replicas[index].log.nextSend(after: sent, maxDeltas: 16, maxBytes: 1 << 20) {
            case .upToDate:
                break
            case .deltas(let deltas):
                let payload = DeltaBatch(origin: replicas[index].id, deltas: deltas).encoded().payload
                outcome.batchesSent += 1
                transmit(.batch(from: index, payload: payload), from: index, to: peer, faults: faults)
                replicas[index].sentThrough[peer] = deltas.last!.dot.sequence
            case .snapshot(let through):
                outcome.snapshots += 1
                var states: [SnapshotState] = []
                replicas[index].keyspace.forEachReplicatedState { key, _, record, dot in
                    states.append(SnapshotState(key: key, dot: dot, state: .register(record)))
                }
                transmit(.snapshot(from: index, through: through, states: states), from: index, to: peer, faults: faults)
                replicas[index].sentThrough[peer] = through
            }
        }
    }

    mutating func deliver(_ inFlight: InFlight) {
        let to = inFlight.to
        let now = nowMs(to)
        switch inFlight.message {
        case .batch(let from, let payload):
            let batch: DeltaBatch
            do {
                batch = try DeltaBatch(decoding: payload)
            } catch {
                outcome.problem = "seed \(seed): a batch failed to decode: \(error)"
                return
            }
            guard observe(batch.deltas.map(\.state), at: to, now: now) else {
                outcome.batchesRefused += 1
                return
            }
            for delta in batch.deltas where !replicas[to].versionVector.covers(delta.dot) {
                guard case .register(let record) = delta.state else { continue }
                let merge = replicas[to].keyspace.mergeRemote(
                    key: delta.key, record: record, dot: delta.dot, previousDot: delta.previousDot, namespaceIndex: 0, nowUnixMs: Int64(now))
                if merge.relation == .concurrent && merge.loserStamp != nil { replicas[to].conflicts += 1 }
                note(delta.key, "dc\(to) merged \(delta.dot) from dc\(from): changed \(merge.changed) \(record)")
                _ = replicas[to].keyspace.takeKeyChanges()
                replicas[to].versionVector.record(delta.dot)
            }
            transmit(.ack(from: to, vector: replicas[to].versionVector), from: to, to: from, faults: false)
        case .snapshot(let from, let through, let states):
            guard observe(states.map(\.state), at: to, now: now) else {
                outcome.batchesRefused += 1
                return
            }
            for state in states {
                guard case .register(let record) = state.state else { continue }
                let merge = replicas[to].keyspace.mergeRemote(key: state.key, record: record, dot: state.dot, previousDot: nil, namespaceIndex: 0, nowUnixMs: Int64(now))
                note(state.key, "dc\(to) snapshot from dc\(from) through \(through): changed \(merge.changed) \(record)")
            }
            _ = replicas[to].keyspace.takeKeyChanges()
            // A snapshot holds every write of its origin up to `through`.
            replicas[to].versionVector.advance(replicas[from].id, to: through)
            transmit(.ack(from: to, vector: replicas[to].versionVector), from: to, to: from, faults: false)
        case .ack(let from, let vector):
            let name = "dc\(from)"
            let before = replicas[to].log.acknowledged[name]!
            let through = vector[replicas[to].id]
            replicas[to].log.acknowledge(peer: name, through: through)
            replicas[to].horizon.record(peer: replicas[from].id, vector: vector)
            if through > before { replicas[to].lastProgressStep[from] = step }
        }
    }

    /// The clock bound, then the clock moves past every stamp applied (invariants 5 and 6; seed
    /// 57 diverged before receivers advanced their clocks). False: the batch is refused.
    mutating func observe(_ states: [Delta.State], at index: Int, now: UInt64) -> Bool {
        var newest = HLCTimestamp.zero
        for state in states {
            if case .register(let record) = state { newest = max(newest, record.valueStamp.timestamp, record.expiryStamp.timestamp) }
        }
        do {
            _ = try replicas[index].clock.receive(newest, physicalMs: now)
            return true
        } catch {
            return false
        }
    }

    /// Drops the tombstones past the data center's horizon, as the server's GC does.
    mutating func collectTombstones(_ index: Int) {
        let horizon = replicas[index].horizon.horizon(local: replicas[index].versionVector)
        let dropped = replicas[index].keyspace.dropTombstones { $0.isCovered(by: horizon) }
        outcome.tombstonesCollected += dropped.count
        for key in dropped { note(key, "dc\(index) dropped its dead state (horizon \(horizon))") }
    }

    // MARK: Checks

    func everyLogAcknowledged() -> Bool {
        replicas.allSatisfy { replica in replica.log.acknowledged.values.allSatisfy { $0 == replica.log.lastSequence } }
    }

    /// The live keys of a data center at `nowUnixMs` (after every clock passed every expiry
    /// that matters), as comparable text.
    func liveState(_ index: Int, nowUnixMs: Int64) -> [String: String] {
        var state: [String: String] = [:]
        replicas[index].keyspace.forEachReplicatedState { key, namespace, record, _ in
            guard namespace != nil, !record.isExpired(atUnixMs: nowUnixMs) else { return }
            state[String(decoding: key, as: UTF8.self)] = "\(String(decoding: record.value ?? [], as: UTF8.self)) value@\(record.valueStamp) expiry=\(record.expiryUnixMs)@\(record.expiryStamp) counter=\(record.counter.map { "\($0.value)" } ?? "-")"
        }
        return state
    }

    /// Every replica's state of `key`, live or dead (for reading a failing seed).
    public func describe(key: String) -> String {
        var lines: [String] = []
        for replica in replicas {
            var found = "absent"
            replica.keyspace.forEachReplicatedState { k, namespace, record, dot in
                if k == Array(key.utf8) { found = "\(namespace == nil ? "dead" : "live") \(record) dot \(dot.map { "\($0)" } ?? "nil")" }
            }
            lines.append("\(replica.id): \(found)")
        }
        return lines.joined(separator: "\n")
    }

    /// Nil when every replica holds the same live keys and version vector; else what differs.
    func divergence() -> String? {
        if let problem = outcome.problem { return problem }
        let first = replicas[0]
        let now = Int64(nowMs(0) + options.maxClockOffsetMs)
        let firstState = liveState(0, nowUnixMs: now)
        for index in replicas.indices.dropFirst() {
            let replica = replicas[index]
            if replica.versionVector != first.versionVector {
                return "seed \(seed): version vectors differ: \(first.id) \(first.versionVector) vs \(replica.id) \(replica.versionVector)"
            }
            let state = liveState(index, nowUnixMs: now)
            for key in Set(firstState.keys).union(state.keys).sorted() where firstState[key] != state[key] {
                return "seed \(seed): key \(key) differs: \(firstState[key] ?? "absent") at \(first.id) vs \(state[key] ?? "absent") at \(replica.id)"
            }
        }
        // Counters add up every increment made anywhere (none is ever reset, deleted or expired).
        for (key, total) in incrementTotals.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let text = firstState[String(decoding: key, as: UTF8.self)]
            guard let text, text.hasPrefix("\(total) ") else {
                return "seed \(seed): counter \(String(decoding: key, as: UTF8.self)) is \(text ?? "absent"), increments add up to \(total)"
            }
        }
        return nil
    }
}
