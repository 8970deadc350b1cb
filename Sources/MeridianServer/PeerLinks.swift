import Dispatch
import Logging
import MeridianCore
import MeridianWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The links between this node and the nodes of other data centers (docs/REPLICATION.md,
/// "Messages" and "Links"): a listener on this node's `peer` address, a dialer for every peer
/// whose `ReplicaID` is larger than ours (so each pair has one link), the `HELLO` / `WELCOME` /
/// `REFUSE` handshake, `PING` / `PONG` liveness, and reconnection with doubling backoff.
///
/// A link between two full nodes streams each side's deltas to the other (`PeerStream` in
/// `PeerConnectionHandler`): batches, acknowledgements by version vector, snapshots for a
/// peer the outbound log no longer covers. Links to witnesses carry only the handshake and
/// liveness until strong namespaces arrive.
public final class PeerLinks: Sendable {
    /// The state of one peer, for INFO.
    public struct PeerState: Sendable {
        public var node: String
        public var datacenter: String
        public var witness: Bool
        public var connected = false
        /// The connection that holds the link to this peer (one at a time), from the moment
        /// its `HELLO` was accepted.
        var owner: ObjectIdentifier?
        public var connectedSinceUnixMs: Int64 = 0
        public var lastRoundTripUs: Int64 = -1
        public var refusals = 0
        public var lastProblem = ""
        /// Failed attempts (connect errors and refusals) since
        /// the last link that came up: the reconnect backoff doubles with each.
        public var failures = 0
    }

    static let pingIntervalMs: Int64 = 1000
    /// A link on which nothing arrived for this long is closed (a peer that vanished without a
    /// FIN would otherwise hold the link, and refuse its own reconnection, until TCP gives up).
    static let silenceLimitMs: Int64 = 3 * pingIntervalMs

    let configuration: MeridianConfiguration
    let me: ReplicaID
    let myName: String
    let myDatacenter: String
    let myRole: PeerRole
    let logger: Logger
    let group: EventLoopGroup
    /// The data this node replicates, and its replication state (nil on a witness).
    let database: Database?
    /// This node's part of the strong protocol: `strong` frames go to it, and it sends its
    /// messages over these links.
    let strong: StrongEngine?
    /// This node's part of its data center's cluster (several nodes per data center): `cluster`
    /// frames from the data center's other nodes go to it, and it sends over these links.
    let cluster: ClusterEngine?
    /// Per peer data center, where this node's stream goes (`streamLinkUp`).
    private let streamChoices = NIOLockedValueBox<[String: StreamChoice]>([:])
    /// Peer name → the channel that holds the link (for the strong engine's messages).
    private let linkChannels = NIOLockedValueBox<[String: Channel]>([:])
    let diskReader: DiskReader?
    let warmUp: WarmUpProgress?
    private let garbageCollection: NIOLockedValueBox<RepeatedTask?> = NIOLockedValueBox(nil)
    /// Peer name → state.
    let states: NIOLockedValueBox<[String: PeerState]>
    private let listener: NIOLockedValueBox<Channel?> = NIOLockedValueBox(nil)
    private let stopped = NIOLockedValueBox(false)

    /// How often tombstones every data center has seen are dropped.
    static let tombstoneCollectionIntervalMs: Int64 = 1000

    public init(
        configuration: MeridianConfiguration, datacenter: Int, node: Int, group: EventLoopGroup, logger: Logger,
        database: Database? = nil, diskReader: DiskReader? = nil, warmUp: WarmUpProgress? = nil, strong: StrongEngine? = nil,
        cluster: ClusterEngine? = nil
    ) {
        self.configuration = configuration
        self.database = database
        self.strong = strong
        self.cluster = cluster
        self.diskReader = diskReader
        self.warmUp = warmUp
        self.me = ReplicaID(datacenter: UInt16(datacenter), node: UInt16(node))
        let dc = configuration.cluster.datacenters[datacenter]
        self.myName = dc.nodes[node].name
        self.myDatacenter = dc.name
        self.myRole = dc.witness ? .witness : .full
        self.group = group
        self.logger = logger
        var states: [String: PeerState] = [:]
        for (dcIndex, other) in configuration.cluster.datacenters.enumerated() where dcIndex != datacenter || cluster != nil {
            for (nodeIndex, peer) in other.nodes.enumerated() where peer.peer != nil && !(dcIndex == datacenter && nodeIndex == node) {
                states[peer.name] = PeerState(node: peer.name, datacenter: other.name, witness: other.witness)
            }
        }
        self.states = NIOLockedValueBox(states)
    }

    /// The peers this node talks to: other data centers' nodes with a peer address, and the
    /// other nodes of its own data center when it runs the cluster core. Two witnesses have
    /// nothing to say to each other.
    var peers: [(id: ReplicaID, node: NodeConfig, witness: Bool)] {
        var result: [(ReplicaID, NodeConfig, Bool)] = []
        for (dcIndex, dc) in configuration.cluster.datacenters.enumerated() where dcIndex != Int(me.datacenter) || cluster != nil {
            if dc.witness && myRole == .witness { continue }
            for (nodeIndex, node) in dc.nodes.enumerated() where node.peer != nil {
                let id = ReplicaID(datacenter: UInt16(dcIndex), node: UInt16(nodeIndex))
                if id == me { continue }
                result.append((id, node, dc.witness))
            }
        }
        return result
    }

    /// Opens the listener (when this node has a peer address) and starts dialing.
    public func start(peerAddress: HostPort?) throws {
        if let address = peerAddress {
            let links = self
            let channel = try ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PeerConnectionHandler(links: links, dialing: nil))
                    }
                }
                .bind(host: address.host, port: address.port).wait()
            listener.withLockedValue { $0 = channel }
            logger.info("listening for peers", metadata: ["address": "\(address)"])
        }
        for peer in peers where me < peer.id {
            dial(peer.node, immediately: true)
        }
        // Dead states: a data center of several nodes that is the only full one collects its own
        // by age; between data centers of one node each, by the tombstone horizon. Data centers
        // beside a larger one keep them: a peer's write older than a delete can arrive after any
        // grace (a link down that long), and a data center of one node is acknowledged by one
        // node of a larger one at a time, so its horizon would stall anyway (docs/CLUSTER.md,
        // "Collecting dead states").
        if let database, let cluster, database.replicator == nil {
            // Inside a data center of several nodes with no other data center, by age
            // (docs/CLUSTER.md, "Collecting dead states"): a few times per grace, at most every
            // minute, the first time once an anti-entropy interval passed since the start (after
            // a long stop, a pass brings deletes a replica missed before anything is collected),
            // off the links' loop (the pass walks every dead state). Hints as old go too.
            let graceMs = configuration.cluster.scaleOut.deadStateGraceMs
            let everyMs = max(Self.tombstoneCollectionIntervalMs, min(graceMs / 10, 60_000))
            let firstMs = max(everyMs, configuration.cluster.scaleOut.antiEntropyIntervalMs)
            let queue = DispatchQueue(label: "meridian.dead-states")
            let task = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(firstMs), delay: .milliseconds(everyMs)) { _ in
                queue.async {
                    let cutoff = SystemClock.nowUnixMs() - graceMs
                    cluster.discardHints(writtenBeforeUnixMs: cutoff)
                    database.collectDeadStates(diedBeforeUnixMs: cutoff)
                }
            }
            garbageCollection.withLockedValue { $0 = task }
        } else if let database, let replicator = database.replicator, !configuration.cluster.datacenters.contains(where: { $0.nodes.count > 1 }) {
            let task = group.next().scheduleRepeatedTask(
                initialDelay: .milliseconds(Self.tombstoneCollectionIntervalMs), delay: .milliseconds(Self.tombstoneCollectionIntervalMs)
            ) { _ in
                database.collectTombstones(replicator: replicator)
            }
            garbageCollection.withLockedValue { $0 = task }
        }
    }

    /// Closes the listener and stops reconnecting.
    public func stop() {
        stopped.withLockedValue { $0 = true }
        garbageCollection.withLockedValue { $0?.cancel() }
        if let channel = listener.withLockedValue({ $0 }) { try? channel.close().wait() }
    }

    private func backoffMs(attempt: Int) -> Int64 {
        let config = configuration.replication
        var delay = config.reconnectBackoffMinMs
        for _ in 0..<min(attempt, 30) where delay < config.reconnectBackoffMaxMs { delay *= 2 }
        return min(delay, config.reconnectBackoffMaxMs)
    }

    /// Connects to `node`, and again after any failure or close, with a backoff that doubles
    /// with each failure since the last link that came up.
    func dial(_ node: NodeConfig, immediately: Bool = false) {
        guard !stopped.withLockedValue({ $0 }), let address = node.peer else { return }
        let links = self
        let loop = group.next()
        let failures = states.withLockedValue { $0[node.name]?.failures ?? 0 }
        let delay = immediately ? 0 : backoffMs(attempt: failures)
        loop.scheduleTask(in: .milliseconds(delay)) {
            ClientBootstrap(group: loop)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(2))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PeerConnectionHandler(links: links, dialing: node.name))
                    }
                }
                .connect(host: address.host, port: address.port)
                .whenComplete { result in
                    switch result {
                    case .success(let channel):
                        channel.closeFuture.whenComplete { _ in links.dial(node) }
                    case .failure(let error):
                        links.record(node.name) {
                            $0.lastProblem = "connect: \(error)"
                            $0.failures += 1
                        }
                        links.dial(node)
                    }
                }
        }
    }

    /// Called by the connection that holds a peer's link once it is established, and with nil
    /// when that connection closes.
    func setLinkChannel(_ channel: Channel?, for peer: String, ifCurrent current: Channel? = nil) {
        linkChannels.withLockedValue { channels in
            if let channel {
                channels[peer] = channel
            } else if let current, channels[peer] === current {
                channels[peer] = nil
            }
        }
    }

    /// Sends strong-protocol payloads to a peer as `strong` frames, in order, in one write.
    /// False when no link to the peer is up (Paxos retries; nothing is queued here).
    public func sendStrong(to peer: String, _ payloads: [[UInt8]]) -> Bool {
        send(.strong, to: peer, payloads)
    }

    /// Sends cluster-protocol payloads to a node of this data center as `cluster` frames, in
    /// order, in one write. False when no link to it is up (the core re-sends or hints).
    public func sendCluster(to peer: String, _ payloads: [[UInt8]]) -> Bool {
        send(.cluster, to: peer, payloads)
    }

    private func send(_ type: MessageType, to peer: String, _ payloads: [[UInt8]]) -> Bool {
        guard let channel = linkChannels.withLockedValue({ $0[peer] }), channel.isActive else { return false }
        // The engine bounds what it sends; a payload over the frame limit is not sent (and
        // counted as dropped) rather than trapping the writer.
        guard payloads.allSatisfy({ $0.count <= Frame.payloadBytesMax }) else { return false }
        var buffer = channel.allocator.buffer(capacity: payloads.reduce(0) { $0 + $1.count + Frame.headerBytes })
        for payload in payloads {
            Frame(type: type, payload: payload).write(into: &buffer)
        }
        channel.writeAndFlush(buffer, promise: nil)
        return true
    }

    func record(_ peer: String, _ change: (inout PeerState) -> Void) {
        states.withLockedValue { states in
            if states[peer] != nil { change(&states[peer]!) }
        }
    }

    /// Why a `HELLO` is refused, or nil to welcome it — in which case the link is reserved for
    /// `owner` at once, so two `HELLO`s racing on different event loops cannot both pass.
    func refusal(of hello: Handshake, owner: ObjectIdentifier) -> String? {
        if hello.protocolVersion != Frame.protocolVersion {
            return "protocol version \(hello.protocolVersion) is not \(Frame.protocolVersion)"
        }
        if hello.cluster != configuration.cluster.name {
            return "cluster '\(hello.cluster)' is not this node's cluster '\(configuration.cluster.name)'"
        }
        guard let peer = states.withLockedValue({ $0[hello.node] }) else {
            return "node '\(hello.node)' is not a peer of '\(myName)' in the configuration"
        }
        if peer.datacenter != hello.datacenter {
            return "node '\(hello.node)' belongs to data center '\(peer.datacenter)', not '\(hello.datacenter)'"
        }
        _ = peer
        return states.withLockedValue { states -> String? in
            if states[hello.node]?.owner != nil { return "duplicate link: '\(hello.node)' is already connected" }
            states[hello.node]?.owner = owner
            return nil
        }
    }

    var hello: Handshake {
        Handshake(
            cluster: configuration.cluster.name, node: myName, datacenter: myDatacenter, role: myRole,
            versionVector: database?.replicator?.versionVector ?? VersionVector())
    }

    /// An established link to a node of another full data center, able to carry this node's
    /// stream: `start` and `stop` run on the link's event loop.
    struct StreamCarrier: Sendable {
        /// The connection's handler: a link that came back replaces its carrier, and the old
        /// connection's end must not remove the new one.
        var connection: ObjectIdentifier
        var start: @Sendable () -> Void
        var stop: @Sendable () -> Void
    }

    /// Per peer data center: the node this node's stream goes to now (nil: no link to any of its
    /// candidates is up), and the established links to that data center that could carry it.
    struct StreamChoice {
        var target: String?
        var carriers: [String: StreamCarrier] = [:]
    }

    /// The nodes of full data center `datacenter` that may carry this node's stream, the one it
    /// prefers first (docs/CLUSTER.md, "Cross-DC shipping with many nodes per DC"): its nodes
    /// that are not spares, starting at this node's position in its own data center, so several
    /// senders spread over the receivers; then its spares (one may never run, but one that
    /// joined may be all that is left).
    func streamCandidates(in datacenter: String) -> [String] {
        guard let dc = configuration.cluster.datacenters.first(where: { $0.name == datacenter }), !dc.witness,
              dc.name != myDatacenter else { return [] }
        let names = dc.nodes.filter { $0.peer != nil && !$0.spare }.map(\.name)
        let spares = dc.nodes.filter { $0.peer != nil && $0.spare }.map(\.name)
        guard !names.isEmpty else { return spares }
        let first = Int(me.node) % names.count
        return Array(names[first...] + names[..<first]) + spares
    }

    /// The node of `datacenter` this node streams to now, if any.
    func streamTarget(in datacenter: String) -> String? {
        streamChoices.withLockedValue { $0[datacenter]?.target }
    }

    /// A link to `peer` (a node of full data center `datacenter`) is up and can carry this node's
    /// stream. The stream goes to the first candidate whose link is up; a link to a candidate
    /// ahead of the current target takes the stream back (the preferred target returned).
    func streamLinkUp(peer: String, datacenter: String, carrier: StreamCarrier) {
        let candidates = streamCandidates(in: datacenter)
        guard candidates.contains(peer) else { return }
        let (start, stop) = streamChoices.withLockedValue { choices -> (StreamCarrier?, StreamCarrier?) in
            var choice = choices[datacenter] ?? StreamChoice()
            choice.carriers[peer] = carrier
            defer { choices[datacenter] = choice }
            // A new connection to the current target (the old one is ending): it carries on.
            if choice.target == peer { return (carrier, nil) }
            let current = choice.target.flatMap { candidates.firstIndex(of: $0) } ?? candidates.count
            guard candidates.firstIndex(of: peer)! < current else { return (nil, nil) }
            let previous = choice.target.flatMap { choice.carriers[$0] }
            choice.target = peer
            return (carrier, previous)
        }
        if let stop {
            logger.info("this node's stream moves to a preferred node", metadata: ["datacenter": "\(datacenter)", "to": "\(peer)"])
            stop.stop()
        }
        start?.start()
    }

    /// The link to `peer` went down: if it carried this node's stream, the next candidate whose
    /// link is up takes it (its stream starts after what that node's vector says it has).
    func streamLinkDown(peer: String, datacenter: String, connection: ObjectIdentifier) {
        let candidates = streamCandidates(in: datacenter)
        let next = streamChoices.withLockedValue { choices -> (String, StreamCarrier)? in
            guard var choice = choices[datacenter], choice.carriers[peer]?.connection == connection else { return nil }
            choice.carriers[peer] = nil
            defer { choices[datacenter] = choice }
            guard choice.target == peer else { return nil }
            choice.target = nil
            guard let name = candidates.first(where: { choice.carriers[$0] != nil }) else { return nil }
            choice.target = name
            return (name, choice.carriers[name]!)
        }
        if let (name, carrier) = next {
            logger.notice("this node's stream moves to another node of the data center", metadata: ["datacenter": "\(datacenter)", "from": "\(peer)", "to": "\(name)"])
            carrier.start()
        }
    }

    /// The `ReplicaID` of a peer node, by name.
    func replicaID(of node: String) -> ReplicaID? {
        peers.first { $0.node.name == node }?.id
    }

    /// INFO replication lines: this node's replication state, then one line per peer data
    /// center (the node this node streams to), in Redis's `key:k=v,...` form.
    public func infoFields() -> [(String, String)] {
        let states = states.withLockedValue { $0 }.values.sorted { ($0.datacenter, $0.node) < ($1.datacenter, $1.node) }
        var fields: [(String, String)] = [("node_role", myRole == .witness ? "witness" : "full"), ("peer_links", "\(states.count)")]
        let replicator = database?.replicator
        if let replicator {
            let retained = replicator.retainedDeltas
            fields.append(("replication_origin", "\(me)"))
            fields.append(("replication_last_sequence", "\(replicator.lastSequence)"))
            fields.append(("replication_version_vector", "\(replicator.versionVector)"))
            fields.append(("replication_log_deltas", "\(retained.count)"))
            fields.append(("replication_log_bytes", "\(retained.bytes)"))
            fields.append(("replication_conflicts_kept", "\(replicator.conflicts.count)"))
            if let dead = database?.deadStates() {
                fields.append(("replication_dead_states", "\(dead.count)"))
                fields.append(("replication_dead_state_bytes", "\(dead.bytes)"))
            }
        }
        let nowMs = SystemClock.nowUnixMs()
        var seen: Set<String> = [myDatacenter]
        let targets = Set(streamChoices.withLockedValue { $0.values.compactMap(\.target) })
        let targetsFirst = states.filter { targets.contains($0.node) } + states.filter { !targets.contains($0.node) }
        for state in targetsFirst where seen.insert(state.datacenter).inserted {
            var parts = ["node=\(state.node)", "connected=\(state.connected ? 1 : 0)", "witness=\(state.witness ? 1 : 0)"]
            if !state.witness, let report = replicator?.report(peer: state.datacenter) {
                let counters = report.counters
                let lag = report.oldestUnacknowledgedPhysicalMs.map { max(0, nowMs - Int64($0)) } ?? 0
                parts += [
                    "streaming=\(state.connected ? 1 : 0)", "lag_ms=\(lag)", "deltas_sent=\(counters.deltasSent)",
                    "deltas_applied=\(counters.deltasApplied)", "bytes_raw=\(counters.bytesRaw)", "bytes_wire=\(counters.bytesWire)",
                    "conflicts=\(counters.conflicts)", "acked=\(report.acknowledged)", "snapshots_sent=\(counters.snapshotsSent)",
                    "snapshots_applied=\(counters.snapshotsApplied)", "snapshot_needed=\(report.needsSnapshot ? 1 : 0)",
                    "batches_refused=\(counters.batchesRefused)",
                    "apply_lag_p50_us=\(counters.applyLag.quantileMicroseconds(0.5))",
                    "apply_lag_p99_us=\(counters.applyLag.quantileMicroseconds(0.99))",
                ]
            } else {
                parts += ["streaming=0", "lag_ms=-1", "deltas_sent=0", "deltas_applied=0", "bytes_raw=0", "bytes_wire=0", "conflicts=0"]
            }
            parts += ["rtt_us=\(state.lastRoundTripUs)", "refusals=\(state.refusals)"]
            fields.append(("peer_\(state.datacenter)", parts.joined(separator: ",")))
        }
        return fields
    }
}
