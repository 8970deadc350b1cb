/// A Paxos ballot: ordered by round, then by the proposing voter, so two proposers never share
/// one (Paxos Made Simple, §2.2).
public struct Ballot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var round: UInt64
    public var voter: UInt16

    public init(round: UInt64, voter: UInt16) {
        self.round = round
        self.voter = voter
    }

    public static let zero = Ballot(round: 0, voter: 0)

    public static func < (lhs: Ballot, rhs: Ballot) -> Bool {
        (lhs.round, lhs.voter) < (rhs.round, rhs.voter)
    }

    public var description: String { "\(round).\(voter)" }
}

/// An entry a voter accepted and has not yet forgotten.
public struct AcceptedEntry: Equatable, Sendable {
    public var slot: UInt64
    public var ballot: Ballot
    public var entry: StrongEntry

    public init(slot: UInt64, ballot: Ballot, entry: StrongEntry) {
        self.slot = slot
        self.ballot = ballot
        self.entry = entry
    }
}

public struct ChosenEntry: Equatable, Sendable {
    public var slot: UInt64
    public var entry: StrongEntry

    public init(slot: UInt64, entry: StrongEntry) {
        self.slot = slot
        self.entry = entry
    }
}

/// How a command that went to another node ended.
public enum ForwardOutcome: Equatable, Sendable {
    case reply(StrongReply)
    /// The node could not lead the partition: the command was not proposed; retry elsewhere.
    case notLeader
    /// The command may or may not have been chosen.
    case uncertain
}

/// The messages of the strong protocol (docs/CONSISTENCY.md, "Messages"). `sentAt` fields are
/// the sender's own monotonic clock, echoed back unchanged: a leader counts its lease from the
/// moment it sent the request a voter granted it on, never from the voter's clock.
public enum PaxosMessage: Equatable, Sendable {
    case prepare(partition: Int, ballot: Ballot, fromSlot: UInt64, sentAt: Int64)
    /// `chosen`: entries the voter knows chosen at or above `fromSlot`; `accepted`: the ones it
    /// accepted and does not know chosen. A promise too large for one frame comes in `parts`
    /// messages (`part` is 0-based); it counts once every part has arrived.
    case promise(partition: Int, ballot: Ballot, accepted: [AcceptedEntry], chosen: [ChosenEntry], applied: UInt64, sentAt: Int64, part: Int, parts: Int)
    case accept(partition: Int, ballot: Ballot, slot: UInt64, entry: StrongEntry, chosenThrough: UInt64, truncateThrough: UInt64, sentAt: Int64)
    case accepted(partition: Int, ballot: Ballot, slot: UInt64, applied: UInt64, sentAt: Int64)
    /// A refusal: `promised` is the ballot the voter holds; `leaseHolder` the voter it granted
    /// a lease that is still running (and for how many ms on its clock); `behindFrom` set when
    /// the proposer must learn chosen entries first.
    case nack(partition: Int, ballot: Ballot, promised: Ballot, leaseHolder: UInt16?, leaseRemainingMs: Int64, behindFrom: UInt64?)
    /// Chosen entries for learners (full voters); `truncateThrough` tells a witness what every
    /// full voter has applied, so it can forget those accepted entries.
    case commit(partition: Int, entries: [ChosenEntry], chosenThrough: UInt64, truncateThrough: UInt64)
    /// A learner that applied through `applied` (answers `commit`).
    case learned(partition: Int, applied: UInt64)
    case learn(partition: Int, fromSlot: UInt64)
    /// A lease holder's keep-alive: a voter still promised `ballot` extends its grant.
    case renew(partition: Int, ballot: Ballot, truncateThrough: UInt64, sentAt: Int64)
    case renewed(partition: Int, ballot: Ballot, applied: UInt64, sentAt: Int64)
    /// A leader hands the partition over: voters end the lease they granted `ballot`.
    case release(partition: Int, ballot: Ballot)
    case forward(partition: Int, request: RequestID, command: StrongCommand)
    case forwardReply(request: RequestID, outcome: ForwardOutcome)

    public var partition: Int? {
        switch self {
        case .prepare(let p, _, _, _), .promise(let p, _, _, _, _, _, _, _), .accept(let p, _, _, _, _, _, _),
             .accepted(let p, _, _, _, _), .nack(let p, _, _, _, _, _), .commit(let p, _, _, _),
             .learned(let p, _), .learn(let p, _), .renew(let p, _, _, _), .renewed(let p, _, _, _),
             .release(let p, _), .forward(let p, _, _):
            p
        case .forwardReply:
            nil
        }
    }
}
