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
/// What it does not do yet: stream deltas. A link that is up carries no data; `INFO
/// replication` says so (`streaming=0`).
public final class PeerLinks: Sendable {
    /// The state of one peer, for INFO.
    public struct PeerState: Sendable {
        public var node: String
        public var datacenter: String
        public var witness: Bool
        public var connected = false
        public var connectedSinceUnixMs: Int64 = 0
        public var lastRoundTripUs: Int64 = -1
        public var refusals = 0
        public var lastProblem = ""
        /// Failed attempts (connect errors and refusals) since
        /// the last link that came up: the reconnect backoff doubles with each.
        public var failures = 0
    }

    static let pingIntervalMs: Int64 = 1000

    let configuration: MeridianConfiguration
    let me: ReplicaID
    let myName: String
    let myDatacenter: String
    let myRole: PeerRole
    let logger: Logger
    let group: EventLoopGroup
    /// Peer name → state.
    let states: NIOLockedValueBox<[String: PeerState]>
    private let listener: NIOLockedValueBox<Channel?> = NIOLockedValueBox(nil)
    private let stopped = NIOLockedValueBox(false)

    public init(configuration: MeridianConfiguration, datacenter: Int, node: Int, group: EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.me = ReplicaID(datacenter: UInt16(datacenter), node: UInt16(node))
        let dc = configuration.cluster.datacenters[datacenter]
        self.myName = dc.nodes[node].name
        self.myDatacenter = dc.name
        self.myRole = dc.witness ? .witness : .full
        self.group = group
        self.logger = logger
        var states: [String: PeerState] = [:]
        for (dcIndex, other) in configuration.cluster.datacenters.enumerated() where dcIndex != datacenter {
            for peer in other.nodes where peer.peer != nil {
                states[peer.name] = PeerState(node: peer.name, datacenter: other.name, witness: other.witness)
            }
        }
        self.states = NIOLockedValueBox(states)
    }

