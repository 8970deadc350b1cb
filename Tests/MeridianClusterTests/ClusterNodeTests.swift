// Proves the node's mechanisms one at a time, with a hand-driven network where the simulator
// would only hit them by chance (docs/CLUSTER.md): a write waits for `write_acks` and leaves a
// hint for the replica it could not reach, which is replayed when it answers again; `all` fails
// clearly; a read repairs the stale replica it saw; anti-entropy finds one differing key among
// hundreds by exchanging only the differing leaves, and rebuilds a replica that lost its disk;
// a replica that knows it lost its data answers no read until every other owner streamed to it;
// during a move a write needs a quorum of the new replicas too, and the new replica proposes
// the switch only after a quorum of the old replicas streamed to it; hostile fields never trap.
import MeridianCluster
import MeridianCore
import MeridianSimulation
import Testing

@Suite struct ClusterNodeTests {
    static func isWritten(_ result: ClusterClientResult?) -> Bool {
        if case .written = result { return true } else { return false }
    }

    @Test func aWriteWaitsForAQuorumAndHintsTheReplicaItCouldNotReach() {
        var dc = InProcessDataCenter(members: 3)
        let key = Array("session:1".utf8)
        dc.unreachable = [2]
        let client = dc.write(at: 0, key, "v1")
        #expect(Self.isWritten(dc.replies[client]))
        #expect(dc.value(at: 1, key) == "v1" && dc.value(at: 2, key) == nil)
        dc.advance(ms: 600)
        #expect(dc.nodes[0].durable.hints.hints.map(\.target) == [2])
        // Node 2 answers again: the hint is replayed and dropped once acknowledged.
        dc.unreachable = []
        dc.advance(ms: 6_000)
        #expect(dc.value(at: 2, key) == "v1")
        #expect(dc.nodes[0].durable.hints.isEmpty && dc.nodes[0].stats.hintsReplayed == 1)
    }

    @Test func writeAcksAllTimesOutWhenAReplicaIsUnreachableButTheWriteSpreads() {
        var dc = InProcessDataCenter(members: 3)
        let key = Array("k".utf8)
        dc.unreachable = [1]
        let client = dc.write(at: 0, key, "v", acks: .all)
        #expect(dc.replies[client] == nil)
        dc.advance(ms: 2_100)
        #expect(dc.replies[client] == .timedOut)
        // Maybe applied: it is on the replicas that answered and reaches the other by its hint.
        #expect(dc.value(at: 2, key) == "v")
        dc.unreachable = []
        dc.advance(ms: 6_000)
        #expect(dc.value(at: 1, key) == "v")
    }

    @Test func aReadAnswersTheNewestStateAndRepairsTheStaleReplica() {
        var dc = InProcessDataCenter(members: 3)
        let key = Array("k".utf8)
        _ = dc.write(at: 0, key, "old", acks: .all)
        dc.unreachable = [2]
        _ = dc.write(at: 0, key, "new")
        dc.queue.removeAll()
        dc.unreachable = []
        #expect(dc.value(at: 2, key) == "old")
        // Node 2 coordinates: its own stale copy and node 1's new one make the quorum.
        let client = dc.read(at: 2, key, acks: .all)
        guard case .read(let state)? = dc.replies[client] else {
            Issue.record("no read reply: \(String(describing: dc.replies[client]))")
            return
        }
        #expect(state?.value == Array("new".utf8))
        #expect(dc.value(at: 2, key) == "new" && dc.nodes[2].stats.readRepairs >= 1)
    }

