// Proves the placement's promises (docs/CLUSTER.md, "Placement", invariant 4): every replica set
// has RF distinct members, adding one member of N+1 moves about RF/(N+1) of the partitions'
// replica slots and each moving partition changes exactly one replica, removing a member moves
// only the partitions it held, and a change runs to its end one committed switch at a time.
import MeridianCluster
import MeridianCore
import Testing

@Suite struct PlacementTests {
    static let partitions = 1_024

    static func names(_ count: Int) -> [String] { (0..<count).map { "east-\($0 + 1)" } }

    /// Replica slots that differ between the sets before and after a change.
    static func movedSlots(_ placement: Placement) -> (slots: Int, partitions: Int) {
        var slots = 0
        var partitions = 0
        for partition in 0..<placement.partitionCount {
            let before = placement.previousReplicas(of: partition)
            let after = placement.nextReplicas(of: partition)
            let entering = after.filter { !before.contains($0) }.count
            slots += entering
            if entering > 0 { partitions += 1 }
            #expect(entering <= 1, "partition \(partition) changes more than one replica")
        }
        return (slots, partitions)
    }

    @Test func everyReplicaSetHasReplicationFactorDistinctMembers() {
        let placement = Placement(memberNames: Self.names(5), partitionCount: Self.partitions, replicationFactor: 3)
        var primaries = Array(repeating: 0, count: 5)
        for partition in 0..<Self.partitions {
            let replicas = placement.owners(of: partition)
            #expect(replicas.count == 3 && Set(replicas).count == 3)
            #expect(placement.writeTargets(of: partition) == replicas)
            primaries[replicas[0]] += 1
        }
        // Even spread: each of 5 members is primary of 1024/5 ≈ 205 partitions, give or take.
        #expect(primaries.allSatisfy { $0 > 150 && $0 < 260 }, "\(primaries)")
        // Fewer members than RF: everyone holds everything.
        let small = Placement(memberNames: Self.names(2), partitionCount: 8, replicationFactor: 3)
        #expect((0..<8).allSatisfy { Set(small.owners(of: $0)) == [0, 1] })
    }

