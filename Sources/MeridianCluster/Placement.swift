/// Where a data center's partitions live (docs/CLUSTER.md, "Placement" and "Rebalancing").
///
/// Rendezvous (highest-random-weight) hashing: for partition p every member gets the score
/// `score(p, member.name)`; the replicas of p are the `replicationFactor` members with the
/// highest scores, the first being the primary. Adding one member of N+1 changes a partition's
/// replica set only where the newcomer enters its top RF (an expected RF/(N+1) of the
/// partitions, each losing exactly one replica); removing a member changes only the partitions
/// it held. There are no tokens to tune, unlike a ring of virtual nodes.
///
/// A `Placement` is a value with an epoch: it is committed as a whole (by compare-and-set in
/// the data center's placement log, a Paxos group — docs/CLUSTER.md, "The server wiring"), and
/// every node computes the same replica sets from the same epoch. Failures never change it; only operator changes (`adding`,
/// `removing`) and the per-partition switches of a move (`switching`) do, each with a new epoch.
public struct Placement: Sendable, Equatable, CustomStringConvertible {
    /// A member's part in the placement.
    public enum MemberState: UInt8, Sendable, Equatable {
        /// Being added: receives dual writes and streams; owns a partition once it switched.
        case joining
        /// A full owner.
        case active
        /// Being removed: stays an owner of each partition until that partition switched.
        case leaving
    }

    /// One node of the data center.
    public struct Member: Sendable, Equatable {
        /// A stable number, used in messages and by the shell to find the node's address.
        public var id: Int
        /// The node's configured name; the placement score hashes it, so renumbering ids never
        /// moves data.
        public var name: String
        public var state: MemberState

        public init(id: Int, name: String, state: MemberState) {
            self.id = id
            self.name = name
            self.state = state
        }
    }

    /// Why a change was refused.
    public enum ChangeError: Error, Equatable, Sendable {
        /// One change at a time: the previous add or remove has partitions still moving.
        case moveInProgress
        case memberExists(String)
        case noSuchMember(String)
        /// The last member cannot leave.
        case lastMember
        /// The switch names a partition that is not moving, or an epoch that has passed.
        case staleSwitch
    }

    /// The cluster's fixed partition count.
    public let partitionCount: Int
    /// Replicas of each partition inside the data center.
    public let replicationFactor: Int
    /// Grows by one with every committed change.
    public private(set) var epoch: UInt64
    /// In ascending id order.
    public private(set) var members: [Member]
    /// The partitions whose move in the current change has completed (`switching`).
    public private(set) var switched: [Bool]
    /// The epoch that started the current change (0 when none is running).
    public private(set) var changeEpoch: UInt64
    /// Each partition's replicas before and after the current change (equal when none runs),
    /// computed once per change: routing asks for them on every command.
    private var previousSets: [[Int]] = []
    private var nextSets: [[Int]] = []
    /// The id the next added member gets: ids are never reused, so a removed node's messages,
    /// hints and dots can never be mistaken for a newcomer's.
    public private(set) var nextMemberID: Int

    /// A placement of `memberNames` (ids 0, 1, ... in that order), all active, epoch 1.
    public init(memberNames: [String], partitionCount: Int, replicationFactor: Int) {
        precondition(!memberNames.isEmpty, "a data center has at least one node")
        precondition(partitionCount > 0 && replicationFactor > 0)
        precondition(Set(memberNames).count == memberNames.count, "member names are unique")
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.epoch = 1
        self.members = memberNames.enumerated().map { Member(id: $0.offset, name: $0.element, state: .active) }
        self.switched = Array(repeating: false, count: partitionCount)
        self.changeEpoch = 0
        self.nextMemberID = memberNames.count
        computeReplicaSets()
    }

    /// A placement from its stored parts (`PlacementCodec`), checked: members in ascending id
    /// order with unique ids below `nextMemberID` and unique names, `joining`/`leaving` members
    /// and switched partitions only during a change, a change epoch no later than the epoch.
    /// Returns nil for parts no placement could have.
    public init?(
        partitionCount: Int, replicationFactor: Int, epoch: UInt64, members: [Member], switched: [Bool], changeEpoch: UInt64,
        nextMemberID: Int
    ) {
        guard partitionCount > 0, replicationFactor > 0, epoch >= 1, !members.isEmpty, switched.count == partitionCount,
              changeEpoch <= epoch, zip(members, members.dropFirst()).allSatisfy({ $0.id < $1.id }),
              members.allSatisfy({ $0.id >= 0 && $0.id < nextMemberID }), Set(members.map(\.name)).count == members.count
        else { return nil }
        if changeEpoch == 0 {
            guard members.allSatisfy({ $0.state == .active }), !switched.contains(true) else { return nil }
        }
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.epoch = epoch
        self.members = members
        self.switched = switched
        self.changeEpoch = changeEpoch
        self.nextMemberID = nextMemberID
        computeReplicaSets()
    }

    /// Whether an add or remove is under way.
    public var isChanging: Bool { changeEpoch != 0 }

    /// The member with `id`, if it is part of the placement.
    public func member(_ id: Int) -> Member? { members.first { $0.id == id } }

    /// The members every node should watch (SWIM) and send to.
    public var memberIDs: [Int] { members.map(\.id) }

    // MARK: Replica sets

    /// The replicas before the current change: active and leaving members.
    public func previousReplicas(of partition: Int) -> [Int] {
        previousSets[partition]
    }

