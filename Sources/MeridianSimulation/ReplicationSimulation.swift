import MeridianCore
import MeridianWire

/// A deterministic simulation of eventual replication between full data centers
/// (docs/REPLICATION.md): each data center's writes, outbound log, batches (through the real
/// `DeltaBatch` codec), acknowledgements, retransmission after silence, and snapshot catch-up,
/// over a simulated network that loses, duplicates, delays and reorders messages and cuts links
/// for a while. Everything comes from one seed: a failing seed replays exactly.
///
/// After the faults stop and the links heal, `run` lets the system go quiet and reports
/// whether every data center holds the same state and the same version vector.
///
/// What this models of a replica (merging register states by LWW, dots, the conflict rule)
/// is what the server's replication will do; the server does not replicate yet.
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
        public var clockSkewMsMax: UInt64 = 200
        /// Chance per step that a data center crashes and restarts: it loses what it had in
        /// flight and its link state, and keeps its store, version vector and outbound log
        /// (durable namespaces keep all three on disk).
        public var crashPercent = 1
        /// Counter keys (the `INCR` family) besides the register keys.
        public var counterKeys = 3

        public init() {}
    }

    /// The outcome of one seed.
    public struct Outcome: Sendable, CustomStringConvertible {
        public var converged: Bool
        public var problem: String?
        public var writes = 0
        public var batchesSent = 0
        public var batchesLost = 0
        public var snapshots = 0
        public var conflicts = 0
        public var crashes = 0
        public var steps = 0

        public var description: String {
            "converged=\(converged) writes=\(writes) batches=\(batchesSent) lost=\(batchesLost) snapshots=\(snapshots) conflicts=\(conflicts) crashes=\(crashes) steps=\(steps)"
                + (problem.map { " problem: \($0)" } ?? "")
        }
    }

    /// A key's state at one replica: a register with the dot of the write that made it, or a
    /// counter (whose merge needs no dot).
    struct Held: Equatable {
        var record: DurableRecord?
        var counter: PNCounter?
        var dot: Dot
        var previous: Dot?
    }

    enum Message {
        case batch(from: Int, payload: [UInt8])
        case snapshot(from: Int, through: UInt64, states: [[UInt8]: Held])
        case ack(from: Int, origin: Int, through: UInt64)
    }

    struct InFlight {
        var deliverAt: Int
        var to: Int
        var message: Message
    }

    struct Replica {
        var id: ReplicaID
        var clock: HybridLogicalClock
        var skewMs: UInt64
        var store: [[UInt8]: Held] = [:]
        var versionVector = VersionVector()
        var log: OutboundLog
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
    var step = 0
    var outcome = Outcome(converged: false)
    /// Every increment made, per counter key: what each counter must add up to.
    var incrementTotals: [[UInt8]: Int64] = [:]

    public init(seed: UInt64, options: Options = Options()) {
        self.seed = seed
        self.options = options
        self.random = SplitMix64(seed: seed)
        let names = (0..<options.datacenters).map { "dc\($0)" }
        for index in 0..<options.datacenters {
            let id = ReplicaID(datacenter: UInt16(index), node: 0)
            replicas.append(Replica(
                id: id, clock: HybridLogicalClock(),
                skewMs: UInt64.random(in: 0...options.clockSkewMsMax, using: &random),
                log: OutboundLog(origin: id, peers: names.enumerated().filter { $0.offset != index }.map(\.element), retainedBytesMax: options.logBytesMax)))
        }
    }

    /// Runs the writes with faults, then heals and runs until quiet (or a step budget).
    public mutating func run() -> Outcome {
        for _ in 0..<options.writeSteps {
            step += 1
            if Int.random(in: 0..<100, using: &random) < 60 {
                if Int.random(in: 0..<4, using: &random) == 0 && options.counterKeys > 0 { increment() } else { write() }
            }
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
            if network.isEmpty && everyLogAcknowledged() { break }
        }
        outcome.steps = step
        outcome.conflicts = replicas.reduce(0) { $0 + $1.conflicts }
        outcome.problem = divergence()
        outcome.converged = outcome.problem == nil
        return outcome
    }

    // MARK: Writes

    mutating func write() {
        let index = Int.random(in: 0..<replicas.count, using: &random)
        let key = Array("k\(Int.random(in: 0..<options.keys, using: &random))".utf8)
        let physical = UInt64(step) * 10 + replicas[index].skewMs
        let timestamp = replicas[index].clock.now(physicalMs: physical)
        let stamp = LWWStamp(timestamp: timestamp, origin: replicas[index].id)
        let record: DurableRecord = Int.random(in: 0..<5, using: &random) == 0
            ? .tombstone(stamp: stamp)
            : DurableRecord(value: Array("v\(step)@\(index)".utf8), valueStamp: stamp, expiryUnixMs: 0, expiryStamp: stamp, encoding: .byContent)
        let dot = replicas[index].log.nextDot
        let previous = replicas[index].store[key]?.dot
        replicas[index].store[key] = Held(record: record, counter: nil, dot: dot, previous: previous)
        replicas[index].versionVector.advance(replicas[index].id, to: dot.sequence)
        let delta = Delta(dot: dot, previousDot: previous, key: key, state: .register(record))
        replicas[index].log.append(delta, bytes: key.count + record.encoded().count + 16)
        outcome.writes += 1
    }

    /// `INCRBY` on a counter key: the delta carries the whole counter state.
    mutating func increment() {
        let index = Int.random(in: 0..<replicas.count, using: &random)
        let key = Array("c\(Int.random(in: 0..<options.counterKeys, using: &random))".utf8)
        let amount = Int64.random(in: -3...5, using: &random)
        var counter = replicas[index].store[key]?.counter ?? PNCounter()
        counter.add(amount, origin: replicas[index].id)
        incrementTotals[key, default: 0] += amount
        let dot = replicas[index].log.nextDot
        replicas[index].store[key] = Held(record: nil, counter: counter, dot: Self.counterDot, previous: nil)
        replicas[index].versionVector.advance(replicas[index].id, to: dot.sequence)
        replicas[index].log.append(Delta(dot: dot, previousDot: nil, key: key, state: .counter(counter)), bytes: key.count + 64)
        outcome.writes += 1
    }

    /// What a counter key holds in place of a dot: a counter's merge needs none, and a fixed
    /// value keeps held states comparable.
    static let counterDot = Dot(origin: ReplicaID(datacenter: 0, node: 0), sequence: 1)

    /// A crash and restart: messages to and from the node are lost, and so is its link state.
    mutating func crash(_ index: Int) {
        outcome.crashes += 1
        network.removeAll { $0.to == index }
        replicas[index].sentThrough = [:]
        replicas[index].lastProgressStep = [:]
        for other in replicas.indices where other != index {
            replicas[other].sentThrough[index] = nil
        }
    }

    // MARK: Network

    mutating func tick(faults: Bool) {
        // Deliver what is due, in random order among the due ones (reordering).
        var due = network.indices.filter { network[$0].deliverAt <= step }
        due.shuffle(using: &random)
        let delivering = due.map { network[$0] }
        network.removeAll { $0.deliverAt <= step }
        for message in delivering { deliver(message) }
        for index in replicas.indices { send(from: index, faults: faults) }
    }

    mutating func transmit(_ message: Message, from: Int, to: Int, faults: Bool) {
        if let until = downUntil[from * options.datacenters + to], until > step { return }
        if faults && Int.random(in: 0..<100, using: &random) < options.lossPercent {
            if case .batch = message { outcome.batchesLost += 1 }
            return
        }
        let delay = 1 + Int.random(in: 0..<(faults ? options.delayStepsMax : 3), using: &random)
        network.append(InFlight(deliverAt: step + delay, to: to, message: message))
        if faults && Int.random(in: 0..<100, using: &random) < options.duplicatePercent {
            network.append(InFlight(deliverAt: step + delay + Int.random(in: 0...options.delayStepsMax, using: &random), to: to, message: message))
        }
    }

    mutating func send(from index: Int, faults: Bool) {
        for peer in replicas.indices where peer != index {
            let name = "dc\(peer)"
            let acked = replicas[index].log.acknowledged[name]!
            var sent = replicas[index].sentThrough[peer] ?? 0
            // Silence for a while: start again from what the peer acknowledged.
            if step - (replicas[index].lastProgressStep[peer] ?? 0) > 60 && sent > acked {
                sent = acked
                replicas[index].lastProgressStep[peer] = step
            }
            sent = max(sent, acked)
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
                transmit(.snapshot(from: index, through: through, states: replicas[index].store), from: index, to: peer, faults: faults)
                replicas[index].sentThrough[peer] = through
            }
        }
    }

    mutating func deliver(_ inFlight: InFlight) {
        let to = inFlight.to
        switch inFlight.message {
        case .batch(let from, let payload):
            let batch: DeltaBatch
            do {
                batch = try DeltaBatch(decoding: payload)
            } catch {
                outcome.problem = "seed \(seed): a batch failed to decode: \(error)"
                return
            }
            for delta in batch.deltas {
                switch delta.state {
                case .register(let record):
                    merge(Held(record: record, counter: nil, dot: delta.dot, previous: delta.previousDot), key: delta.key, into: to, countConflicts: true)
                case .counter(let counter):
                    var merged = replicas[to].store[delta.key]?.counter ?? PNCounter()
                    merged.merge(counter)
                    replicas[to].store[delta.key] = Held(record: nil, counter: merged, dot: Self.counterDot, previous: nil)
                }
                replicas[to].versionVector.record(delta.dot)
            }
            transmit(.ack(from: to, origin: from, through: replicas[to].versionVector[replicas[from].id]), from: to, to: from, faults: false)
        case .snapshot(let from, let through, let states):
            for (key, held) in states.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                merge(held, key: key, into: to, countConflicts: false)
            }
            // A snapshot holds every write of its origin up to `through`.
            replicas[to].versionVector.advance(replicas[from].id, to: through)
            transmit(.ack(from: to, origin: from, through: replicas[to].versionVector[replicas[from].id]), from: to, to: from, faults: false)
        case .ack(let from, let origin, let through):
            guard origin == to else { return }
            let before = replicas[to].log.acknowledged["dc\(from)"]!
            replicas[to].log.acknowledge(peer: "dc\(from)", through: through)
            if through > before { replicas[to].lastProgressStep[from] = step }
        }
    }

    mutating func merge(_ incoming: Held, key: [UInt8], into index: Int, countConflicts: Bool) {
        // The receiver's clock moves past every stamp it applies, so that its own later writes
        // are stamped above what it has seen: otherwise an overwrite made here after a write
        // from a faster clock would lose to it under LWW, and the data centers would diverge
        // (seed 57 showed exactly that before this line existed).
        if let stamp = incoming.record?.valueStamp {
            let physical = UInt64(step) * 10 + replicas[index].skewMs
            do {
                _ = try replicas[index].clock.receive(stamp.timestamp, physicalMs: physical)
            } catch {
                outcome.problem = "seed \(seed): clock bound refused a stamp within the simulated skew: \(error)"
            }
        }
        if let counter = incoming.counter {
            var merged = replicas[index].store[key]?.counter ?? PNCounter()
            merged.merge(counter)
            replicas[index].store[key] = Held(record: nil, counter: merged, dot: Self.counterDot, previous: nil)
            return
        }
        guard let local = replicas[index].store[key], let localRecord = local.record, let incomingRecord = incoming.record else {
            replicas[index].store[key] = incoming
            return
        }
        if countConflicts && DeltaRelation.of(incoming: incoming.dot, previous: incoming.previous, localDot: local.dot, localPrevious: local.previous) == .concurrent {
            replicas[index].conflicts += 1
        }
        if incomingRecord.valueStamp > localRecord.valueStamp {
            replicas[index].store[key] = incoming
        }
    }

    // MARK: Checks

    func everyLogAcknowledged() -> Bool {
        replicas.allSatisfy { replica in replica.log.acknowledged.values.allSatisfy { $0 == replica.log.lastSequence } }
    }

    /// Nil when every replica holds the same states and version vector; else what differs.
    func divergence() -> String? {
        if let problem = outcome.problem { return problem }
        let first = replicas[0]
        for replica in replicas.dropFirst() {
            if replica.versionVector != first.versionVector {
                return "seed \(seed): version vectors differ: \(first.id) \(first.versionVector) vs \(replica.id) \(replica.versionVector)"
            }
            for key in Set(first.store.keys).union(replica.store.keys).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                let a = first.store[key], b = replica.store[key]
                if a != b {
                    return "seed \(seed): key \(String(decoding: key, as: UTF8.self)) differs: \(String(describing: a)) vs \(String(describing: b))"
                }
            }
        }
        // Counters add up every increment made anywhere (none is ever reset here).
        for (key, total) in incrementTotals.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let value = first.store[key]?.counter?.value ?? 0
            if value != total {
                return "seed \(seed): counter \(String(decoding: key, as: UTF8.self)) is \(value), increments add up to \(total)"
            }
        }
        return nil
    }
}