    @Test(arguments: [3, 4, 5, 8])
    func addingOneMemberMovesAboutRFOverNPlusOne(members: Int) throws {
        let placement = Placement(memberNames: Self.names(members), partitionCount: Self.partitions, replicationFactor: 3)
        let grown = try placement.adding(name: "east-new")
        #expect(grown.epoch == placement.epoch + 1 && grown.isChanging)
        let moved = Self.movedSlots(grown)
        let expected = Double(3 * Self.partitions) / Double(members + 1)
        #expect(Double(moved.slots) > expected * 0.85 && Double(moved.slots) < expected * 1.15,
                "\(moved.slots) replica slots moved, expected about \(expected)")
        // Only the newcomer enters a set, and every set it enters is a moving partition.
        for partition in 0..<Self.partitions {
            let entering = grown.nextReplicas(of: partition).filter { !grown.previousReplicas(of: partition).contains($0) }
            #expect(entering.allSatisfy { $0 == members })
            #expect(grown.isMoving(partition) == !entering.isEmpty)
        }
    }

    @Test func removingAMemberMovesOnlyThePartitionsItHeld() throws {
        let placement = Placement(memberNames: Self.names(6), partitionCount: Self.partitions, replicationFactor: 3)
        let shrunk = try placement.removing(name: "east-3")
        let leaving = 2
        let held = (0..<Self.partitions).filter { placement.owners(of: $0).contains(leaving) }
        #expect(shrunk.changingPartitions == held)
        #expect(Self.movedSlots(shrunk).partitions == held.count)
        for partition in held {
            #expect(!shrunk.nextReplicas(of: partition).contains(leaving))
        }
    }

    @Test func aMoveWritesToBothSetsAndSwitchesOnePartitionAtATime() throws {
        let placement = Placement(memberNames: Self.names(4), partitionCount: 64, replicationFactor: 3)
        var grown = try placement.adding(name: "east-5")
        #expect(throws: Placement.ChangeError.moveInProgress) { try grown.adding(name: "east-6") }
        let moving = grown.changingPartitions
        #expect(!moving.isEmpty)
        let first = moving[0]
        // Before the switch: old owners answer, both sets receive writes and both count.
        #expect(grown.owners(of: first) == grown.previousReplicas(of: first))
        #expect(Set(grown.writeTargets(of: first)) == Set(grown.previousReplicas(of: first) + grown.nextReplicas(of: first)))
        #expect(grown.ackGroups(of: first).count == 2)
        let change = grown.changeEpoch
        grown = try grown.switching(partitions: [first], changeEpoch: change)
        #expect(grown.owners(of: first) == grown.nextReplicas(of: first) && grown.ackGroups(of: first).count == 1)
        #expect(throws: Placement.ChangeError.staleSwitch) { try grown.switching(partitions: [first], changeEpoch: change) }
        #expect(throws: Placement.ChangeError.staleSwitch) { try grown.switching(partitions: [moving[1]], changeEpoch: change + 1) }
        grown = try grown.switching(partitions: Array(moving.dropFirst()), changeEpoch: change)
        #expect(!grown.isChanging && grown.members.allSatisfy { $0.state == .active } && grown.members.count == 5)
        // The final sets are exactly what a fresh placement of the five computes.
        let fresh = Placement(memberNames: Self.names(5), partitionCount: 64, replicationFactor: 3)
        #expect((0..<64).allSatisfy { grown.owners(of: $0) == fresh.owners(of: $0) })
    }

    @Test func refusals() throws {
        let placement = Placement(memberNames: ["a"], partitionCount: 4, replicationFactor: 1)
        #expect(throws: Placement.ChangeError.memberExists("a")) { try placement.adding(name: "a") }
        #expect(throws: Placement.ChangeError.noSuchMember("b")) { try placement.removing(name: "b") }
        #expect(throws: Placement.ChangeError.lastMember) { try placement.removing(name: "a") }
        #expect(throws: Placement.ChangeError.staleSwitch) { try placement.switching(partitions: [0], changeEpoch: 1) }
    }

    /// A removed member's id is never given to a newcomer.
    @Test func idsAreNeverReused() throws {
        var placement = Placement(memberNames: ["a", "b", "c", "d"], partitionCount: 8, replicationFactor: 2)
        placement = try placement.removing(name: "d")
        placement = try placement.switching(partitions: placement.changingPartitions, changeEpoch: placement.changeEpoch)
        #expect(placement.memberIDs == [0, 1, 2])
        placement = try placement.adding(name: "e")
        #expect(placement.memberIDs == [0, 1, 2, 4])
    }

    /// The score is part of the on-disk contract (it decides which node holds what): pin it.
    @Test func theScoreIsStable() {
        // Values computed independently (FNV-1a 64 of the name, SplitMix64 finalizer).
        #expect(Placement.score(partition: 0, name: "east-1") == 0x50F5_B622_3314_8EAB)
        #expect(Placement.score(partition: 7, name: "east-2") == 0x9AA1_83A8_A56F_4DD4)
        let pinned = Placement(memberNames: Self.names(5), partitionCount: 16, replicationFactor: 3)
        #expect(pinned.owners(of: 0) == [3, 4, 2])
    }
}

/// `CLUSTER SLOTS` ranges: one node owns one range; several nodes' ranges tile the slots in
/// order, each with its partition's owners.
@Suite struct SlotRangeTests {
    @Test func oneNodeReportsEverySlotAsOneRange() {
        let placement = Placement(memberNames: ["east-1"], partitionCount: 1024, replicationFactor: 1)
        let ranges = SlotRange.ranges(of: placement, partitioner: Partitioner(partitionCount: 1024))
        #expect(ranges == [SlotRange(slots: 0...16383, owners: [0])])
    }

    @Test func rangesTileTheSlotsWithTheirOwners() {
        let placement = Placement(memberNames: ["a", "b", "c", "d"], partitionCount: 64, replicationFactor: 2)
        let partitioner = Partitioner(partitionCount: 64)
        let ranges = SlotRange.ranges(of: placement, partitioner: partitioner)
        var next = 0
        for range in ranges {
            #expect(range.slots.lowerBound == next)
            next = range.slots.upperBound + 1
            let partition = range.slots.lowerBound / partitioner.slotsPerPartition
            #expect(range.owners == placement.owners(of: partition))
        }
        #expect(next == Partitioner.slotCount)
        #expect(ranges.count > 1 && ranges.count <= 64)
    }
}
