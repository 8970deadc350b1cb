// Proves the merge laws that replication relies on (docs/REPLICATION.md, invariant 1) for the
// version vector and the PN-counter with reset: commutative, associative and idempotent over
// states produced by random histories (seeded; the seed is in the test name), plus the
// counter's meaning: concurrent increments in different data centers all count, and a SET
// resets exactly the contributions it observed.
import MeridianCore
import Testing

@Suite struct ReplicationMergeTests {
    static let origins = (0..<4).map { ReplicaID(datacenter: UInt16($0 % 2), node: UInt16($0 / 2)) }

    static func randomVector(_ random: inout SplitMix64) -> VersionVector {
        var vector = VersionVector()
        for origin in origins where Bool.random(using: &random) {
            vector.advance(origin, to: UInt64.random(in: 1...20, using: &random))
        }
        return vector
    }

    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func versionVectorMergeLaws(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for _ in 0..<200 {
            let a = Self.randomVector(&random), b = Self.randomVector(&random), c = Self.randomVector(&random)
            var ab = a; ab.merge(b)
            var ba = b; ba.merge(a)
            #expect(ab == ba)
            var abThenC = ab; abThenC.merge(c)
            var bc = b; bc.merge(c)
            var aThenBC = a; aThenBC.merge(bc)
            #expect(abThenC == aThenBC)
            var aa = a; aa.merge(a)
            #expect(aa == a)
            #expect(ab.covers(a) && ab.covers(b))
            let meet = VersionVector.meet([a, b])
            #expect(a.covers(meet) && b.covers(meet))
        }
    }

    @Test func versionVectorClaimsOnlyContiguousPrefixes() {
        let origin = Self.origins[0]
        var vector = VersionVector()
        let first = vector.record(Dot(origin: origin, sequence: 1))
        let pastGap = vector.record(Dot(origin: origin, sequence: 3))  // a gap: not claimed
        #expect(first && !pastGap)
        #expect(vector[origin] == 1)
        let second = vector.record(Dot(origin: origin, sequence: 2))
        let duplicate = vector.record(Dot(origin: origin, sequence: 2))
        #expect(second && !duplicate)
        #expect(vector.covers(Dot(origin: origin, sequence: 2)) && !vector.covers(Dot(origin: origin, sequence: 3)))
        #expect(vector[Self.origins[1]] == 0)
    }

    /// Replicas that each apply random local operations and exchange whole states at random.
    static func randomCounterStates(seed: UInt64, count: Int) -> [PNCounter] {
        var random = SplitMix64(seed: seed)
        var replicas = Array(repeating: PNCounter(), count: Self.origins.count)
        var clock: UInt64 = 0
        var states: [PNCounter] = []
        for _ in 0..<count {
            let index = Int.random(in: 0..<replicas.count, using: &random)
            switch Int.random(in: 0..<10, using: &random) {
            case 0:
                clock += 1
                let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: clock << 16), origin: Self.origins[index])
                replicas[index].reset(to: Int64.random(in: -100...100, using: &random), stamp: stamp)
            case 1, 2:
                let other = Int.random(in: 0..<replicas.count, using: &random)
                replicas[index].merge(replicas[other])
            default:
                replicas[index].add(Int64.random(in: -5...5, using: &random), origin: Self.origins[index])
            }
            states.append(replicas[index])
        }
        return states
    }

    @Test(arguments: [11, 12, 13, 14, 15] as [UInt64])
    func counterMergeLaws(seed: UInt64) {
        let states = Self.randomCounterStates(seed: seed, count: 300)
        var random = SplitMix64(seed: seed ^ 0xABCDEF)
        for _ in 0..<300 {
            let a = states.randomElement(using: &random)!
            let b = states.randomElement(using: &random)!
            let c = states.randomElement(using: &random)!
            var ab = a; ab.merge(b)
            var ba = b; ba.merge(a)
            #expect(ab == ba && ab.value == ba.value)
            var abThenC = ab; abThenC.merge(c)
            var bc = b; bc.merge(c)
            var aThenBC = a; aThenBC.merge(bc)
            #expect(abThenC == aThenBC)
            var aa = a; aa.merge(a)
            #expect(aa == a)
        }
    }

    @Test func concurrentIncrementsAllCount() {
        let east = Self.origins[0], west = Self.origins[1]
        var inEast = PNCounter(), inWest = PNCounter()
        inEast.add(3, origin: east)
        inWest.add(4, origin: west)
        inWest.add(-1, origin: west)
        var merged = inEast
        merged.merge(inWest)
        #expect(merged.value == 6)
    }

    @Test func aResetClearsWhatItObservedOnly() {
        let east = Self.origins[0], west = Self.origins[1]
        var inEast = PNCounter(), inWest = PNCounter()
        inEast.add(10, origin: east)
        inWest.merge(inEast)  // west has seen east's 10
        inWest.reset(to: 100, stamp: LWWStamp(timestamp: HLCTimestamp(rawValue: 1 << 16), origin: west))
        inEast.add(5, origin: east)  // concurrent with the reset: not observed by it
        inEast.merge(inWest)
        inWest.merge(inEast)
        #expect(inEast == inWest)
        #expect(inEast.value == 105)
    }
}
