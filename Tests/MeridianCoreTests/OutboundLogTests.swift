// Proves the outbound log's rules (docs/REPLICATION.md): a stream resumes exactly after what
// the peer has, batches are consecutive and bounded, a delta leaves the log only when every
// peer has acknowledged it (or the retention bound forces it out, and then that peer is sent a
// snapshot instead of a gap), checked against a model over seeded random histories.
import MeridianCore
import Testing

@Suite struct OutboundLogTests {
    static let origin = ReplicaID(datacenter: 0, node: 0)

    static func delta(_ sequence: UInt64) -> Delta {
        let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: sequence << 16), origin: origin)
        return Delta(dot: Dot(origin: origin, sequence: sequence), previousDot: nil, key: Array("k\(sequence % 7)".utf8),
                     state: .register(DurableRecord(value: [UInt8(sequence & 0xFF)], valueStamp: stamp, expiryUnixMs: 0, expiryStamp: stamp, encoding: .byContent)))
    }

    @Test func resumesAfterWhatThePeerHas() {
        var log = OutboundLog(origin: Self.origin, peers: ["west", "central"], retainedBytesMax: 1 << 20)
        for sequence in 1...10 { log.append(Self.delta(UInt64(sequence)), bytes: 10) }
        #expect(log.nextSend(after: 10, maxDeltas: 4, maxBytes: 1000) == .upToDate)
        guard case .deltas(let batch) = log.nextSend(after: 3, maxDeltas: 4, maxBytes: 1000) else {
            Issue.record("expected deltas")
            return
        }
        #expect(batch.map(\.dot.sequence) == [4, 5, 6, 7])
        guard case .deltas(let small) = log.nextSend(after: 3, maxDeltas: 100, maxBytes: 25) else {
            Issue.record("expected deltas")
            return
        }
        #expect(small.map(\.dot.sequence) == [4, 5])
        // Kept until both peers have them.
        log.acknowledge(peer: "west", through: 8)
        #expect(log.retainedCount == 10)
        log.acknowledge(peer: "central", through: 6)
        #expect(log.oldestRetained == 7 && log.retainedCount == 4)
        // A peer that asks for what is gone gets a snapshot, never a gap.
        #expect(log.nextSend(after: 2, maxDeltas: 4, maxBytes: 1000) == .snapshot(through: 10))
    }

    @Test func theRetentionBoundTurnsAGapIntoASnapshot() {
        var log = OutboundLog(origin: Self.origin, peers: ["west"], retainedBytesMax: 100)
        for sequence in 1...30 { log.append(Self.delta(UInt64(sequence)), bytes: 10) }
        #expect(log.retainedBytes <= 100 && log.oldestRetained == 21)
        #expect(log.nextSend(after: 0, maxDeltas: 5, maxBytes: 1000) == .snapshot(through: 30))
        guard case .deltas(let batch) = log.nextSend(after: 20, maxDeltas: 5, maxBytes: 1000) else {
            Issue.record("expected deltas")
            return
        }
        #expect(batch.first?.dot.sequence == 21)
    }

    @Test func restoredSequenceContinues() {
        var log = OutboundLog(origin: Self.origin, peers: ["west"], lastSequence: 41, retainedBytesMax: 1000)
        #expect(log.nextDot.sequence == 42)
        #expect(log.nextSend(after: 41, maxDeltas: 1, maxBytes: 1) == .upToDate)
        #expect(log.nextSend(after: 10, maxDeltas: 1, maxBytes: 1) == .snapshot(through: 41))
        log.append(Self.delta(42), bytes: 5)
        #expect(log.lastSequence == 42)
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func randomHistoriesAgainstAModel(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let peers = ["a", "b", "c"]
        var log = OutboundLog(origin: Self.origin, peers: peers, retainedBytesMax: 400)
        var acked = Dictionary(uniqueKeysWithValues: peers.map { ($0, UInt64(0)) })
        // The model: each delta's size, and the oldest sequence that must still be retained.
        var sizes: [UInt64: Int] = [:]
        var modelOldest: UInt64 = 1
        for _ in 0..<3000 {
            if Int.random(in: 0..<3, using: &random) == 0 {
                let peer = peers.randomElement(using: &random)!
                let upTo = UInt64.random(in: 0...max(1, log.lastSequence), using: &random)
                log.acknowledge(peer: peer, through: upTo)
                acked[peer] = max(acked[peer]!, min(upTo, log.lastSequence))
                modelOldest = max(modelOldest, acked.values.min()! + 1)
            } else {
                let size = Int.random(in: 1...40, using: &random)
                log.append(Self.delta(log.lastSequence + 1), bytes: size)
                sizes[log.lastSequence] = size
                // The bound forces the oldest out, but never the newest delta.
                while modelOldest < log.lastSequence && (modelOldest...log.lastSequence).reduce(0, { $0 + sizes[$1]! }) > 400 {
                    modelOldest += 1
                }
            }
            #expect(log.oldestRetained == modelOldest)
            let expectedBytes = modelOldest > log.lastSequence ? 0 : (modelOldest...log.lastSequence).reduce(0) { $0 + sizes[$1]! }
            #expect(log.retainedBytes == expectedBytes)
            for peer in peers {
                switch log.nextSend(after: acked[peer]!, maxDeltas: 8, maxBytes: 120) {
                case .upToDate:
                    #expect(acked[peer]! == log.lastSequence)
                case .deltas(let deltas):
                    #expect(deltas.first!.dot.sequence == acked[peer]! + 1)
                    #expect(zip(deltas, deltas.dropFirst()).allSatisfy { $1.dot.sequence == $0.dot.sequence + 1 })
                    #expect(deltas.count <= 8)
                case .snapshot(let through):
                    #expect(acked[peer]! + 1 < log.oldestRetained && through == log.lastSequence)
                }
            }
        }
    }
}

