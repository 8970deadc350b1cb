// Proves the byte form of a hint kept on disk (docs/CLUSTER.md, "Hinted handoff"): every kind of
// record round trips with its id, target and partition; keys sort by id; every truncation,
// trailing bytes, another format version, a key of the wrong shape and out-of-range fields are
// refused as errors.
import MeridianCluster
import MeridianCore
import MeridianWire
import Testing

@Suite struct HintCodecTests {
    static let hints = [
        HintStore.Hint(id: 1, target: 2, partition: 1_023, key: Array("a".utf8), state: ClusterCodecTests.live),
        HintStore.Hint(id: 300, target: (1 << 24) + 5, partition: 0, key: [], state: ClusterCodecTests.tombstone),
        HintStore.Hint(id: UInt64.max - 1, target: 0, partition: 7, key: Array("n".utf8), state: ClusterCodecTests.counted),
    ]

    @Test func everyHintRoundTrips() throws {
        for hint in Self.hints {
            #expect(try HintCodec.decode(key: HintCodec.key(id: hint.id), value: HintCodec.encode(hint)) == hint)
        }
    }

    /// A scan of the log returns hints oldest first, inside the log's range.
    @Test func keysSortByIdInsideTheLog() {
        let keys = [0, 1, 255, 256, 1 << 40, UInt64.max - 1].map { HintCodec.key(id: $0) }
        for (earlier, later) in zip(keys, keys.dropFirst()) {
            #expect(earlier.lexicographicallyPrecedes(later))
        }
        #expect(HintCodec.firstKey.lexicographicallyPrecedes(keys[0]) && keys.last!.lexicographicallyPrecedes(HintCodec.endKey))
    }

    @Test func damagedEntriesAreRefused() {
        let hint = Self.hints[0]
        let key = HintCodec.key(id: hint.id)
        let value = HintCodec.encode(hint)
        for length in 0..<value.count {
            #expect(throws: WireError.self) { try HintCodec.decode(key: key, value: Array(value[0..<length])) }
        }
        #expect(throws: WireError.self) { try HintCodec.decode(key: key, value: value + [0]) }
        #expect(throws: WireError.self) { try HintCodec.decode(key: key, value: [2] + value.dropFirst()) }
        #expect(throws: WireError.self) { try HintCodec.decode(key: Array(key.dropLast()), value: value) }
        #expect(throws: WireError.self) { try HintCodec.decode(key: [UInt8(ascii: "a")] + key.dropFirst(), value: value) }
        // A partition past the slots, a target past any member id.
        var farPartition = value
        farPartition.replaceSubrange(9..<13, with: [0xff, 0xff, 0xff, 0x7f])
        #expect(throws: WireError.self) { try HintCodec.decode(key: key, value: farPartition) }
        var farTarget = value
        farTarget.replaceSubrange(1..<9, with: [UInt8](repeating: 0xff, count: 8))
        #expect(throws: WireError.self) { try HintCodec.decode(key: key, value: farTarget) }
    }
}