    /// The replicas after the current change: active and joining members.
    public func nextReplicas(of partition: Int) -> [Int] {
        nextSets[partition]
    }

    /// Whether the partition's replica set changes in the current change and has not switched.
    public func isMoving(_ partition: Int) -> Bool {
        isChanging && !switched[partition] && previousSets[partition] != nextSets[partition]
    }

    /// Who serves reads of the partition and whose acks count: the old replicas until the
    /// partition switched, the new ones after.
    public func owners(of partition: Int) -> [Int] {
        isChanging && !switched[partition] ? previousReplicas(of: partition) : nextReplicas(of: partition)
    }

    /// Who receives a write: the owners, and during a move the new replicas too (dual writes).
    /// Ascending order of score (primary first), old replicas first.
    public func writeTargets(of partition: Int) -> [Int] {
        guard isMoving(partition) else { return owners(of: partition) }
        let old = previousReplicas(of: partition)
        return old + nextReplicas(of: partition).filter { !old.contains($0) }
    }

    /// The replica sets whose acks a write needs: the owners; during a move both the old and
    /// the new set, so that after the switch a quorum of the new set holds every write
    /// acknowledged during the move.
    public func ackGroups(of partition: Int) -> [[Int]] {
        isMoving(partition) ? [previousReplicas(of: partition), nextReplicas(of: partition)] : [owners(of: partition)]
    }

    /// The partitions whose replica set changes in the current change, switched or not.
    public var changingPartitions: [Int] {
        guard isChanging else { return [] }
        return (0..<partitionCount).filter { previousReplicas(of: $0) != nextReplicas(of: $0) }
    }

    /// The top `replicationFactor` members by score among those whose state passes `included`.
    func replicas(of partition: Int, where included: (MemberState) -> Bool) -> [Int] {
        precondition(partition >= 0 && partition < partitionCount)
        var ranked: [(score: UInt64, id: Int)] = []
        ranked.reserveCapacity(members.count)
        for member in members where included(member.state) {
            ranked.append((Self.score(partition: partition, name: member.name), member.id))
        }
        // Ties (a 2^-64 chance) fall to the lower id, so the order is total and the same everywhere.
        ranked.sort { $0.score != $1.score ? $0.score > $1.score : $0.id < $1.id }
        return ranked.prefix(replicationFactor).map(\.id)
    }

    /// The rendezvous score of `name` for `partition`: FNV-1a of the name, mixed with the
    /// partition by SplitMix64's finalizer. Stable across builds and platforms (unlike `Hasher`).
    public static func score(partition: Int, name: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        var z = hash ^ (UInt64(truncatingIfNeeded: partition) &* 0x9E37_79B9_7F4A_7C15)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    // MARK: Changes (each returns the next epoch's placement)

    /// Starts adding a node: it joins, receives dual writes and streams, and owns each of its
    /// partitions once that partition switched.
    public func adding(name: String) throws(ChangeError) -> Placement {
        guard !isChanging else { throw .moveInProgress }
        guard !members.contains(where: { $0.name == name }) else { throw .memberExists(name) }
        var next = self
        next.members.append(Member(id: nextMemberID, name: name, state: .joining))
        next.nextMemberID += 1
        next.beginChange()
        return next
    }

    /// Starts removing a node: its partitions move to the members that replace it.
    public func removing(name: String) throws(ChangeError) -> Placement {
        guard !isChanging else { throw .moveInProgress }
        guard let index = members.firstIndex(where: { $0.name == name }) else { throw .noSuchMember(name) }
        guard members.count > 1 else { throw .lastMember }
        var next = self
        next.members[index].state = .leaving
        next.beginChange()
        return next
    }

    /// Commits that `partitions` finished moving (their new replicas caught up). When every
    /// changing partition has switched, the change ends in the same epoch: joining members
    /// become active and leaving members are dropped.
    public func switching(partitions: [Int], changeEpoch expected: UInt64) throws(ChangeError) -> Placement {
        guard isChanging, expected == changeEpoch else { throw .staleSwitch }
        for partition in partitions {
            guard partition >= 0, partition < partitionCount, isMoving(partition) else { throw .staleSwitch }
        }
        var next = self
        for partition in partitions { next.switched[partition] = true }
        next.epoch += 1
        if (0..<partitionCount).allSatisfy({ !next.isMoving($0) }) { next.endChange() }
        return next
    }

    private mutating func computeReplicaSets() {
        previousSets = (0..<partitionCount).map { partition in replicas(of: partition) { $0 != .joining } }
        nextSets = (0..<partitionCount).map { partition in replicas(of: partition) { $0 != .leaving } }
    }

    private mutating func beginChange() {
        computeReplicaSets()
        epoch += 1
        changeEpoch = epoch
        switched = Array(repeating: false, count: partitionCount)
        // A change that moves no partition (a member that held none) ends at once.
        if (0..<partitionCount).allSatisfy({ !isMoving($0) }) { endChange() }
    }

    private mutating func endChange() {
        members.removeAll { $0.state == .leaving }
        for index in members.indices { members[index].state = .active }
        changeEpoch = 0
        switched = Array(repeating: false, count: partitionCount)
        computeReplicaSets()
    }

    public var description: String {
        let list = members.map { "\($0.id):\($0.name)\($0.state == .active ? "" : "(\($0.state))")" }
        return "placement epoch \(epoch) [\(list.joined(separator: " "))]\(isChanging ? " changing since \(changeEpoch)" : "")"
    }
}
