// Proves the merge laws of the LWW register (DESIGN.md "LWW register"): merge is commutative,
// associative and idempotent over randomly generated registers, so replicas that receive the
// same writes in any order, any number of times, converge. Also checks that the expiry is an
// independent field: a concurrent EXPIRE and SET both survive.
import MeridianCore
import Testing

@Suite struct LWWRegisterTests {
    typealias Register = LWWRegister<[UInt8]>

    static func randomStamp(_ generator: inout SplitMix64) -> LWWStamp {
        // A small domain makes equal timestamps (origin tie-breaks) common.
        LWWStamp(
            timestamp: HLCTimestamp(physicalMs: UInt64.random(in: 0...5, using: &generator), logical: UInt64.random(in: 0...2, using: &generator)),
            origin: ReplicaID(datacenter: UInt16.random(in: 0...2, using: &generator), node: UInt16.random(in: 0...1, using: &generator)))
    }

    static func randomRegister(_ generator: inout SplitMix64) -> Register {
        let valueStamp = randomStamp(&generator)
        let expiryStamp = randomStamp(&generator)
        // Equal stamps must carry equal fields: a stamp names exactly one write.
        let value: [UInt8]? = valueStamp.timestamp.rawValue % 3 == 0 ? nil : [UInt8(truncatingIfNeeded: valueStamp.timestamp.rawValue), UInt8(valueStamp.origin.datacenter)]
        let expiry: Int64? = expiryStamp.timestamp.rawValue % 2 == 0 ? nil : Int64(expiryStamp.timestamp.rawValue) * 10 + Int64(expiryStamp.origin.node)
        return Register(value: value, valueStamp: valueStamp, expiryUnixMs: expiry, expiryStamp: expiryStamp)
    }

    @Test func mergeIsCommutative() {
        var generator = SplitMix64(seed: 1)
        for _ in 0..<5_000 {
            let a = Self.randomRegister(&generator), b = Self.randomRegister(&generator)
            #expect(a.merged(with: b) == b.merged(with: a))
        }
    }

    @Test func mergeIsAssociative() {
        var generator = SplitMix64(seed: 2)
        for _ in 0..<5_000 {
            let a = Self.randomRegister(&generator), b = Self.randomRegister(&generator), c = Self.randomRegister(&generator)
            #expect(a.merged(with: b).merged(with: c) == a.merged(with: b.merged(with: c)))
        }
    }

    @Test func mergeIsIdempotent() {
        var generator = SplitMix64(seed: 3)
        for _ in 0..<5_000 {
            let a = Self.randomRegister(&generator), b = Self.randomRegister(&generator)
            #expect(a.merged(with: a) == a)
            #expect(a.merged(with: b).merged(with: b) == a.merged(with: b))
        }
    }

    @Test func anyDeliveryOrderConverges() {
        var generator = SplitMix64(seed: 4)
        for _ in 0..<500 {
            let writes = (0..<6).map { _ in Self.randomRegister(&generator) }
            let reference = writes.dropFirst().reduce(writes[0]) { $0.merged(with: $1) }
            var shuffled = writes + writes.prefix(2)  // duplicates too
            shuffled.shuffle(using: &generator)
            let replica = shuffled.dropFirst().reduce(shuffled[0]) { $0.merged(with: $1) }
            #expect(replica == reference)
        }
    }

    @Test func concurrentExpireAndSetBothSurvive() {
        let east = ReplicaID(datacenter: 0, node: 0), west = ReplicaID(datacenter: 1, node: 0)
        let base = Register(
            value: Array("v0".utf8), valueStamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 1, logical: 0), origin: east),
            expiryUnixMs: nil, expiryStamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 1, logical: 0), origin: east))
        // West sets a new value at t=10; east sets an expiry at t=11 without touching the value.
        var set = base
        set.value = Array("v1".utf8)
        set.valueStamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 10, logical: 0), origin: west)
        var expire = base
        expire.expiryUnixMs = 5_000
        expire.expiryStamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 11, logical: 0), origin: east)
        let merged = set.merged(with: expire)
        #expect(merged.value == Array("v1".utf8))
        #expect(merged.expiryUnixMs == 5_000)
        #expect(merged == expire.merged(with: set))
    }

    @Test func tombstoneBlocksOlderWrite() {
        let origin = ReplicaID(datacenter: 0, node: 0)
        let write = Register(value: [1], valueStamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 5, logical: 0), origin: origin), expiryUnixMs: nil, expiryStamp: .zero)
        let delete = Register(value: nil, valueStamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 6, logical: 0), origin: origin), expiryUnixMs: nil, expiryStamp: .zero)
        #expect(delete.merged(with: write).isTombstone)
        #expect(write.merged(with: delete).isAbsent(atUnixMs: 0))
    }
}
