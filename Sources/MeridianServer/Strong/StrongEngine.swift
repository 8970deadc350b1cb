import Logging
import MeridianCore
import MeridianPaxos
import MeridianStorage
import MeridianWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// The NIO shell around this node's `PaxosReplica` (docs/CONSISTENCY.md): one thread of its
/// own runs the state machine, so that no event loop ever waits for a Paxos fsync.
///
/// Inputs (client commands from connections, messages from peer links, a 10 ms tick) are
/// queued; the engine thread takes everything queued, runs it through the replica, writes the
/// step's durable changes as one synced batch (group commit), then sends the step's messages
/// and answers its clients. Messages to itself go back into the queue behind the batch, so a
/// vote is never counted before it is on disk.
///
/// For strong namespaces, voters are the data centers in configuration order (one node each
/// until intra-DC scale-out): voter `i` is data center `i`'s node; full data centers learn,
/// witnesses only vote. A data center of several nodes runs a second engine, its placement log:
/// its placement voters, one partition, every voter a learner (docs/CLUSTER.md, "Rebalancing").
public final class StrongEngine: @unchecked Sendable {
    public typealias Completion = @Sendable (StrongResult) -> Void

    enum Input {
        case submit(StrongCommand, partition: Int, Completion)
        case message(PaxosMessage, from: Int)
        case tick
    }

    public struct Statistics: Sendable {
        public var commandsSubmitted = 0
        public var replies = 0
        public var noQuorum = 0
        public var uncertain = 0
        public var entriesApplied = 0
        public var messagesSent = 0
        public var messagesReceived = 0
        public var messagesDropped = 0
        /// Messages refused because a field was out of range (a damaged or hostile peer).
        public var messagesRejected = 0
        public var syncedBatches = 0
        public var syncMicrosecondsTotal = 0
        /// Partitions this node leads, and of those, the ones whose lease it holds.
        public var partitionsLed = 0
        public var leasesHeld = 0
        public var partitionsActive = 0
    }

    /// Node name of each voter.
    public let voterNames: [String]
    public let me: Int
    public let isWitness: Bool
    public let partitioner: Partitioner
    public let configuration: PaxosConfiguration
    private let logger: Logger
    private let store: PaxosStore?
    private let onFatal: @Sendable (String) -> Void
    private let inbox = SerialInbox<Input>()
    /// Guards `sendMessages`, a stored property read under a plain lock: kept in a generic box
    /// and read through its `inout` accessor, a closure is wrapped in one more reabstraction
    /// thunk at every access, and sends grow slower without bound.
    private let callbacks = NIOLock()
    private var sendMessages: (@Sendable (String, [[UInt8]]) -> Bool)?
    private var watchedKey: (partition: Int, key: [UInt8], onChange: @Sendable ([UInt8]?) -> Void)?
    private let published = NIOLockedValueBox(Statistics())
    private let tickTask = NIOLockedValueBox<RepeatedTask?>(nil)

    // Engine thread only.
    private var replica: PaxosReplica
    private var waiters: [UInt64: Completion] = [:]
    private var nextClient: UInt64 = 1
    private var statistics = Statistics()
    private var lastPublishNs: UInt64 = 0
    /// The watched key's value as last reported (`.none`: not reported yet).
    private var watchedValue: [UInt8]?? = .none

    /// The strong namespaces' engine. `store` nil: nothing is durable (tests only; a server
    /// always has one).
    public convenience init(
        configuration: MeridianConfiguration, datacenter: Int, store: DurableStore?, logger: Logger,
        onFatal: @escaping @Sendable (String) -> Void
    ) throws {
        let datacenters = configuration.cluster.datacenters
        let paxos = Self.paxosConfiguration(
            voterCount: datacenters.count, learners: datacenters.indices.filter { !datacenters[$0].witness }, me: datacenter,
            partitionCount: configuration.cluster.partitions, timing: configuration)
        try self.init(
            voterNames: datacenters.map { $0.nodes.first?.name ?? $0.name }, paxos: paxos, store: store, logger: logger,
            onFatal: onFatal)
    }

