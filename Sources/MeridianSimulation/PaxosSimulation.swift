import MeridianCore
import MeridianPaxos
import MeridianWire

/// A deterministic simulation of the strong protocol (docs/CONSISTENCY.md): full data centers
/// and witnesses run the server's own `PaxosReplica`; every message goes through the real
/// `PaxosCodec`; the network loses, duplicates, delays and reorders messages and cuts links
/// for a while; any voter (the witness too) crashes and restarts from what it made durable;
/// every node's clock runs at its own rate within the drift bound. Clients in the full data
/// centers run GET / SET / DEL / CAS / INCRBY on a few hot keys and LOCK / UNLOCK on a lock.
/// Everything comes from one seed: a failing seed replays exactly.
///
/// Checked: at most one entry is chosen per slot (from what the voters accepted, not from
/// what the learners say), learners apply exactly the chosen entries, at most one node holds
/// a partition's lease at any moment, every key's history is linearizable, lock tokens
/// increase with every grant, and once the faults stop every command completes, the learners
/// converge and the witness forgets what every full voter applied.
public struct PaxosSimulation {
    public struct Options: Sendable {
        public var fullDatacenters = 2
        public var witnesses = 1
        public var partitions = 2
        public var registerKeys = 3
        public var counterKeys = 1
        public var clientsPerDatacenter = 2
        /// Operations started by the clients before the faults stop.
        public var operations = 120
        public var lossPercent = 5
        public var duplicatePercent = 3
        /// One-way delay in steps, uniformly 1...this (reorders messages).
        public var delayStepsMax = 8
        /// Chance per step that a random link goes down for a while.
        public var partitionPerMille = 3
        /// Chance per step that a random voter crashes (it restarts after a while).
        public var crashPerMille = 2
        /// Clock rates differ from real time by up to this (the configured bound).
        public var maxDrift = 0.001
        public var stepMs: Int64 = 5
        public var leaseMs: Int64 = 600
        public var timeoutMs: Int64 = 1_500
        public var retryMs: Int64 = 60
        /// Small, so that learners snapshot and forget chosen entries many times per run (and
        /// restart from snapshots).
        public var compactionEntries: UInt64 = 8
        /// The clients of data center 0 run the first half of the operations, the others the
        /// second half: leadership must follow them (a leader hands idle partitions over).
        public var clientsMove = false
        /// Records every message, submission and completion in `trace` (for a failing seed).
        public var traceEnabled = false

        public init() {}
    }

    public struct Outcome: Sendable, CustomStringConvertible {
        public var problem: String?
        public var completed = 0
        public var uncertain = 0
        public var noQuorum = 0
        public var slotsChosen = 0
        public var crashes = 0
        public var messagesLost = 0
        public var lockGrants = 0
        /// Leaders that handed a partition over (RELEASE messages sent to other voters).
        public var releases = 0
        /// Snapshots learners wrote (log compaction).
        public var snapshots = 0
        public var steps = 0

        public var passed: Bool { problem == nil }

        public init() {}

        public var description: String {
            "completed=\(completed) uncertain=\(uncertain) noQuorum=\(noQuorum) chosen=\(slotsChosen) crashes=\(crashes) lost=\(messagesLost) lockGrants=\(lockGrants) releases=\(releases) snapshots=\(snapshots) steps=\(steps)"
                + (problem.map { " problem: \($0)" } ?? "")
        }
    }

    struct InFlight {
        var deliverAt: Int
        var from: Int
        var to: Int
        var payload: [UInt8]
    }

    struct Node {
        var replica: PaxosReplica?
        var disk = PaxosDurableState()
        var driftPPM: Int64
        var offsetMs: Int64
        var downUntil = -1
    }

    enum ClientOperation {
        case get([UInt8])
        case set([UInt8], [UInt8])
        case delete([UInt8])
        case compareAndSet([UInt8], expected: [UInt8], new: [UInt8])
        case increment([UInt8], Int64)
        case lock
        case unlock(UInt64)
    }

    struct Client {
        var node: Int
        var current: (operation: ClientOperation, invokedAt: UInt64, token: UInt64)?
        var heldToken: UInt64?
        var idleUntil = 0
    }

    struct Recorded {
        var operation: ClientOperation
        var invokedAt: UInt64
        var completedAt: UInt64?
        var result: StrongResult?
    }

