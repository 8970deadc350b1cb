import Logging
import MeridianCore
import MeridianWire
import NIOCore

/// One peer connection: frames in and out, the handshake, `PING`/`PONG`, and — between two
/// full nodes — both directions of delta streaming (docs/REPLICATION.md, "Messages").
///
/// Sending: after the handshake the stream starts after what the peer's vector says it has
/// (`sentThrough`); new local deltas wake it, and it sends after `batch_delay` as many batches
/// as the socket takes (it stops while the channel is not writable and resumes when it is).
/// A peer the outbound log no longer covers gets a snapshot, shard by shard, then the stream
/// continues after the snapshot's sequence.
///
/// Receiving: frames are handled strictly in order. A frame whose keys may be on disk only is
/// held (reading pauses) until they are loaded, then merged; every batch and every snapshot
/// end is acknowledged with this node's whole vector. A node of a data center of several nodes
/// does not merge what arrives into its own keyspace: it replicates each record to its
/// partition's owners, holding later frames until they acknowledged (docs/CLUSTER.md,
/// "Cross-DC shipping with many nodes per DC"). Any node may receive; each node streams only to
/// its target in each peer data center (`PeerLinks.streamLinkUp`).
final class PeerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let links: PeerLinks
    /// The peer this side dialed (nil on the listener side until `HELLO` names it).
    private var peer: String?
    private var peerDatacenter = ""
    private var peerID: ReplicaID?
    private let dialing: Bool
    private var decoder = FrameDecoder()
    private var buffered = ByteBuffer()
    private var established = false
    private var pingTask: RepeatedTask?

    // Streaming (both ends full nodes).
    private var replicator: Replicator?
    /// What the peer said it has — in its handshake, then in its acknowledgements — where this
    /// node's stream starts when this link comes to carry it.
    private var handshakeVector = VersionVector()
    /// This link offered to carry this node's stream (`PeerLinks.streamLinkUp`).
    private var carriesStreams = false
    private var stream: Replicator.Stream?
    /// The last sequence of this node's stream sent (or known to be at the peer) on this link.
    private var sentThrough: UInt64 = 0
    /// A snapshot being sent: the sequence it covers, and where it is (shard, slot position in
    /// it; nil slot: the shard's dead states are next).
    private var outgoingSnapshot: (through: UInt64, shard: Int, slot: Int?)?
    /// Keys per snapshot step (one chunk each, well under the 1 MiB raw bound for small values;
    /// larger values cut the chunk earlier).
    static let snapshotKeysPerStep = 1024
    /// The snapshot being received: the sequence it covers.
    private var incomingSnapshot: UInt64?
    /// Work received but not done yet, in order: frames, and acknowledgements of batches that
    /// waited for the disk (an ACK must follow its batch's merge).
    private enum Pending {
        case frame(Frame)
        case acknowledge
    }
    private var pending: [Pending] = []
    /// Later frames wait: for keys the disk loads, or for the owners of what arrived.
    private var waiting = false
    private var closed = false
    /// A retry of the pump is scheduled (a snapshot waiting for warm-up to end).
    private var retryScheduled = false
    /// When the last bytes arrived (liveness).
    private var lastReceivedNs = SystemClock.monotonicNs()

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
        closed = true
        pingTask?.cancel()
        if let stream, let replicator { replicator.unregister(stream) }
        stream = nil
        if let peer {
            links.setLinkChannel(nil, for: peer, ifCurrent: context.channel)
            // Only the connection that holds the link releases it (a refused duplicate does not).
            let me = ObjectIdentifier(self)
            var heldTheLink = false
            links.record(peer) {
                if $0.owner == me {
                    $0.owner = nil
                    $0.connected = false
                    heldTheLink = true
                }
            }
            if established { links.logger.notice("peer link down", metadata: ["peer": "\(peer)"]) }
            if heldTheLink && established { links.cluster?.linkLost(toPeer: peer) }
            if carriesStreams { links.streamLinkDown(peer: peer, datacenter: peerDatacenter, connection: ObjectIdentifier(self)) }
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && stream != nil { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        lastReceivedNs = SystemClock.monotonicNs()
        buffered.writeBuffer(&incoming)
        do {
            while let frame = try decoder.decode(&buffered) { pending.append(.frame(frame)) }
            buffered.discardReadBytes()
        } catch {
            fail(error, context: context)
            return
        }
        handlePending(context: context)
    }

    /// Handles queued frames in order until one must wait (for the disk, or for owners).
    private func handlePending(context: ChannelHandlerContext) {
        while !waiting && !closed && !pending.isEmpty {
            let next = pending.removeFirst()
            do {
                switch next {
                case .frame(let frame): try handle(frame, context: context)
                case .acknowledge: acknowledge(context: context)
                }
            } catch {
                fail(error, context: context)
                return
            }
        }
        // Stop reading while frames wait: TCP then holds the peer back.
        let reading = !waiting
        context.channel.setOption(ChannelOptions.autoRead, value: reading).whenComplete { _ in }
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        links.logger.warning("peer link closed: \(error)", metadata: ["peer": "\(peer ?? "?")", "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
        if let peer { links.record(peer) { $0.lastProblem = "\(error)" } }
        closed = true
        context.close(promise: nil)
    }

    private func handle(_ frame: Frame, context: ChannelHandlerContext) throws {
        switch frame.type {
        case .hello where !dialing && !established:
            let hello = try Handshake(decoding: frame.payload)
            if let reason = links.refusal(of: hello, owner: ObjectIdentifier(self)) {
                links.logger.warning("refused a peer", metadata: ["peer": "\(hello.node)", "reason": "\(reason)"])
                links.record(hello.node) { $0.refusals += 1 }
                context.writeAndFlush(wrapOutboundOut(encode(Frame(type: .refuse, payload: Array(reason.utf8)), context: context)))
                    .whenComplete { _ in context.close(promise: nil) }
                return
            }
            peer = hello.node
            send(Frame(type: .welcome, payload: links.hello.encoded()), context: context)
            established(context: context, peerVector: hello.versionVector, peerRole: hello.role)
        case .welcome where dialing && !established:
            let welcome = try Handshake(decoding: frame.payload)
            guard welcome.node == peer, welcome.cluster == links.configuration.cluster.name else {
                throw WireError.malformed("welcomed by '\(welcome.node)' of cluster '\(welcome.cluster)'")
            }
            established(context: context, peerVector: welcome.versionVector, peerRole: welcome.role)
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
            closed = true
            context.close(promise: nil)
        case .strong where established:
            guard let strong = links.strong, let peer else { break }
            try strong.receive(frame.payload, fromPeer: peer)
        case .cluster where established:
            guard let cluster = links.cluster, let peer else { break }
            try cluster.receive(frame.payload, fromPeer: peer)
        case .ping where established:
            send(Frame(type: .pong, payload: frame.payload), context: context)
        case .pong where established:
            var reader = frame.payload
            guard reader.count == 8 else { throw WireError.malformed("pong of \(reader.count) bytes") }
            var sentNs: UInt64 = 0
            for index in 0..<8 { sentNs |= UInt64(reader.removeFirst()) << UInt64(8 * index) }
            let rtt = Int64((SystemClock.monotonicNs() &- sentNs) / 1000)
            if let peer { links.record(peer) { $0.lastRoundTripUs = rtt } }
        case .batch where established && replicator != nil:
            try receiveBatch(frame.payload, context: context)
        case .snapshotBegin where established && replicator != nil:
            let marker = try SnapshotMarker(decoding: frame.payload)
            guard marker.origin == peerID else { throw WireError.malformed("a snapshot of \(marker.origin) from \(peerID.map { "\($0)" } ?? "?")") }
            incomingSnapshot = marker.through
        case .snapshotChunk where established && replicator != nil && incomingSnapshot != nil:
            let chunk = try SnapshotChunk(decoding: frame.payload)
            if let cluster = links.cluster {
                try checkClock(chunk.states.map(\.state))
                applyThroughOwners(chunk.states.map { ($0.key, $0.state) }, cluster: cluster, context: context) {}
                return
            }
            try receive(states: chunk.states.map(\.state), keys: chunk.states.map(\.key), context: context) { database, now in
                _ = database.applyRemote(snapshot: chunk.states, nowUnixMs: now)
            }
        case .snapshotEnd where established && replicator != nil:
            let marker = try SnapshotMarker(decoding: frame.payload)
            guard marker.origin == peerID, marker.through == incomingSnapshot else {
                throw WireError.malformed("a snapshot end that matches no snapshot begun")
            }
            incomingSnapshot = nil
            replicator!.recordSnapshot(origin: marker.origin, through: marker.through)
            replicator!.count(peer: peerDatacenter) { $0.snapshotsApplied += 1 }
            links.logger.info("applied a snapshot", metadata: ["peer": "\(peer ?? "?")", "through": "\(marker.through)"])
            acknowledge(context: context)
        case .ack where established && replicator != nil:
            let ack = try Acknowledgement(decoding: frame.payload)
            // Only this node's stream target acknowledges it (a link that carries no stream of
            // this node's has nothing to acknowledge).
            if stream != nil {
                replicator!.acknowledge(peer: peerDatacenter, node: peerID!, vector: ack.versionVector)
                // Where a later stream on this link starts (the peer has this much at least).
                handshakeVector = ack.versionVector
            }
        default:
            throw WireError.malformed("unexpected \(frame.type) \(established ? "after" : "before") the handshake")
        }
    }

    // MARK: Receiving

    private func receiveBatch(_ payload: [UInt8], context: ChannelHandlerContext) throws {
        let batch = try DeltaBatch(decoding: payload)
        guard batch.origin == peerID else {
            throw WireError.malformed("a batch of origin \(batch.origin) on the link to \(peerID.map { "\($0)" } ?? "?")")
        }
        let peerDatacenter = self.peerDatacenter
        if let cluster = links.cluster, let replicator {
            try checkClock(batch.deltas.map(\.state))
            let fresh = batch.deltas.filter { !replicator.isApplied($0.dot) }
            let skipped = batch.deltas.count - fresh.count
            applyThroughOwners(fresh.map { ($0.key, $0.state) }, cluster: cluster, context: context) { [self] in
                replicator.recordApplied(fresh.map(\.dot))
                let now = SystemClock.nowUnixMs()
                replicator.count(peer: peerDatacenter) { counters in
                    counters.deltasApplied += fresh.count
                    for delta in fresh {
                        let writtenMs = Int64(Replicator.physicalMs(of: delta.state))
                        counters.applyLag.record(microseconds: UInt64(max(0, now - writtenMs)) * 1000)
                    }
                }
                if skipped > 0 { links.logger.debug("skipped deltas already applied", metadata: ["count": "\(skipped)"]) }
                acknowledge(context: context)
            }
            return
        }
        try receive(states: batch.deltas.map(\.state), keys: batch.deltas.map(\.key), context: context) { [replicator] database, now in
            guard let replicator else { return }
            let result = database.applyRemote(deltas: batch.deltas, replicator: replicator, nowUnixMs: now)
            for conflict in result.conflicts {
                replicator.recordConflict(conflict)
                database.recordAuditConflict(conflict)
            }
            replicator.count(peer: peerDatacenter) { counters in
                counters.deltasApplied += result.applied
                counters.conflicts += result.conflicts.count
                for lag in result.lagMicroseconds { counters.applyLag.record(microseconds: lag) }
            }
        }
        acknowledgeWhenApplied(context: context)
    }

    /// Refuses states stamped further ahead than `max_clock_offset` (the link closes) and moves
    /// this node's clock past the rest.
    private func checkClock(_ states: [Delta.State]) throws {
        guard let database = links.database, let replicator else { return }
        do {
            try database.observeRemoteStamps(states, nowUnixMs: SystemClock.nowUnixMs(), maxClockOffsetMs: replicator.maxClockOffsetMs)
        } catch {
            replicator.count(peer: peerDatacenter) { $0.batchesRefused += 1 }
            throw error
        }
    }

    /// Replicates what a peer data center sent to the owners of each key's partition in this
    /// data center, each record waiting for its namespace's `write_acks`, and holds later frames
    /// until every record was acknowledged; then runs `then`. Records the owners did not
    /// acknowledge within the request timeout are sent again a second later, until they are (or
    /// the link closes: the peer then sends again after what this node's vector says it has), so
    /// nothing unacknowledged is counted as applied.
    private func applyThroughOwners(
        _ states: [(key: [UInt8], state: Delta.State)], cluster: ClusterEngine, context: ChannelHandlerContext,
        then: @escaping () -> Void
    ) {
        guard let database = links.database else { return }
        waiting = true
        let records = database.recordsForOwners(states)
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context, then), eventLoop: loop)
        let peer = self.peer ?? "?"
        let logger = links.logger
        @Sendable func attempt(_ number: Int) {
            cluster.replicate(records) { acknowledged in
                loop.execute {
                    let (handler, context, then) = bound.value
                    guard !handler.closed else { return }
                    guard acknowledged else {
                        // The records stay unacknowledged (the stream from this peer waits, as
                        // a local write would answer TIMEOUT); sending them again is harmless
                        // (merges are idempotent). Closing the link instead would move the
                        // peer's stream to another node, which would meet the same owners.
                        if number == 1 || number % 30 == 0 {
                            logger.warning(
                                "the owners in this data center did not acknowledge a peer data center's records in time; sending them again",
                                metadata: ["peer": "\(peer)", "records": "\(records.count)", "attempt": "\(number)"])
                        }
                        loop.scheduleTask(in: .seconds(1)) { attempt(number + 1) }
                        return
                    }
                    handler.waiting = false
                    then()
                    handler.handlePending(context: context)
                }
            }
        }
        attempt(1)
    }

    /// Checks the clock bound, loads keys that may be on disk only (holding later frames until
    /// they are in memory), then runs `apply`.
    private func receive(
        states: [Delta.State], keys: [[UInt8]], context: ChannelHandlerContext, apply: @escaping (Database, Int64) -> Void
    ) throws {
        guard let database = links.database else { return }
        try checkClock(states)
        let now = SystemClock.nowUnixMs()
        let missing = database.keysToLoadBeforeMerging(keys)
        guard !missing.isEmpty, let reader = links.diskReader else {
            apply(database, now)
            return
        }
        waiting = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        reader.load(missing, on: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            handler.waiting = false
            guard !handler.closed else { return }
            if case .failure(let error) = result {
                handler.fail(error, context: context)
                return
            }
            apply(database, SystemClock.nowUnixMs())
            handler.handlePending(context: context)
        }
    }

    /// Acknowledges a batch: at once, or after the disk loads it waits for (the ack is queued
    /// as a frame of its own so it follows the apply).
    private func acknowledgeWhenApplied(context: ChannelHandlerContext) {
        if waiting {
            pending.insert(.acknowledge, at: 0)
            return
        }
        acknowledge(context: context)
    }

    /// Sends this node's vector as it is now, once what it covers is on disk (docs/REPLICATION.md,
    /// invariant 3): a peer collects tombstones by acknowledgements, so an acknowledged delete
    /// must survive a crash of this node.
    private func acknowledge(context: ChannelHandlerContext) {
        guard let replicator else { return }
        let ack = Acknowledgement(versionVector: replicator.versionVector, clock: HLCTimestamp(rawValue: links.database?.lastTimestampValue ?? 0))
        let channel = context.channel
        let send: @Sendable () -> Void = {
            var buffer = channel.allocator.buffer(capacity: Frame.headerBytes + 64)
            Frame(type: .ack, payload: ack.encoded()).write(into: &buffer)
            channel.writeAndFlush(buffer, promise: nil)
        }
        if let storage = links.database?.storage {
            let loop = context.eventLoop
            if storage.whenDurable(storage.enqueuedSequence.load(ordering: .acquiring), { loop.execute(send) }) { return }
        }
        send()
    }

    // MARK: Sending

    private func established(context: ChannelHandlerContext, peerVector: VersionVector, peerRole: PeerRole) {
        established = true
        guard let peer else { return }
        let state = links.states.withLockedValue { $0[peer] }
        peerDatacenter = state?.datacenter ?? ""
        peerID = links.replicaID(of: peer)
        let me = ObjectIdentifier(self)
        links.record(peer) {
            $0.owner = $0.owner ?? me
            $0.connected = true
            $0.connectedSinceUnixMs = SystemClock.nowUnixMs()
            $0.lastProblem = ""
            $0.failures = 0
        }
        if links.states.withLockedValue({ $0[peer]?.owner }) == me {
            links.setLinkChannel(context.channel, for: peer)
        }
        links.logger.info("peer link up", metadata: ["peer": "\(peer)", "side": "\(dialing ? "dialer" : "listener")"])
        let channel = context.channel
        let loop = context.eventLoop
        let liveness = NIOLoopBound(self, eventLoop: loop)
        let logger = links.logger
        pingTask = loop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(PeerLinks.pingIntervalMs)) { _ in
            let handler = liveness.value
            // While frames wait (for the disk, or for owners to acknowledge what arrived) this
            // side stopped reading: the peer's pings wait in the socket, so its silence is ours.
            if handler.waiting { handler.lastReceivedNs = SystemClock.monotonicNs() }
            let silentMs = Int64((SystemClock.monotonicNs() &- handler.lastReceivedNs) / 1_000_000)
            if silentMs > PeerLinks.silenceLimitMs {
                logger.warning("peer link silent, closing it", metadata: ["peer": "\(peer)", "silent_ms": "\(silentMs)"])
                channel.close(promise: nil)
                return
            }
            var payload: [UInt8] = []
            let now = SystemClock.monotonicNs()
            for index in 0..<8 { payload.append(UInt8(truncatingIfNeeded: now >> UInt64(8 * index))) }
            var buffer = channel.allocator.buffer(capacity: Frame.headerBytes + 8)
            Frame(type: .ping, payload: payload).write(into: &buffer)
            channel.writeAndFlush(buffer, promise: nil)
        }
        // Deltas stream between data centers; a node of this one gets `cluster` frames instead.
        guard let replicator = links.database?.replicator, peerRole == .full, state?.witness == false,
              state?.datacenter != links.myDatacenter, peerID != nil else { return }
        self.replicator = replicator
        // Every such link receives; this node's own stream goes to one node of each data center
        // at a time (`PeerLinks.streamLinkUp` says which, and moves it when that link goes down).
        handshakeVector = peerVector
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let carrier = PeerLinks.StreamCarrier(
            connection: ObjectIdentifier(self),
            start: {
                loop.execute {
                    let (handler, context) = bound.value
                    handler.startStreaming(context: context)
                }
            },
            stop: {
                loop.execute { bound.value.0.stopStreaming() }
            })
        carriesStreams = true
        links.streamLinkUp(peer: peer, datacenter: peerDatacenter, carrier: carrier)
    }

    /// Starts this node's stream on this link, after what the peer's vector (from its handshake)
    /// says it has: the link became its data center's stream target.
    private func startStreaming(context: ChannelHandlerContext) {
        // Starts and stops are posted to the links' loops after the choice was made: one that
        // arrives after a later choice moved the stream again is stale.
        guard let replicator, let peer, !closed, stream == nil, links.streamTarget(in: peerDatacenter) == peer else { return }
        let link = replicator.linkEstablished(peer: peerDatacenter, node: peerID!, vector: handshakeVector)
        if link.jumped {
            links.logger.error(
                "a peer holds dots of this node above the last one issued (did the clock go back across a restart?); this node's stream jumps past them and the peers get a snapshot",
                metadata: ["peer": "\(peer)", "peer_has": "\(handshakeVector[replicator.me])", "now_at": "\(link.sequence)"])
        }
        sentThrough = handshakeVector[replicator.me]
        outgoingSnapshot = nil
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let delay = TimeAmount.milliseconds(links.configuration.replication.batchDelayMs)
        let stream = Replicator.Stream {
            loop.scheduleTask(in: delay) {
                let (handler, context) = bound.value
                handler.pump(context: context)
            }
        }
        self.stream = stream
        replicator.register(stream)
        pump(context: context)
    }

    /// Stops this node's stream on this link (another node of the peer's data center took it).
    /// A snapshot cut short is begun again wherever the stream goes next.
    private func stopStreaming() {
        guard let replicator, let stream, links.streamTarget(in: peerDatacenter) != peer else { return }
        replicator.unregister(stream)
        self.stream = nil
        outgoingSnapshot = nil
    }

    /// Sends what the peer lacks while the socket takes it.
    private func pump(context: ChannelHandlerContext) {
        guard let replicator, let stream, !closed else { return }
        stream.scheduled.store(false, ordering: .sequentiallyConsistent)
        let config = links.configuration.replication
        var wrote = false
        defer { if wrote { context.flush() } }
        while context.channel.isWritable {
            if let snapshot = outgoingSnapshot {
                if links.warmUp?.loading.load(ordering: .relaxed) == true || (links.cluster?.currentStatistics.partitionsRebuilding ?? 0) > 0 {
                    // A snapshot taken before warm-up ends would miss keys still on disk, and
                    // one taken while the data center's other owners rebuild this node's
                    // partitions would miss what this node executed before it lost its data
                    // (which only it ships): look again shortly (one retry at a time, however
                    // often writes wake the pump).
                    if !retryScheduled {
                        retryScheduled = true
                        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                        context.eventLoop.scheduleTask(in: .milliseconds(50)) {
                            let (handler, context) = bound.value
                            handler.retryScheduled = false
                            handler.pump(context: context)
                        }
                    }
                    return
                }
                sendSnapshotStep(snapshot, context: context)
                wrote = true
                continue
            }
            switch replicator.nextSend(
                to: peerDatacenter, after: sentThrough, maxBytes: min(config.batchBytesMax, 1 << 20), snapshotOnlyTheGap: links.cluster != nil
            ) {
            case .upToDate:
                return
            case .deltas(let deltas):
                let batch = DeltaBatch(origin: replicator.me, deltas: deltas)
                let (payload, rawBytes) = batch.encoded(level: Int32(config.zstdLevel))
                write(Frame(type: .batch, payload: payload), context: context)
                wrote = true
                sentThrough = batch.lastSequence
                replicator.count(peer: peerDatacenter) {
                    $0.deltasSent += deltas.count
                    $0.bytesRaw += rawBytes
                    $0.bytesWire += payload.count + Frame.headerBytes
                }
            case .snapshot(let through):
                links.logger.info("sending a snapshot", metadata: ["peer": "\(peer ?? "?")", "through": "\(through)", "peer_had": "\(sentThrough)"])
                write(Frame(type: .snapshotBegin, payload: SnapshotMarker(origin: replicator.me, through: through).encoded()), context: context)
                wrote = true
                outgoingSnapshot = (through, 0, 0)
                replicator.count(peer: peerDatacenter) { $0.snapshotsSent += 1 }
            }
        }
    }

    /// Sends one step of the snapshot in progress — a bounded slice of one shard's keys (its
    /// lock held only while they are copied), or that shard's dead states — as chunks under the
    /// raw batch bound, or the snapshot's end once every shard went. The pump calls it again
    /// while the channel is writable, so a large keyspace never stalls the loop or piles up in
    /// the channel.
    private func sendSnapshotStep(_ snapshot: (through: UInt64, shard: Int, slot: Int?), context: ChannelHandlerContext) {
        guard let database = links.database, let replicator else { return }
        let level = Int32(links.configuration.replication.zstdLevel)
        guard snapshot.shard < Database.shardCount else {
            write(Frame(type: .snapshotEnd, payload: SnapshotMarker(origin: replicator.me, through: snapshot.through).encoded()), context: context)
            outgoingSnapshot = nil
            sentThrough = snapshot.through
            return
        }
        let states: [SnapshotState]
        if let slot = snapshot.slot {
            let step = database.snapshotStates(shard: snapshot.shard, fromSlot: slot, limit: Self.snapshotKeysPerStep)
            states = step.states
            // After the last slice of live keys, the shard's dead states.
            outgoingSnapshot = (snapshot.through, snapshot.shard, step.next)
        } else {
            states = database.snapshotDeadStates(shard: snapshot.shard)
            outgoingSnapshot = (snapshot.through, snapshot.shard + 1, 0)
        }
        var chunk: [SnapshotState] = []
        var chunkBytes = 0
        func flushChunk() {
            guard !chunk.isEmpty else { return }
            let (payload, rawBytes) = SnapshotChunk(states: chunk).encoded(level: level)
            write(Frame(type: .snapshotChunk, payload: payload), context: context)
            replicator.count(peer: peerDatacenter) {
                $0.bytesRaw += rawBytes
                $0.bytesWire += payload.count + Frame.headerBytes
            }
            chunk = []
            chunkBytes = 0
        }
        for state in states {
            let bytes = SnapshotChunk.rawBytes(of: state)
            if !chunk.isEmpty && chunkBytes + bytes > (1 << 20) { flushChunk() }
            chunk.append(state)
            chunkBytes += bytes
        }
        flushChunk()
    }

    private func encode(_ frame: Frame, context: ChannelHandlerContext) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: Frame.headerBytes + frame.payload.count)
        frame.write(into: &buffer)
        return buffer
    }

    private func write(_ frame: Frame, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(encode(frame, context: context)), promise: nil)
    }

    private func send(_ frame: Frame, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(encode(frame, context: context)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        closed = true
        context.close(promise: nil)
    }
}