@Suite struct OutboundLogRestartTests {
    @Test func aRestartedPeerIsBehindAgainAndAJumpLeavesAGapForASnapshot() {
        var log = OutboundLog(origin: OutboundLogTests.origin, peers: ["west"], retainedBytesMax: 1 << 20)
        for sequence in 1...10 { log.append(OutboundLogTests.delta(UInt64(sequence)), bytes: 10) }
        log.acknowledge(peer: "west", through: 8)
        #expect(log.oldestRetained == 9)
        // West restarted with nothing: what it acknowledged no longer counts; the log cannot
        // give it deltas 1...8 any more, so it needs a snapshot.
        log.peerRestarted("west", through: 0)
        #expect(log.acknowledged["west"] == 0)
        #expect(log.nextSend(after: 0, maxDeltas: 10, maxBytes: 1000) == .snapshot(through: 10))
        // A jump (dots above the last issued exist somewhere) drops the retained deltas.
        log.jump(to: 1_000)
        #expect(log.nextDot == Dot(origin: OutboundLogTests.origin, sequence: 1_001))
        #expect(log.retainedCount == 0 && log.retainedBytes == 0)
        #expect(log.nextSend(after: 10, maxDeltas: 10, maxBytes: 1000) == .snapshot(through: 1_000))
    }
}

@Suite struct TombstoneHorizonTests {
    static let me = ReplicaID(datacenter: 0, node: 0)
    static let west = ReplicaID(datacenter: 1, node: 0)

    @Test func anAcknowledgementCountsOnceThisNodeHasThePeersWritesUpToIt() {
        var horizon = TombstoneHorizon(peers: [Self.west])
        let local = VersionVector([(Self.me, 10), (Self.west, 5)])
        // West has seen our 10, and wrote up to 7 before saying so: a write of west's
        // concurrent with our deletes may be among 6...7, which we have not applied yet.
        horizon.record(peer: Self.west, vector: VersionVector([(Self.me, 10), (Self.west, 7)]))
        #expect(horizon.horizon(local: local) == VersionVector())
        // Once we have west's stream up to 7, its acknowledgement is stable.
        let caughtUp = VersionVector([(Self.me, 10), (Self.west, 7)])
        #expect(horizon.horizon(local: caughtUp) == VersionVector([(Self.me, 10), (Self.west, 7)]))
        // A new link (west may have restarted) starts over.
        horizon.reset(peer: Self.west)
        #expect(horizon.horizon(local: caughtUp) == VersionVector())
    }
}