    @Test func antiEntropyFindsOneDifferingKeyAmongHundredsByItsLeaf() {
        var settings = ClusterSettings()
        settings.antiEntropyIntervalMs = 800
        // Hints overflow at once (a bound of one byte): only anti-entropy can repair.
        var dc = InProcessDataCenter(members: 3, partitions: 4, settings: settings, hintsBytesMax: 1)
        for index in 0..<400 { _ = dc.write(at: 0, Array("key:\(index)".utf8), "v\(index)", acks: .all) }
        // One write reaches node 0 and node 2 only; its hint for node 1 overflows.
        let key = Array("key:17".utf8)
        dc.unreachable = [1]
        _ = dc.write(at: 0, key, "changed")
        dc.queue.removeAll()
        dc.advance(ms: 600)
        dc.unreachable = []
        #expect(dc.nodes[0].durable.hints.isEmpty && dc.nodes[0].durable.hints.dropped == 1)
        #expect(dc.value(at: 1, key) == "v17")
        dc.delivered.removeAll()
        dc.advance(ms: 1_000)
        #expect(dc.value(at: 1, key) == "changed")
        let shipped = dc.delivered.reduce(0) { total, message in
            if case .antiEntropyEntries(_, let entries, _) = message { return total + entries.count } else { return total }
        }
        let compared = dc.delivered.reduce(0) { total, message in
            if case .antiEntropyStamps(_, _, let stamps) = message { return total + stamps.count } else { return total }
        }
        // 400 keys over 4 partitions × 256 leaves: the differing leaf holds a key or two, whose
        // stamps are compared; only the one changed state travels (once per exchange: the node
        // that was away and another owner that still suspects it may both start one).
        #expect(shipped >= 1 && shipped <= 2, "\(shipped) entries shipped")
        #expect(compared >= 1 && compared <= 4, "\(compared) stamps compared")
    }

    @Test func antiEntropyRebuildsAReplicaThatLostItsDisk() {
        var settings = ClusterSettings()
        settings.antiEntropyIntervalMs = 800
        var dc = InProcessDataCenter(members: 3, partitions: 4, settings: settings)
        for index in 0..<100 { _ = dc.write(at: 0, Array("key:\(index)".utf8), "v\(index)", acks: .all) }
        dc.nodes[1] = ClusterNode(
            id: 1, origin: ReplicaID(datacenter: 0, node: 1), durable: ClusterDurableState(placement: dc.nodes[0].placement, hintsBytesMax: 1 << 20), settings: settings,
            nowMs: dc.nowMs, incarnation: 2)
        #expect(dc.value(at: 1, Array("key:5".utf8)) == nil)
        dc.advance(ms: 2_000)
        for partition in 0..<4 {
            #expect(dc.nodes[1].durable.store.digest(of: partition) == dc.nodes[0].durable.store.digest(of: partition))
        }
        #expect((0..<100).allSatisfy { dc.value(at: 1, Array("key:\($0)".utf8)) == "v\($0)" })
    }

    /// A replica that lost its data (and knows it) answers no read of a partition until every
    /// other owner streamed its copy: until then its empty store could hide a write it had
    /// acknowledged before, and a read counting it could miss that write.
    @Test func aReplicaThatLostItsDataAnswersNoReadUntilEveryOtherOwnerStreamedToIt() throws {
        var dc = InProcessDataCenter(members: 3, partitions: 1)
        let key = { (index: Int) in Array("key:\(index)".utf8) }
        for index in 0..<100 { _ = dc.write(at: 0, key(index), "v\(index)", acks: .all) }
        dc.unreachable = [0, 2]
        dc.nodes[1] = ClusterNode(
            id: 1, origin: ReplicaID(datacenter: 0, node: 1),
            durable: ClusterDurableState(placement: dc.nodes[0].placement, hintsBytesMax: 1 << 20, lostData: true),
            settings: ClusterSettings(), nowMs: dc.nowMs, incarnation: 2)
        dc.collect(1)
        // Alone, it cannot vouch for its (empty) copy: a read it coordinates waits, then times out.
        let alone = dc.read(at: 1, key(5), acks: .one)
        #expect(dc.replies[alone] == nil)
        dc.advance(ms: 2_100)
        #expect(dc.replies[alone] == .timedOut)
        // Node 0 is back and streams its copy; node 2 is still away, so the rebuild is not over.
        dc.unreachable = [2]
        dc.advance(ms: 1_100)
        #expect(dc.value(at: 1, key(5)) == "v5")
        #expect(dc.nodes[1].rebuildingPartitions == [0])
        let helped = dc.read(at: 1, key(7), acks: .one)
        guard case .read(let state)? = dc.replies[helped] else { Issue.record("no answer: \(String(describing: dc.replies[helped]))"); return }
        #expect(state?.value == Array("v7".utf8))
        // Another coordinator does not count it either: a quorum needs node 2.
        let elsewhere = dc.read(at: 0, key(7), acks: .quorum)
        #expect(dc.replies[elsewhere] == nil)
        dc.advance(ms: 2_100)
        #expect(dc.replies[elsewhere] == .timedOut)
        // Node 2 streams too: rebuilt, and it answers reads from its own copy again.
        dc.unreachable = []
        dc.advance(ms: 1_100)
        #expect(dc.nodes[1].rebuildingPartitions.isEmpty && dc.nodes[1].stats.partitionsRebuilt == 1)
        dc.unreachable = [0, 2]
        let rebuilt = dc.read(at: 1, key(9), acks: .one)
        guard case .read(let own)? = dc.replies[rebuilt] else { Issue.record("no answer from the rebuilt replica"); return }
        #expect(own?.value == Array("v9".utf8))
    }