    /// A Paxos group's configuration with the `strong` section's lease, drift and timeout (the
    /// strong namespaces' group and the placement log run with the same timing).
    public static func paxosConfiguration(
        voterCount: Int, learners: [Int], me: Int, partitionCount: Int, timing configuration: MeridianConfiguration
    ) -> PaxosConfiguration {
        var paxos = PaxosConfiguration(voterCount: voterCount, learners: learners, me: me, partitionCount: partitionCount)
        paxos.leaseMs = configuration.strong.leaseMs
        paxos.maxDrift = configuration.strong.maxDrift
        paxos.timeoutMs = configuration.strong.timeoutMs
        return paxos
    }

    /// A Paxos group of the nodes `voterNames` (this node is `paxos.me`), its state in `store`.
    public init(
        voterNames: [String], paxos configuration: PaxosConfiguration, store: DurableStore?, logger: Logger,
        onFatal: @escaping @Sendable (String) -> Void
    ) throws {
        precondition(voterNames.count == configuration.voterCount)
        let datacenter = configuration.me
        self.voterNames = voterNames
        self.me = configuration.me
        self.isWitness = configuration.isWitness
        self.partitioner = Partitioner(partitionCount: configuration.partitionCount)
        var paxos = configuration
        paxos.retryMs = Self.retryMs
        self.configuration = paxos
        self.logger = logger
        self.onFatal = onFatal
        let paxosStore = store.map { PaxosStore(store: $0, partitionCount: configuration.partitionCount) }
        self.store = paxosStore
        let durable = try paxosStore?.load() ?? PaxosDurableState()
        let restarted = !durable.partitions.isEmpty
        self.replica = PaxosReplica(
            configuration: paxos, durable: durable, now: Self.now(), seed: UInt64(truncatingIfNeeded: SystemClock.nowUnixMs()) &+ UInt64(datacenter),
            restarted: restarted)
        if restarted {
            logger.info("strong state reloaded", metadata: [
                "partitions": "\(durable.partitions.count)",
                "chosen_entries": "\(durable.partitions.values.reduce(0) { $0 + $1.chosen.count })",
                "accepted_entries": "\(durable.partitions.values.reduce(0) { $0 + $1.accepted.count })",
            ])
        }
    }

    /// Unanswered PREPARE / ACCEPT / LEARN are sent again after this long (links are TCP:
    /// messages are lost only when a link breaks).
    static let retryMs: Int64 = 200
    static let tickMs: Int64 = 10

    static func now() -> PaxosTime {
        PaxosTime(monotonicMs: Int64(SystemClock.monotonicNs() / 1_000_000), wallMs: SystemClock.nowUnixMs())
    }

    /// Starts the engine thread and its tick on `loop`.
    public func start(tickingOn loop: EventLoop) {
        inbox.start { [weak self] inputs in self?.step(inputs) }
        let task = loop.scheduleRepeatedTask(initialDelay: .milliseconds(Self.tickMs), delay: .milliseconds(Self.tickMs)) { [weak self] _ in
            self?.enqueue([.tick])
        }
        tickTask.withLockedValue { $0 = task }
    }

    /// How messages leave: `send(peer node name, payloads)`; false when there is no link.
    public func attach(sender send: @escaping @Sendable (String, [[UInt8]]) -> Bool) {
        callbacks.withLock { sendMessages = send }
    }

    /// Calls `onChange` with the value of `key` in `partition`'s applied state (nil: absent)
    /// whenever it changes, and once after the engine's first step (a restarted voter's log
    /// holds it already); on the engine thread.
    public func watch(key: [UInt8], partition: Int, onChange: @escaping @Sendable ([UInt8]?) -> Void) {
        callbacks.withLock { watchedKey = (partition, key, onChange) }
    }

    public func stop() {
        tickTask.withLockedValue { $0?.cancel() }
        inbox.stop()
        store?.store.close()
    }

    /// The partition of a key (or lock name).
    public func partition(of key: [UInt8]) -> Int {
        key.withUnsafeBytes { partitioner.partition(of: $0) }
    }

    /// Runs a client's strong command; `completion` is called once, on the engine thread.
    public func submit(_ command: StrongCommand, partition: Int, completion: @escaping Completion) {
        precondition(!isWitness, "a witness serves no clients")
        enqueue([.submit(command, partition: partition, completion)])
    }

