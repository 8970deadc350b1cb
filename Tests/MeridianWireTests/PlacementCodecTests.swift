// Proves the placement's byte form (PlacementCodec): placements at rest and in the middle of a
// change round-trip and encode canonically (the placement log compares these bytes), and every
// truncation, trailing byte, bad state, bad version and field no placement can have is refused.
import MeridianCluster
import MeridianCore
import MeridianWire
import Testing

@Suite struct PlacementCodecTests {
    static var placements: [Placement] {
        let settled = Placement(memberNames: ["east-1", "east-2", "east-3"], partitionCount: 64, replicationFactor: 3)
        var changing = try! settled.adding(name: "east-4")
        let moving = (0..<64).filter { changing.isMoving($0) }
        changing = try! changing.switching(partitions: Array(moving.prefix(3)), changeEpoch: changing.changeEpoch)
        let leaving = try! settled.removing(name: "east-2")
        let small = Placement(memberNames: ["a"], partitionCount: 1, replicationFactor: 1)
        return [settled, changing, leaving, small]
    }

    @Test func placementsRoundTripCanonically() throws {
        for placement in Self.placements {
            let bytes = PlacementCodec.encode(placement)
            let decoded = try PlacementCodec.decode(bytes)
            #expect(decoded == placement)
            #expect(PlacementCodec.encode(decoded) == bytes)
            #expect((0..<placement.partitionCount).allSatisfy { decoded.writeTargets(of: $0) == placement.writeTargets(of: $0) })
        }
    }

    @Test func damagedPlacementsAreRefused() {
        for placement in Self.placements {
            let bytes = PlacementCodec.encode(placement)
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try PlacementCodec.decode(Array(bytes[0..<length])) }
            }
            #expect(throws: WireError.self) { try PlacementCodec.decode(bytes + [0]) }
        }
        let bytes = PlacementCodec.encode(Self.placements[0])
        var version = bytes
        version[0] = 2
        #expect(throws: WireError.self) { try PlacementCodec.decode(version) }
        // A member state that names nothing (the first member's state byte).
        var state = bytes
        state[1 + 4 + 4 + 8 + 8 + 4 + 4 + 4] = 9
        #expect(throws: WireError.self) { try PlacementCodec.decode(state) }
        // A joining member without a change running.
        var joining = bytes
        joining[1 + 4 + 4 + 8 + 8 + 4 + 4 + 4] = Placement.MemberState.joining.rawValue
        #expect(throws: WireError.self) { try PlacementCodec.decode(joining) }
        // A partition count that is not a power of two.
        var count = bytes
        count[1] = 63
        #expect(throws: WireError.self) { try PlacementCodec.decode(count) }
        // A switched bit while no change runs.
        var switched = bytes
        switched[switched.count - 1] = 1
        #expect(throws: WireError.self) { try PlacementCodec.decode(switched) }
        var random = SplitMix64(seed: 5)
        for _ in 0..<5_000 {
            let length = Int.random(in: 0..<80, using: &random)
            _ = try? PlacementCodec.decode((0..<length).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
    }
}