    /// A coordinator may count an ack a replica sent before it lost its data, and reply once
    /// another owner acks, up to the client's deadline. The rebuilt replica must still end up
    /// holding the write: its streams wait out that deadline, so they start after the write
    /// reached the owner that acked it. (Streaming at once, it rebuilt from copies that lacked
    /// the write, and a quorum read of it and the third owner, which only has a hint pending,
    /// missed an acknowledged write.)
    @Test func aRebuildWaitsOutAcksTheReplicaSentBeforeItLostItsData() throws {
        var dc = InProcessDataCenter(members: 5, partitions: 1)
        let owners = dc.nodes[0].placement.owners(of: 0)
        let (wiped, first, second) = (owners[0], owners[1], owners[2])
        let coordinator = try #require((0..<5).first { !owners.contains($0) })
        let key = Array("key:1".utf8)
        // The write reaches only the replica about to lose its disk: one ack of two.
        dc.unreachable = [first, second]
        let client = dc.write(at: coordinator, key, "w")
        #expect(dc.replies[client] == nil)
        dc.nodes[wiped] = ClusterNode(
            id: wiped, origin: ReplicaID(datacenter: 0, node: UInt16(wiped)),
            durable: ClusterDurableState(placement: dc.nodes[0].placement, hintsBytesMax: 1 << 20, lostData: true),
            settings: ClusterSettings(), nowMs: dc.nowMs, incarnation: 2)
        dc.collect(wiped)
        dc.unreachable = [coordinator]
        dc.advance(ms: 300)
        // The coordinator sends again: the first other owner acks, and with the ack from before
        // the wipe the write is acknowledged. The second only gets a hint, which stays pending.
        dc.unreachable = [second]
        dc.advance(ms: 300)
        #expect(ClusterNodeTests.isWritten(dc.replies[client]))
        dc.unreachable = [coordinator]
        dc.advance(ms: 3_000)
        #expect(dc.nodes[wiped].rebuildingPartitions.isEmpty)
        #expect(dc.value(at: wiped, key) == "w" && dc.value(at: second, key) == nil)
        dc.unreachable = [coordinator, first]
        let read = dc.read(at: second, key, acks: .quorum)
        guard case .read(let state)? = dc.replies[read] else { Issue.record("no answer: \(String(describing: dc.replies[read]))"); return }
        #expect(state?.value == Array("w".utf8))
    }