    /// The peers this node talks to: other data centers' nodes with a peer address. Two
    /// witnesses have nothing to say to each other.
    var peers: [(id: ReplicaID, node: NodeConfig, witness: Bool)] {
        var result: [(ReplicaID, NodeConfig, Bool)] = []
        for (dcIndex, dc) in configuration.cluster.datacenters.enumerated() where dcIndex != Int(me.datacenter) {
            if dc.witness && myRole == .witness { continue }
            for (nodeIndex, node) in dc.nodes.enumerated() where node.peer != nil {
                result.append((ReplicaID(datacenter: UInt16(dcIndex), node: UInt16(nodeIndex)), node, dc.witness))
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
    }

    /// Closes the listener and stops reconnecting.
    public func stop() {
        stopped.withLockedValue { $0 = true }
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

    func record(_ peer: String, _ change: (inout PeerState) -> Void) {
        states.withLockedValue { states in
            if states[peer] != nil { change(&states[peer]!) }
        }
    }

    /// Why a `HELLO` is refused, or nil to welcome it.
    func refusal(of hello: Handshake) -> String? {
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
        if peer.connected { return "duplicate link: '\(hello.node)' is already connected" }
        return nil
    }

    var hello: Handshake {
        Handshake(cluster: configuration.cluster.name, node: myName, datacenter: myDatacenter, role: myRole, versionVector: VersionVector())
    }

    /// INFO replication lines: one per peer data center (the first of its nodes).
    public func infoFields() -> [(String, String)] {
        let states = states.withLockedValue { $0 }.values.sorted { ($0.datacenter, $0.node) < ($1.datacenter, $1.node) }
        var fields: [(String, String)] = [("node_role", myRole == .witness ? "witness" : "full"), ("peer_links", "\(states.count)")]
        var seen = Set<String>()
        for state in states where seen.insert(state.datacenter).inserted {
            fields.append(("peer_\(state.datacenter)", [
                "node=\(state.node)", "connected=\(state.connected ? 1 : 0)", "witness=\(state.witness ? 1 : 0)",
                "streaming=0", "lag_ms=-1", "deltas_sent=0", "deltas_applied=0", "bytes_raw=0", "bytes_wire=0",
                "conflicts=0", "rtt_us=\(state.lastRoundTripUs)", "refusals=\(state.refusals)",
            ].joined(separator: ",")))
        }
        return fields
    }
}

/// One peer connection: frames in and out, the handshake, and PING/PONG. Dialer and listener
/// sides differ only in who says `HELLO`.
final class PeerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let links: PeerLinks
    /// The peer this side dialed (nil on the listener side until `HELLO` names it).
    private var peer: String?
    private let dialing: Bool
    private var decoder = FrameDecoder()
    private var buffered = ByteBuffer()
    private var established = false
    private var pingTask: RepeatedTask?

    init(links: PeerLinks, dialing: String?) {
        self.links = links
        self.peer = dialing
        self.dialing = dialing != nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if dialing { send(Frame(type: .hello, payload: links.hello.encoded()), context: context) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pingTask?.cancel()
        if established, let peer {
            links.record(peer) { $0.connected = false }
            links.logger.notice("peer link down", metadata: ["peer": "\(peer)"])
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffered.writeBuffer(&incoming)
        do {
            while let frame = try decoder.decode(&buffered) { try handle(frame, context: context) }
            buffered.discardReadBytes()
        } catch {
            links.logger.warning("peer link closed: \(error)", metadata: ["peer": "\(peer ?? "?")", "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
            if let peer { links.record(peer) { $0.lastProblem = "\(error)" } }
            context.close(promise: nil)
        }
    }

    private func handle(_ frame: Frame, context: ChannelHandlerContext) throws {
        switch frame.type {
        case .hello where !dialing && !established:
            let hello = try Handshake(decoding: frame.payload)
            if let reason = links.refusal(of: hello) {
                links.logger.warning("refused a peer", metadata: ["peer": "\(hello.node)", "reason": "\(reason)"])
                links.record(hello.node) { $0.refusals += 1 }
                context.writeAndFlush(wrapOutboundOut(encode(Frame(type: .refuse, payload: Array(reason.utf8)), context: context)))
                    .whenComplete { _ in context.close(promise: nil) }
                return
            }
            peer = hello.node
            send(Frame(type: .welcome, payload: links.hello.encoded()), context: context)
            established(context: context)
        case .welcome where dialing && !established:
            let welcome = try Handshake(decoding: frame.payload)
            guard welcome.node == peer, welcome.cluster == links.configuration.cluster.name else {
                throw WireError.malformed("welcomed by '\(welcome.node)' of cluster '\(welcome.cluster)'")
            }
            established(context: context)
        case .refuse:
            let reason = String(decoding: frame.payload, as: UTF8.self)
            links.logger.warning("peer refused this node", metadata: ["peer": "\(peer ?? "?")", "reason": "\(reason)"])
            if let peer {
                links.record(peer) {
                    $0.lastProblem = "refused: \(reason)"
                    $0.refusals += 1
                    $0.failures += 1
                }
            }
            context.close(promise: nil)
        case .ping where established:
            send(Frame(type: .pong, payload: frame.payload), context: context)
        case .pong where established:
            var reader = frame.payload
            guard reader.count == 8 else { throw WireError.malformed("pong of \(reader.count) bytes") }
            var sentNs: UInt64 = 0
            for index in 0..<8 { sentNs |= UInt64(reader.removeFirst()) << UInt64(8 * index) }
            let rtt = Int64((SystemClock.monotonicNs() &- sentNs) / 1000)
            if let peer { links.record(peer) { $0.lastRoundTripUs = rtt } }
        default:
            throw WireError.malformed("unexpected \(frame.type) \(established ? "after" : "before") the handshake")
        }
    }

    private func established(context: ChannelHandlerContext) {
        established = true
        guard let peer else { return }
        links.record(peer) {
            $0.connected = true
            $0.connectedSinceUnixMs = SystemClock.nowUnixMs()
            $0.lastProblem = ""
            $0.failures = 0
        }
        links.logger.info("peer link up", metadata: ["peer": "\(peer)", "side": "\(dialing ? "dialer" : "listener")"])
        let channel = context.channel
        let loop = context.eventLoop
        pingTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(PeerLinks.pingIntervalMs)) { _ in
            var payload: [UInt8] = []
            let now = SystemClock.monotonicNs()
            for index in 0..<8 { payload.append(UInt8(truncatingIfNeeded: now >> UInt64(8 * index))) }
            var buffer = channel.allocator.buffer(capacity: Frame.headerBytes + 8)
            Frame(type: .ping, payload: payload).write(into: &buffer)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    private func encode(_ frame: Frame, context: ChannelHandlerContext) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: Frame.headerBytes + frame.payload.count)
        frame.write(into: &buffer)
        return buffer
    }

    private func send(_ frame: Frame, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(encode(frame, context: context)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
