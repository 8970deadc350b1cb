/// What a voter must not forget across a restart, per partition: the promised ballot, the
/// accepted entries it does not know chosen, and (on a full voter) the chosen log. Changes are
/// produced by `PaxosReplica` as `DurableChange`s and must be durable before any message of
/// the same step is sent (write-through: Paxos Made Simple, §2.3, "an acceptor must remember
/// this information even if it fails and then restarts").
public enum DurableChange: Equatable, Sendable {
    case promised(partition: Int, ballot: Ballot)
    /// The ballot this node started a PREPARE with: a restarted proposer must never use a
    /// ballot again (its own acceptor may not have promised it).
    case proposed(partition: Int, ballot: Ballot)
    case accepted(partition: Int, AcceptedEntry)
    /// The chosen entry of a slot; it replaces the slot's accepted entry.
    case chosen(partition: Int, ChosenEntry)
    /// A witness forgets accepted entries every full voter has applied.
    case forgetAccepted(partition: Int, throughSlot: UInt64)
    /// A learner's applied state at `slot` (log compaction): a restart starts from it.
    case snapshot(partition: Int, slot: UInt64, state: StrongStateSnapshot)
    /// A learner forgets chosen entries every full voter has applied and its snapshot covers.
    case forgetChosen(partition: Int, throughSlot: UInt64)
}

public struct DurablePartition: Equatable, Sendable {
    public var promised = Ballot.zero
    public var proposed = Ballot.zero
    public var accepted: [UInt64: AcceptedEntry] = [:]
    public var chosen: [UInt64: StrongEntry] = [:]
    public var forgottenThrough: UInt64 = 0
    public var snapshot: (slot: UInt64, state: StrongStateSnapshot)?
    public var chosenForgottenThrough: UInt64 = 0

    public init() {}

    public static func == (lhs: DurablePartition, rhs: DurablePartition) -> Bool {
        lhs.promised == rhs.promised && lhs.proposed == rhs.proposed && lhs.accepted == rhs.accepted && lhs.chosen == rhs.chosen
            && lhs.forgottenThrough == rhs.forgottenThrough && lhs.snapshot?.slot == rhs.snapshot?.slot
            && lhs.snapshot?.state == rhs.snapshot?.state && lhs.chosenForgottenThrough == rhs.chosenForgottenThrough
    }
}

/// A voter's durable Paxos state: what the server reloads from its store, and what the
/// simulator keeps on a node's "disk" across crashes.
public struct PaxosDurableState: Equatable, Sendable {
    public var partitions: [Int: DurablePartition] = [:]

    public init() {}

    public mutating func apply(_ change: DurableChange) {
        switch change {
        case .promised(let partition, let ballot):
            partitions[partition, default: DurablePartition()].promised = ballot
        case .proposed(let partition, let ballot):
            partitions[partition, default: DurablePartition()].proposed = ballot
        case .accepted(let partition, let entry):
            partitions[partition, default: DurablePartition()].accepted[entry.slot] = entry
        case .chosen(let partition, let chosen):
            partitions[partition, default: DurablePartition()].chosen[chosen.slot] = chosen.entry
            partitions[partition]?.accepted[chosen.slot] = nil
        case .snapshot(let partition, let slot, let state):
            partitions[partition, default: DurablePartition()].snapshot = (slot, state)
        case .forgetChosen(let partition, let through):
            var state = partitions.removeValue(forKey: partition) ?? DurablePartition()
            state.chosen = state.chosen.filter { $0.key > through }
            state.chosenForgottenThrough = max(state.chosenForgottenThrough, through)
            partitions[partition] = state
        case .forgetAccepted(let partition, let through):
            var state = partitions[partition, default: DurablePartition()]
            state.accepted = state.accepted.filter { $0.key > through }
            state.forgottenThrough = max(state.forgottenThrough, through)
            partitions[partition] = state
        }
    }
}
