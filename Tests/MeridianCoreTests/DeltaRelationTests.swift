// Proves the conflict rule of docs/REPLICATION.md on the histories it must tell apart: a
// causal chain across data centers arriving in either order is never a conflict, two writes
// that did not see each other always are, and a re-sent delta is a duplicate.
import MeridianCore
import Testing

@Suite struct DeltaRelationTests {
    static let east = ReplicaID(datacenter: 0, node: 0)
    static let west = ReplicaID(datacenter: 1, node: 0)
    static func dot(_ origin: ReplicaID, _ sequence: UInt64) -> Dot { Dot(origin: origin, sequence: sequence) }

    @Test func causalChainsAreNotConflicts() {
        let a = Self.dot(Self.east, 1)  // east creates the key
        let b = Self.dot(Self.west, 1)  // west, having seen a, overwrites it
        // A third DC receives a then b:
        #expect(DeltaRelation.of(incoming: a, previous: nil, localDot: nil, localPrevious: nil) == .overwrite)
        #expect(DeltaRelation.of(incoming: b, previous: a, localDot: a, localPrevious: nil) == .overwrite)
        // ... or b first (west's stream was faster), then a:
        #expect(DeltaRelation.of(incoming: b, previous: a, localDot: nil, localPrevious: nil) == .overwrite)
        #expect(DeltaRelation.of(incoming: a, previous: nil, localDot: b, localPrevious: a) == .superseded)
    }

    @Test func writesThatDidNotSeeEachOtherConflict() {
        let base = Self.dot(Self.east, 1)
        let inEast = Self.dot(Self.east, 2)  // both overwrite base without seeing each other
        let inWest = Self.dot(Self.west, 1)
        #expect(DeltaRelation.of(incoming: inWest, previous: base, localDot: inEast, localPrevious: base) == .concurrent)
        #expect(DeltaRelation.of(incoming: inEast, previous: base, localDot: inWest, localPrevious: base) == .concurrent)
        // Two creations of a key that neither DC had.
        #expect(DeltaRelation.of(incoming: Self.dot(Self.west, 5), previous: nil, localDot: Self.dot(Self.east, 9), localPrevious: nil) == .concurrent)
    }

    @Test func aResentDeltaIsADuplicate() {
        let write = Self.dot(Self.east, 3)
        #expect(DeltaRelation.of(incoming: write, previous: Self.dot(Self.east, 2), localDot: write, localPrevious: Self.dot(Self.east, 2)) == .duplicate)
    }
}
