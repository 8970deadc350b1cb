/// One replicated write as it travels between data centers: the key's state after the write,
/// not the command, so that applying it is a merge (docs/REPLICATION.md, "What a delta carries").
public struct Delta: Equatable, Sendable {
    /// What the key holds after the write.
    public enum State: Equatable, Sendable {
        /// A string value or a tombstone, with both LWW stamps and the expiry.
        case register(DurableRecord)
        /// A counter of the `INCR` family.
        case counter(PNCounter)
    }

    public var dot: Dot
    /// The dot of the state this write replaced at its origin (nil: the key did not exist),
    /// for telling overwrites from concurrent writes.
    public var previousDot: Dot?
    public var key: [UInt8]
    public var state: State

    public init(dot: Dot, previousDot: Dot?, key: [UInt8], state: State) {
        self.dot = dot
        self.previousDot = previousDot
        self.key = key
        self.state = state
    }
}

/// How an incoming delta relates to the key's local state (docs/REPLICATION.md, "Conflicts").
/// The winner is always chosen by LWW; this only says whether the two writes were concurrent,
/// which is counted and kept for audit.
public enum DeltaRelation: Equatable, Sendable {
    /// The local state is this very write (a delta sent again).
    case duplicate
    /// The write replaced what this data center holds (or the key is new here).
    case overwrite
    /// The local state already replaced this write.
    case superseded
    /// Neither write knew of the other: a conflict.
    case concurrent

    /// The relation of an incoming write (`dot`, replacing `previous` at its origin) to the
    /// local state (`localDot`, which replaced `localPrevious`; nil when the key is unknown).
    /// One previous dot is enough because each origin's stream arrives in order.
    public static func of(incoming dot: Dot, previous: Dot?, localDot: Dot?, localPrevious: Dot?) -> DeltaRelation {
        guard let localDot else { return .overwrite }
        if localDot == dot { return .duplicate }
        if previous == localDot { return .overwrite }
        if localPrevious == dot { return .superseded }
        return .concurrent
    }
}
