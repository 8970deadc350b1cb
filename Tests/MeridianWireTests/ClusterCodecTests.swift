// Proves the byte form of the intra-DC messages (docs/CLUSTER.md, "Messages"): every kind round
// trips with every optional field both ways; every truncation, trailing bytes, unknown kinds,
// out-of-range levels, livenesses, oversized keys and values and counts beyond the payload are
// refused as errors; 20,000 random payloads decode or fail, never trap.
import MeridianCluster
import MeridianCore
import MeridianWire
import Testing

@Suite struct ClusterCodecTests {
    static let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_700_000_000_000, logical: 3), origin: ReplicaID(datacenter: 1, node: 4))
    static let live = ReplicaState(
        value: Array("value".utf8), valueStamp: stamp, expiryUnixMs: 1_700_000_060_000, expiryStamp: stamp, encoding: .raw,
        dot: Dot(origin: ReplicaID(datacenter: 1, node: 4), sequence: 9))
    static let tombstone = ReplicaState.tombstone(stamp: stamp)
    /// A key of the `INCR` family: its PN counter travels inside the record.
    static let counted = ReplicaState(
        value: Array("12".utf8), valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp, encoding: .byContent,
        counter: PNCounter(base: 2, resetStamp: stamp, contributions: [
            PNCounter.Contribution(origin: ReplicaID(datacenter: 1, node: 4), p: 10, n: 0, observed: 0)]))
    static let updates = [MemberUpdate(member: 3, incarnation: 9, liveness: .suspect), MemberUpdate(member: 0, incarnation: 1, liveness: .down)]
    static let entries = [
        ReplicaEntry(key: Array("a".utf8), state: live), ReplicaEntry(key: [], state: tombstone), ReplicaEntry(key: Array("n".utf8), state: counted),
    ]

    static let messages: [ClusterMessage] = [
        .swim(.ping(sequence: 1, onBehalfOf: nil, updates: [])),
        .swim(.ping(sequence: 2, onBehalfOf: 4, updates: updates)),
        .swim(.ack(sequence: 3, target: 2, incarnation: 77, updates: updates)),
        .swim(.pingRequest(sequence: 4, target: 1, updates: [])),
        .replicate(epoch: 5, request: 6, partition: 1_023, key: Array("session:1".utf8), state: live, hinted: false),
        .replicate(epoch: 5, request: 0, partition: 0, key: [], state: tombstone, hinted: true),
        .replicateAck(request: .max),
        .read(epoch: 1, request: 2, partition: 3, key: Array("k".utf8)),
        .readReply(request: 2, state: nil),
        .readReply(request: 2, state: live),
        .movedEpoch(request: 9, epoch: 10),
        .antiEntropyDigests(partition: 7, level: 0, nodes: [0], digests: [Digest128(high: 1, low: 2)]),
        .antiEntropyDigests(partition: 7, level: 2, nodes: [], digests: []),
        .antiEntropyEntries(partition: 7, entries: entries, wanted: [Array("b".utf8), []]),
        .antiEntropyEntries(partition: 7, entries: [], wanted: []),
        .antiEntropyStamps(partition: 7, leaves: [1, 255], stamps: [KeyStamps(entries[0]), KeyStamps(entries[1])]),
        .antiEntropyStamps(partition: 7, leaves: [], stamps: []),
        .moveRequest(partition: 3, changeEpoch: 4, stream: 5, after: nil),
        .moveRequest(partition: 3, changeEpoch: 0, stream: .max, after: Array("k".utf8)),
        .moveChunk(partition: 3, changeEpoch: 4, stream: 5, after: Array("a".utf8), entries: entries, last: false),
        .moveChunk(partition: 3, changeEpoch: 0, stream: 1, after: nil, entries: [], last: true),
        .command(request: 1, epoch: 2, partition: 3, protocolVersion: 2, passedOn: false, commands: [[Array("GET".utf8), Array("k".utf8)]]),
        .command(request: .max, epoch: 2, partition: 1_023, protocolVersion: 3, passedOn: true, commands: [
            [Array("MULTI".utf8)], [Array("SET".utf8), Array("{t}a".utf8), []], [Array("EXEC".utf8)],
        ]),
        .commandReply(request: 1, outcome: .executed(reply: Array("$1\r\nv\r\n".utf8))),
        .commandReply(request: 1, outcome: .executed(reply: [])),
        .commandReply(request: 2, outcome: .movedEpoch(7)),
        .commandReply(request: 3, outcome: .replyTooLarge),
        .placementFetch(epoch: 0),
        .placement(Placement(memberNames: ["east-1", "east-2", "east-3"], partitionCount: 64, replicationFactor: 2)),
        .placement(try! Placement(memberNames: ["east-1", "east-2", "east-3"], partitionCount: 64, replicationFactor: 2).adding(name: "east-4")),
        .placementChange(request: 0, change: .add(name: "east-4")),
        .placementChange(request: 7, change: .remove(name: "east-é")),
        .placementChange(request: 8, change: .switching(partitions: [0, 17, 1_023], changeEpoch: 5)),
        .placementChangeReply(request: 8, outcome: .committed(epoch: 6)),
        .placementChangeReply(request: 9, outcome: .refused("'east-4' is already a member")),
        .placementLog([1, 2, 3]),
        .placementLog([]),
    ]

    @Test func everyMessageRoundTrips() throws {
        for message in Self.messages {
            #expect(try ClusterCodec.decode(ClusterCodec.encode(message)) == message)
        }
    }

    @Test func damagedPayloadsAreRefused() {
        for message in Self.messages {
            let bytes = ClusterCodec.encode(message)
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try ClusterCodec.decode(Array(bytes[0..<length])) }
            }
            #expect(throws: WireError.self) { try ClusterCodec.decode(bytes + [0]) }
        }
        #expect(throws: WireError.self) { try ClusterCodec.decode([19]) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([40]) }
        // A switch of no partition, an add of an empty name, a change or an outcome that names nothing.
        #expect(throws: WireError.self) { try ClusterCodec.decode([37] + [UInt8](repeating: 0, count: 8) + [2] + [UInt8](repeating: 0, count: 12)) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([37] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 0, 0]) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([37] + [UInt8](repeating: 0, count: 8) + [3]) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([38] + [UInt8](repeating: 0, count: 8) + [2]) }
        // A placement whose bytes no placement has (a member count of zero).
        #expect(throws: WireError.self) { try ClusterCodec.decode([36, 29, 0, 0, 0, 1, 64, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 24)) }
        // A forwarded command with no command, or a command with no arguments; an outcome
        // that names nothing.
        #expect(throws: WireError.self) { try ClusterCodec.decode([33] + [UInt8](repeating: 0, count: 24)) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([33] + [UInt8](repeating: 0, count: 20) + [1, 0, 0, 0, 0, 0, 0, 0]) }
        #expect(throws: WireError.self) { try ClusterCodec.decode([34] + [UInt8](repeating: 0, count: 8) + [3]) }
        // A tree level past the leaves.
        #expect(throws: WireError.self) { try ClusterCodec.decode([28, 0, 0, 0, 0, 3, 0, 0, 0, 0]) }
        // A liveness byte that names nothing.
        #expect(throws: WireError.self) {
            try ClusterCodec.decode([21] + [UInt8](repeating: 0, count: 20) + [1, 0, 0, 0] + [UInt8](repeating: 0, count: 12) + [7])
        }
        // A count far beyond the payload is refused before anything is allocated for it.
        #expect(throws: WireError.self) { try ClusterCodec.decode([29, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]) }
        // A key over the key limit, a value over the value limit.
        let longKey = ClusterCodec.encode(.read(epoch: 1, request: 1, partition: 0, key: [UInt8](repeating: 1, count: Limits.keyBytesMax + 1)))
        #expect(throws: WireError.self) { try ClusterCodec.decode(longKey) }
        let bigValue = ReplicaState.written([UInt8](repeating: 0, count: Limits.valueBytesMax + 1), stamp: Self.stamp)
        #expect(throws: WireError.self) { try ClusterCodec.decode(ClusterCodec.encode(.readReply(request: 1, state: bigValue))) }
        // A record whose checksum does not match (one value byte changed in flight).
        var damaged = ClusterCodec.encode(.readReply(request: 1, state: Self.live))
        damaged[damaged.count - 10] ^= 0x20
        #expect(throws: WireError.self) { try ClusterCodec.decode(damaged) }
        var random = SplitMix64(seed: 11)
        for _ in 0..<20_000 {
            let count = Int(random.next() % 60)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if !bytes.isEmpty { bytes[0] = UInt8(20 + random.next() % 20) }
            _ = try? ClusterCodec.decode(bytes)
        }
    }
}