    /// A strong frame's payload from the peer named `peer`.
    public func receive(_ payload: [UInt8], fromPeer peer: String) throws(WireError) {
        guard let voter = voterNames.firstIndex(of: peer), voter != me else { return }
        let message = try PaxosCodec.decode(payload)
        enqueue([.message(message, from: voter)])
    }

    /// What INFO shows (published by the engine thread at most every 100 ms).
    public var currentStatistics: Statistics { published.withLockedValue { $0 } }

    private func enqueue(_ inputs: [Input]) {
        inbox.enqueue(inputs)
    }

    private func step(_ inputs: [Input]) {
        let now = Self.now()
        for input in inputs {
            switch input {
            case .submit(let command, let partition, let completion):
                let client = nextClient
                nextClient += 1
                waiters[client] = completion
                statistics.commandsSubmitted += 1
                replica.submit(command, partition: partition, client: client, now: now)
            case .message(let message, let from):
                if from != me { statistics.messagesReceived += 1 }
                replica.receive(message, from: from, now: now)
            case .tick:
                replica.tick(now: now)
            }
        }
        let effects = replica.effects
        replica.effects = PaxosEffects()
        if let store, !effects.persist.isEmpty {
            let started = SystemClock.monotonicNs()
            do {
                try store.persist(effects.persist)
            } catch {
                // A vote that may not be on disk is never sent: stop the node.
                onFatal("paxos store write failed: \(error)")
                return
            }
            statistics.syncedBatches += 1
            statistics.syncMicrosecondsTotal += Int((SystemClock.monotonicNs() - started) / 1000)
        }
        var local: [Input] = []
        var outgoing: [Int: [[UInt8]]] = [:]
        for (to, message) in effects.messages {
            if to == me {
                local.append(.message(message, from: me))
            } else {
                let payload = PaxosCodec.encode(message)
                if payload.count > Frame.payloadBytesMax {
                    // Bounded by construction (commands, promises, batches); never sent whole.
                    statistics.messagesDropped += 1
                    logger.error("a strong message over the frame limit was not sent", metadata: ["bytes": "\(payload.count)", "to": "\(voterNames[to])"])
                    continue
                }
                outgoing[to, default: []].append(payload)
            }
        }
        let send = callbacks.withLock { sendMessages }
        for (to, payloads) in outgoing {
            if let send, send(voterNames[to], payloads) {
                statistics.messagesSent += payloads.count
            } else {
                // No link right now: Paxos retries; the peer catches up when the link is back.
                statistics.messagesDropped += payloads.count
            }
        }
        statistics.entriesApplied += effects.applied.count
        for (client, result) in effects.completions {
            guard let completion = waiters.removeValue(forKey: client) else { continue }
            switch result {
            case .reply: statistics.replies += 1
            case .noQuorum: statistics.noQuorum += 1
            case .uncertain: statistics.uncertain += 1
            }
            completion(result)
        }
        if !local.isEmpty {
            inbox.enqueueFirst(local)
        }
        if let watched = callbacks.withLock({ watchedKey }),
           watchedValue == nil || effects.applied.contains(where: { $0.partition == watched.partition }) {
            var value: [UInt8]?
            if case .bulk(let bytes)? = replica.state(watched.partition)?.read(StrongCommand(.get(key: watched.key)), nowMs: now.wallMs) {
                value = bytes
            }
            if watchedValue != .some(value) {
                watchedValue = .some(value)
                watched.onChange(value)
            }
        }
        let nowNs = SystemClock.monotonicNs()
        if nowNs - lastPublishNs >= 100_000_000 {
            lastPublishNs = nowNs
            var snapshot = statistics
            snapshot.partitionsActive = replica.partitions.count
            snapshot.messagesRejected = replica.rejectedMessages
            snapshot.partitionsLed = replica.partitions.keys.filter { replica.isLeader($0) }.count
            snapshot.leasesHeld = replica.partitions.keys.filter { replica.holdsLease($0, now: now) }.count
            published.withLockedValue { $0 = snapshot }
        }
    }
}