    let seed: UInt64
    let options: Options
    var random: SplitMix64
    var nodes: [Node] = []
    var network: [InFlight] = []
    var linkDownUntil: [Int: Int] = [:]
    var clients: [Client] = []
    var history: [Recorded] = []
    var step = 0
    var nextToken: UInt64 = 1
    var started = 0
    var outcome = Outcome()
    /// With `traceEnabled`: what happened, one line per event.
    public private(set) var trace: [String] = []
    /// (partition, slot, ballot) → the entry and who accepted it: the ground truth of "chosen".
    var acceptances: [AcceptanceKey: (entry: StrongEntry, voters: Set<Int>)] = [:]
    var chosen: [SlotKey: StrongEntry] = [:]
    let lockName: [UInt8] = Array("lock:deploy".utf8)

    struct AcceptanceKey: Hashable { var partition: Int; var slot: UInt64; var ballot: Ballot }
    struct SlotKey: Hashable { var partition: Int; var slot: UInt64 }

    public init(seed: UInt64, options: Options = .init()) {
        self.seed = seed
        self.options = options
        self.random = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x5DEECE66D)
        let voters = options.fullDatacenters + options.witnesses
        let maxPPM = Int64(options.maxDrift * 1_000_000)
        for _ in 0..<voters {
            let drift = Int64(random.next() % UInt64(2 * maxPPM + 1)) - maxPPM
            let offset = Int64(random.next() % 10_000)
            nodes.append(Node(driftPPM: drift, offsetMs: offset))
        }
        for index in 0..<voters { nodes[index].replica = makeReplica(index, restarted: false) }
        for dc in 0..<options.fullDatacenters {
            for _ in 0..<options.clientsPerDatacenter { clients.append(Client(node: dc)) }
        }
    }

    var voterCount: Int { options.fullDatacenters + options.witnesses }
    var realMs: Int64 { Int64(step) * options.stepMs }

    func time(of index: Int) -> PaxosTime {
        let node = nodes[index]
        let local = realMs + realMs * node.driftPPM / 1_000_000
        return PaxosTime(monotonicMs: local + node.offsetMs, wallMs: 1_700_000_000_000 + local + node.offsetMs)
    }

    func makeReplica(_ index: Int, restarted: Bool) -> PaxosReplica {
        var configuration = PaxosConfiguration(
            voterCount: voterCount, learners: Array(0..<options.fullDatacenters), me: index, partitionCount: options.partitions)
        configuration.leaseMs = options.leaseMs
        configuration.maxDrift = options.maxDrift
        configuration.timeoutMs = options.timeoutMs
        configuration.retryMs = options.retryMs
        configuration.compactionEntries = options.compactionEntries
        return PaxosReplica(configuration: configuration, durable: nodes[index].disk, now: time(of: index), seed: seed &+ UInt64(index) &+ UInt64(step) << 8, restarted: restarted)
    }

    func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { Partitioner(partitionCount: options.partitions).partition(of: $0) }
    }

    func key(_ index: Int) -> [UInt8] { Array("k\(index)".utf8) }
    func counter(_ index: Int) -> [UInt8] { Array("n\(index)".utf8) }

    // MARK: - Running

    public mutating func run() -> Outcome {
        let faultSteps = 30_000
        while started < options.operations && step < faultSteps {
            injectFaults()
            startClientOperations()
            advance()
            if let problem = outcome.problem { return finish(problem) }
        }
        // The faults stop: links heal, crashed voters come back; everything must settle.
        linkDownUntil.removeAll()
        for index in nodes.indices where nodes[index].replica == nil { restart(index) }
        let settleBy = step + Int(4 * options.timeoutMs / options.stepMs) + 400
        while step < settleBy {
            advance()
            if let problem = outcome.problem { return finish(problem) }
            if clients.allSatisfy({ $0.current == nil }) && network.isEmpty && learnersAgree() && witnessesTruncated() { break }
        }
        if let unfinished = clients.firstIndex(where: { $0.current != nil }) {
            return finish("client \(unfinished) still waits after the faults stopped")
        }
        // A write after the heal must work everywhere (liveness).
        return finish(checkEnd())
    }

    mutating func finish(_ problem: String?) -> Outcome {
        outcome.problem = problem ?? outcome.problem
        outcome.steps = step
        return outcome
    }

    mutating func injectFaults() {
        if Int(random.next() % 1000) < options.partitionPerMille {
            let a = Int(random.next() % UInt64(voterCount))
            let b = Int(random.next() % UInt64(voterCount))
            if a != b { linkDownUntil[linkID(a, b)] = step + 20 + Int(random.next() % 200) }
        }
        if Int(random.next() % 1000) < options.crashPerMille {
            let victim = Int(random.next() % UInt64(voterCount))
            // Keep a majority up most of the time, but not always: a majority down must
            // answer errors, not hang.
            let down = nodes.filter { $0.replica == nil }.count
            if nodes[victim].replica != nil && (down == 0 || random.next() % 4 == 0) { crash(victim) }
        }
        for index in nodes.indices where nodes[index].replica == nil && step >= nodes[index].downUntil { restart(index) }
    }

    func linkID(_ a: Int, _ b: Int) -> Int { min(a, b) * 64 + max(a, b) }

    mutating func crash(_ index: Int) {
        nodes[index].replica = nil
        nodes[index].downUntil = step + 20 + Int(random.next() % 150)
        outcome.crashes += 1
        // Its clients' commands have unknown outcomes (the connection broke).
        for client in clients.indices where clients[client].node == index {
            if let current = clients[client].current {
                history.append(Recorded(operation: current.operation, invokedAt: current.invokedAt, completedAt: nil, result: nil))
                if case .lock = current.operation { clients[client].heldToken = nil }
                clients[client].current = nil
            }
        }
    }

    mutating func restart(_ index: Int) {
        nodes[index].replica = makeReplica(index, restarted: true)
    }

    mutating func startClientOperations() {
        for index in clients.indices where clients[index].current == nil && step >= clients[index].idleUntil && started < options.operations {
            guard nodes[clients[index].node].replica != nil else { continue }
            if options.clientsMove && (clients[index].node == 0) != (started < options.operations / 2) { continue }
            let operation = randomOperation(client: index)
            let token = nextToken
            nextToken += 1
            started += 1
            clients[index].current = (operation, UInt64(realMs), token)
            let (command, key) = commandFor(operation)
            let node = clients[index].node
            let now = time(of: node)
            if options.traceEnabled { trace.append("\(realMs) client \(index) at node \(node) token \(token): \(operation)") }
            nodes[node].replica!.submit(command, partition: partition(of: key), client: token, now: now)
            drain(node)
        }
    }

    mutating func randomOperation(client: Int) -> ClientOperation {
        let roll = random.next() % 100
        if roll < 8 {
            if let token = clients[client].heldToken { return .unlock(token) }
            return .lock
        }
        if roll < 20 && options.counterKeys > 0 {
            let counter = counter(Int(random.next() % UInt64(options.counterKeys)))
            return random.next() % 3 == 0 ? .get(counter) : .increment(counter, Int64(random.next() % 5) + 1)
        }
        let key = key(Int(random.next() % UInt64(options.registerKeys)))
        let value = Array("v\(random.next() % 6)".utf8)
        switch random.next() % 10 {
        case 0...3: return .get(key)
        case 4...6: return .set(key, value)
        case 7: return .delete(key)
        default: return .compareAndSet(key, expected: Array("v\(random.next() % 6)".utf8), new: value)
        }
    }

    func commandFor(_ operation: ClientOperation) -> (StrongCommand, [UInt8]) {
        switch operation {
        case .get(let key): return (StrongCommand(.get(key: key)), key)
        case .set(let key, let value): return (StrongCommand(.set(key: key, value: value, options: SetOptions())), key)
        case .delete(let key): return (StrongCommand(.delete(key: key)), key)
        case .compareAndSet(let key, let expected, let new):
            return (StrongCommand(.set(key: key, value: new, options: SetOptions(condition: .ifEqual(expected)))), key)
        case .increment(let key, let amount): return (StrongCommand(.incrementBy(key: key, amount: amount)), key)
        case .lock: return (StrongCommand(.lock(name: lockName, ttlMs: 2_000, owner: [])), lockName)
        case .unlock(let token): return (StrongCommand(.unlock(name: lockName, token: token)), lockName)
        }
    }

    /// One step: deliver due messages, tick every live node, check the invariants.
    mutating func advance() {
        step += 1
        let due = network.filter { $0.deliverAt <= step }
        network.removeAll { $0.deliverAt <= step }
        for message in due {
            guard nodes[message.to].replica != nil else { continue }
            let decoded: PaxosMessage
            do {
                decoded = try PaxosCodec.decode(message.payload)
            } catch {
                outcome.problem = "a message failed to decode: \(error)"
                return
            }
            guard PaxosCodec.encode(decoded) == message.payload else {
                outcome.problem = "codec round trip changed a message: \(decoded)"
                return
            }
            if options.traceEnabled { trace.append("\(realMs) \(message.from)->\(message.to) \(decoded)") }
            nodes[message.to].replica!.receive(decoded, from: message.from, now: time(of: message.to))
            drain(message.to)
        }
        for index in nodes.indices where nodes[index].replica != nil {
            nodes[index].replica!.tick(now: time(of: index))
            drain(index)
        }
        checkLeases()
    }

    /// Makes a node's step effects happen: durable first, then messages and replies.
    mutating func drain(_ index: Int) {
        guard var replica = nodes[index].replica else { return }
        let effects = replica.effects
        replica.effects = PaxosEffects()
        if let violation = replica.violations.first { outcome.problem = "node \(index): \(violation)" }
        nodes[index].replica = replica
        for change in effects.persist {
            if case .snapshot = change { outcome.snapshots += 1 }
            nodes[index].disk.apply(change)
            if case .accepted(let partition, let accepted) = change { recordAcceptance(partition, accepted, by: index) }
        }
        for (partition, slot, entry) in effects.applied {
            guard let truth = chosen[SlotKey(partition: partition, slot: slot)] else {
                outcome.problem = "node \(index) applied partition \(partition) slot \(slot) that no majority accepted"
                return
            }
            if truth != entry { outcome.problem = "node \(index) applied another entry than the chosen one at partition \(partition) slot \(slot)" }
        }
        for (to, message) in effects.messages { transmit(message, from: index, to: to) }
        for (token, result) in effects.completions { completeClient(token, result) }
    }

    mutating func recordAcceptance(_ partition: Int, _ accepted: AcceptedEntry, by voter: Int) {
        let key = AcceptanceKey(partition: partition, slot: accepted.slot, ballot: accepted.ballot)
        var record = acceptances[key] ?? (accepted.entry, [])
        if record.entry != accepted.entry {
            outcome.problem = "ballot \(accepted.ballot) proposed two entries for partition \(partition) slot \(accepted.slot)"
            return
        }
        record.voters.insert(voter)
        acceptances[key] = record
        guard record.voters.count >= voterCount / 2 + 1 else { return }
        let slotKey = SlotKey(partition: partition, slot: accepted.slot)
        if let earlier = chosen[slotKey] {
            if earlier != accepted.entry { outcome.problem = "two entries chosen for partition \(partition) slot \(accepted.slot)" }
        } else {
            chosen[slotKey] = accepted.entry
            outcome.slotsChosen += 1
        }
    }

    mutating func transmit(_ message: PaxosMessage, from: Int, to: Int) {
        let payload = PaxosCodec.encode(message)
        if case .release = message, from != to { outcome.releases += 1 }
        if from == to {
            // A node's messages to itself never touch the network.
            network.append(InFlight(deliverAt: step + 1, from: from, to: to, payload: payload))
            return
        }
        if let down = linkDownUntil[linkID(from, to)], step < down { outcome.messagesLost += 1; return }
        if Int(random.next() % 100) < options.lossPercent { outcome.messagesLost += 1; return }
        let copies = Int(random.next() % 100) < options.duplicatePercent ? 2 : 1
        for _ in 0..<copies {
            let delay = 1 + Int(random.next() % UInt64(options.delayStepsMax))
            network.append(InFlight(deliverAt: step + delay, from: from, to: to, payload: payload))
        }
    }

    mutating func completeClient(_ token: UInt64, _ result: StrongResult) {
        if options.traceEnabled { trace.append("\(realMs) token \(token) completed: \(result)") }
        guard let index = clients.firstIndex(where: { $0.current?.token == token }) else { return }
        let current = clients[index].current!
        clients[index].current = nil
        clients[index].idleUntil = step + Int(random.next() % 6)
        switch result {
        case .reply(let reply):
            outcome.completed += 1
            history.append(Recorded(operation: current.operation, invokedAt: current.invokedAt, completedAt: UInt64(realMs), result: result))
            switch current.operation {
            case .lock:
                if case .integer(let token) = reply {
                    clients[index].heldToken = UInt64(token)
                    outcome.lockGrants += 1
                }
            case .unlock: clients[index].heldToken = nil
            default: break
            }
        case .uncertain:
            outcome.uncertain += 1
            history.append(Recorded(operation: current.operation, invokedAt: current.invokedAt, completedAt: nil, result: nil))
            if case .lock = current.operation { clients[index].heldToken = nil }
        case .noQuorum:
            // Certainly not applied: not part of the history.
            outcome.noQuorum += 1
        }
    }

    // MARK: - Invariants

    mutating func checkLeases() {
        for partition in 0..<options.partitions {
            let holders = nodes.indices.filter { nodes[$0].replica?.holdsLease(partition, now: time(of: $0)) ?? false }
            if holders.count > 1 { outcome.problem = "partition \(partition): nodes \(holders) hold the lease at once (step \(step))" }
        }
    }

    func learnersAgree() -> Bool {
        for partition in 0..<options.partitions {
            let learners = (0..<options.fullDatacenters).compactMap { nodes[$0].replica }
            guard let first = learners.first else { return false }
            let slot = first.appliedSlot(partition)
            for learner in learners where learner.appliedSlot(partition) != slot || learner.state(partition) != first.state(partition) { return false }
            let highest = chosen.keys.filter { $0.partition == partition }.map(\.slot).max() ?? 0
            if slot < highest { return false }
        }
        return true
    }

    func witnessesTruncated() -> Bool {
        for witness in options.fullDatacenters..<voterCount {
            guard let replica = nodes[witness].replica else { return false }
            for partition in 0..<options.partitions {
                let applied = (0..<options.fullDatacenters).map { nodes[$0].replica?.appliedSlot(partition) ?? 0 }.min() ?? 0
                if replica.acceptedEntries(partition).keys.contains(where: { $0 <= applied }) { return false }
            }
        }
        return true
    }

    func checkEnd() -> String? {
        if !learnersAgree() { return "learners did not converge after the faults stopped" }
        if !witnessesTruncated() { return "a witness kept entries every full voter applied" }
        if let problem = checkHistories() { return problem }
        return nil
    }

    /// Every recorded operation, in invocation order (for a failing seed).
    public func describeHistory() -> [String] {
        history.sorted { $0.invokedAt < $1.invokedAt }.map { record in
            "\(record.invokedAt)...\(record.completedAt.map(String.init) ?? "?") \(record.operation) -> \(record.result.map { "\($0)" } ?? "unknown")"
        }
    }

    /// Linearizability of every key's history, and lock tokens.
    func checkHistories() -> String? {
        var byKey: [[UInt8]: [Linearizability.Operation]] = [:]
        var grants: [(token: UInt64, invokedAt: UInt64, completedAt: UInt64)] = []
        for record in history {
            let reply: StrongReply? = if case .reply(let reply) = record.result { reply } else { nil }
            switch record.operation {
            case .get(let key):
                guard let reply else { continue }
                let observed: [UInt8]? = if case .bulk(let value) = reply { value } else { nil }
                byKey[key, default: []].append(.init(.read(observed: observed), invokedAt: record.invokedAt, completedAt: record.completedAt))
            case .set(let key, let value):
                byKey[key, default: []].append(.init(.write(value), invokedAt: record.invokedAt, completedAt: record.completedAt))
            case .delete(let key):
                byKey[key, default: []].append(.init(.write(nil), invokedAt: record.invokedAt, completedAt: record.completedAt))
            case .compareAndSet(let key, let expected, let new):
                let succeeded = reply == .ok
                byKey[key, default: []].append(.init(.compareAndSet(expected: expected, new: new, succeeded: succeeded), invokedAt: record.invokedAt, completedAt: record.completedAt))
            case .increment(let key, let amount):
                let result: Int64? = if case .integer(let value) = reply { value } else { nil }
                byKey[key, default: []].append(.init(.increment(amount: amount, result: result), invokedAt: record.invokedAt, completedAt: record.completedAt))
            case .lock:
                if case .integer(let token) = reply, let completed = record.completedAt {
                    grants.append((UInt64(token), record.invokedAt, completed))
                }
            case .unlock:
                break
            }
        }
        for (key, verdict) in Linearizability.check(byKey: byKey) {
            return "key \(String(decoding: key, as: UTF8.self)) is not linearizable: \(verdict)"
        }
        // A grant that completed before another was invoked has the smaller token.
        for a in grants {
            for b in grants where a.completedAt < b.invokedAt && a.token >= b.token {
                return "lock token \(b.token) granted after token \(a.token)"
            }
        }
        if Set(grants.map(\.token)).count != grants.count { return "a lock token was granted twice" }
        return nil
    }
}