    /// A key of the `INCR` family carries its PN counter in the record, and increments keep the
    /// value stamp: anti-entropy compares record digests and, when a counter differs, sends both
    /// ways, so replicas that each took increments the others missed end with all of them.
    @Test func antiEntropyMergesCountersEveryReplicaMissedPartsOf() {
        var settings = ClusterSettings()
        settings.antiEntropyIntervalMs = 100
        var dc = InProcessDataCenter(members: 3, partitions: 1, settings: settings)
        let key = Array("hits".utf8)
        // The key was created by an INCR (a reset to 0 whose stamp the value takes); each replica
        // then took one node's later increments, which keep that stamp, and missed the others'
        // (read repairs carry no ack: a way to put a state on one replica only).
        let created = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_000, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))
        func counted(_ amount: Int64, by node: UInt16) -> ReplicaState {
            var counter = PNCounter()
            counter.reset(to: 0, stamp: created)
            counter.add(amount, origin: ReplicaID(datacenter: 0, node: node))
            return ReplicaState(
                value: PNCounter.decimalBytes(counter.value), valueStamp: created, expiryUnixMs: Entry.noExpiry, expiryStamp: created,
                encoding: .byContent, counter: counter)
        }
        for (node, amount) in [(0, Int64(5)), (1, 7), (2, -2)] {
            dc.nodes[node].receive(
                .replicate(epoch: 1, request: 0, partition: 0, key: key, state: counted(amount, by: UInt16(node)), hinted: false),
                from: (node + 1) % 3, nowMs: dc.nowMs)
        }
        _ = (0..<3).map { dc.collect($0) }
        #expect(dc.nodes[0].durable.store.state(of: key, partition: 0)?.counter?.value == 5)
        dc.advance(ms: 2_000)
        for node in 0..<3 {
            let state = dc.nodes[node].durable.store.state(of: key, partition: 0)
            // The counter holds every increment, and the text shows it (not whichever text sorted last).
            #expect(state?.counter?.value == 10 && state?.value == Array("10".utf8), "node \(node): \(String(describing: state))")
        }
        #expect(dc.nodes[1].durable.store.digest(of: 0) == dc.nodes[0].durable.store.digest(of: 0))
        #expect(dc.nodes[2].durable.store.digest(of: 0) == dc.nodes[0].durable.store.digest(of: 0))
    }

    /// Anti-entropy works in whole leaves: with far more differing keys than one message
    /// carries, every pass still completes some leaves, until a wiped initiator has them all.
    @Test func antiEntropyRebuildsAWipedInitiatorBeyondOneMessage() {
        var settings = ClusterSettings()
        settings.antiEntropyIntervalMs = 100
        settings.antiEntropyEntriesMax = 100
        var dc = InProcessDataCenter(members: 3, partitions: 1, settings: settings)
        for index in 0..<2_000 { _ = dc.write(at: 1, Array("key:\(index)".utf8), "v\(index)", acks: .all) }
        let initiator = dc.nodes[0].placement.owners(of: 0)[0]
        dc.nodes[initiator] = ClusterNode(
            id: initiator, origin: ReplicaID(datacenter: 0, node: UInt16(initiator)),
            durable: ClusterDurableState(placement: dc.nodes[0].placement, hintsBytesMax: 1 << 20), settings: settings,
            nowMs: dc.nowMs, incarnation: 2)
        dc.advance(ms: 10_000)
        let other = (initiator + 1) % 3
        #expect(dc.nodes[initiator].durable.store.partitions[0]?.entries.count == 2_000)
        #expect(dc.nodes[initiator].durable.store.digest(of: 0) == dc.nodes[other].durable.store.digest(of: 0))
        #expect(dc.delivered.allSatisfy { message in
            switch message {
            case .antiEntropyEntries(_, let entries, let wanted): return entries.count <= 100 && wanted.count <= 100
            case .antiEntropyStamps(_, _, let stamps): return stamps.count <= 100
            default: return true
            }
        })
    }

    /// During a move a write must reach a quorum of the old and of the new replicas: with the
    /// new replica and one staying replica unreachable, it cannot be acknowledged.
    @Test func duringAMoveAWriteNeedsAQuorumOfTheNewReplicasToo() throws {
        var dc = InProcessDataCenter(members: 3)
        let grown = try dc.nodes[0].placement.adding(name: "node-3")
        dc.nodes.append(ClusterNode(
            id: 3, origin: ReplicaID(datacenter: 0, node: 3), durable: ClusterDurableState(placement: grown, hintsBytesMax: 1 << 20), settings: ClusterSettings(),
            nowMs: dc.nowMs, incarnation: 1))
        for id in 0..<3 { dc.nodes[id].learn(grown, nowMs: dc.nowMs) }
        for id in dc.nodes.indices { _ = dc.nodes[id].takeOutputs() }
        let partition = try #require(grown.changingPartitions.first)
        let old = grown.previousReplicas(of: partition)
        let new = grown.nextReplicas(of: partition)
        let displaced = try #require(old.first { !new.contains($0) })
        let staying = old.filter { $0 != displaced }
        let key = dc.key { $0 == partition }
        // The coordinator is a staying replica; the other staying one and the newcomer are cut.
        dc.unreachable = [staying[1], 3]
        let blocked = dc.write(at: staying[0], key, "a")
        #expect(dc.replies[blocked] == nil, "a quorum of the old set alone acknowledged a write during a move")
        // With only the other staying replica cut, old {coordinator, displaced} and new
        // {coordinator, newcomer} both have a quorum.
        dc.unreachable = [staying[1]]
        let client = dc.write(at: staying[0], key, "b")
        #expect(Self.isWritten(dc.replies[client]))
        #expect(dc.value(at: 3, key) == "b")
    }

    /// The newcomer proposes the switch only once a quorum of the old replicas streamed the
    /// partition to it.
    @Test func theSwitchWaitsForStreamsFromAQuorumOfTheOldReplicas() throws {
        var dc = InProcessDataCenter(members: 3)
        for index in 0..<40 { _ = dc.write(at: 0, Array("key:\(index)".utf8), "v\(index)", acks: .all) }
        let grown = try dc.nodes[0].placement.adding(name: "node-3")
        for id in 0..<3 { dc.nodes[id].learn(grown, nowMs: dc.nowMs) }
        let partition = try #require(grown.changingPartitions.first)
        let old = grown.previousReplicas(of: partition)
        // Only one old replica can reach the newcomer at first.
        dc.unreachable = Set(old.dropFirst())
        dc.nodes.append(ClusterNode(
            id: 3, origin: ReplicaID(datacenter: 0, node: 3), durable: ClusterDurableState(placement: grown, hintsBytesMax: 1 << 20), settings: ClusterSettings(),
            nowMs: dc.nowMs, incarnation: 1))
        dc.collect(3)
        dc.advance(ms: 500)
        #expect(!dc.proposals.contains { $0.contains(partition) })
        dc.unreachable = []
        dc.advance(ms: 1_500)
        #expect(dc.proposals.contains { $0.contains(partition) })
        // What it streamed is what the old replicas hold.
        #expect(dc.nodes[3].durable.store.digest(of: partition) == dc.nodes[old[0]].durable.store.digest(of: partition))
    }

    @Test func hostileFieldsAreIgnored() {
        var dc = InProcessDataCenter(members: 3)
        let state = ReplicaState.written([1], stamp: .zero)
        let hostile: [ClusterMessage] = [
            .replicate(epoch: .max, request: 1, partition: -1, key: [1], state: state, hinted: false),
            .replicate(epoch: 1, request: 1, partition: 1 << 40, key: [1], state: state, hinted: true),
            .read(epoch: 1, request: 2, partition: 99, key: []),
            .antiEntropyDigests(partition: 0, level: 7, nodes: [0], digests: [.zero]),
            .antiEntropyDigests(partition: 0, level: 1, nodes: [-3, 1 << 30], digests: [.zero, .zero]),
            .antiEntropyDigests(partition: 0, level: 0, nodes: [0, 1], digests: [.zero]),
            .antiEntropyStamps(partition: 0, leaves: [-1, 1 << 20], stamps: []),
            .antiEntropyStamps(partition: -5, leaves: [0], stamps: []),
            .antiEntropyStamps(partition: 0, leaves: [0], stamps: [
                KeyStamps(key: [9, 9, 9], valueStamp: .zero, expiryStamp: .zero, hasCounter: true, digest: .zero)]),
            .antiEntropyEntries(partition: -5, entries: [], wanted: []),
            .antiEntropyEntries(partition: 0, entries: [], wanted: [[9, 9, 9], []]),
            .moveRequest(partition: 1 << 33, changeEpoch: 0, stream: 1, after: nil),
            .moveChunk(partition: -1, changeEpoch: 9, stream: 1, after: nil, entries: [], last: true),
            // A rebuild chunk when no rebuild runs.
            .moveChunk(partition: 0, changeEpoch: 0, stream: 1, after: nil, entries: [ReplicaEntry(key: [1], state: state)], last: true),
            .readReply(request: 999, state: nil),
            .replicateAck(request: .max),
            .movedEpoch(request: 0, epoch: .max),
        ]
        for message in hostile {
            dc.nodes[0].receive(message, from: 1, nowMs: dc.nowMs)
        }
        dc.advance(ms: 100)
        #expect(dc.nodes[0].durable.store.heldPartitions.isEmpty)
    }
}
