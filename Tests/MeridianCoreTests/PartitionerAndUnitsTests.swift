// Proves the partition function matches Redis Cluster's CRC16 (so `{hash tags}` behave as
// users expect) and the size and duration parsers used by the configuration and CONFIG SET.
import MeridianCore
import Testing

@Suite struct PartitionerAndUnitsTests {
    @Test func crc16MatchesRedisClusterReference() {
        // The check value of CRC16/XMODEM, and Redis's CLUSTER KEYSLOT examples (mod 16384).
        #expect(Array("123456789".utf8).withUnsafeBytes { Partitioner.crc16($0) } == 0x31C3)
        let redis = Partitioner(partitionCount: 16384)
        #expect(Array("somekey".utf8).withUnsafeBytes { redis.partition(of: $0) } == 11058)
        #expect(Array("foo{hash_tag}".utf8).withUnsafeBytes { redis.partition(of: $0) } == 2515)
        #expect(Array("somekey".utf8).withUnsafeBytes { Partitioner.slot(of: $0) } == 11058)
    }

    /// A partition is one contiguous slot range; the ranges tile the 16,384 slots in order.
    @Test func partitionsAreContiguousSlotRanges() {
        for count in [1, 2, 1024, 16384] {
            let partitioner = Partitioner(partitionCount: count)
            var next = 0
            for partition in 0..<count {
                let slots = partitioner.slots(of: partition)
                #expect(slots.lowerBound == next)
                next = slots.upperBound + 1
            }
            #expect(next == Partitioner.slotCount)
            for key in ["a", "somekey", "{user:1}:x", "zzz"] {
                let slot = Array(key.utf8).withUnsafeBytes { Partitioner.slot(of: $0) }
                let partition = Array(key.utf8).withUnsafeBytes { partitioner.partition(of: $0) }
                #expect(partitioner.slots(of: partition).contains(slot))
            }
        }
        #expect([1, 2, 64, 16384].allSatisfy(Partitioner.isValidPartitionCount))
        #expect(![0, 3, 1000, 32768, -2].contains(where: Partitioner.isValidPartitionCount))
    }

    @Test func hashTagsShareAPartition() {
        let partitioner = Partitioner(partitionCount: 1024)
        func partition(_ key: String) -> Int { Array(key.utf8).withUnsafeBytes { partitioner.partition(of: $0) } }
        #expect(partition("{user:42}:profile") == partition("{user:42}:cart"))
        #expect(partition("{}x") == Array("{}x".utf8).withUnsafeBytes { Int(Partitioner.crc16($0)) % 16384 / 16 }, "an empty tag hashes the whole key")
        #expect(partition("a{b") == Array("a{b".utf8).withUnsafeBytes { Int(Partitioner.crc16($0)) % 16384 / 16 }, "an unclosed tag hashes the whole key")
    }

    @Test func parsesSizes() {
        #expect(Units.parseBytes("256mb") == 256 << 20)
        #expect(Units.parseBytes("1GB") == 1 << 30)
        #expect(Units.parseBytes("100kb") == 102_400)
        #expect(Units.parseBytes("1m") == 1_000_000)
        #expect(Units.parseBytes("5000") == 5000)
        #expect(Units.parseBytes("-1") == nil)
        #expect(Units.parseBytes("lots") == nil)
        #expect(Units.parseBytes("99999999999999999gb") == nil)
    }

    @Test func parsesDurations() {
        #expect(Units.parseDurationMs("30m") == 1_800_000)
        #expect(Units.parseDurationMs("100ms") == 100)
        #expect(Units.parseDurationMs("7d") == 604_800_000)
        #expect(Units.parseDurationMs("45s") == 45_000)
        #expect(Units.parseDurationMs("2h") == 7_200_000)
        #expect(Units.parseDurationMs("10") == 10_000)
        #expect(Units.parseDurationMs("soon") == nil)
    }

    @Test func formatsHumanBytes() {
        #expect(Units.humanBytes(512) == "512B")
        #expect(Units.humanBytes(1_572_864) == "1.50M")
    }
}
