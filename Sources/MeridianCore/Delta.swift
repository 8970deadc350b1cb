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
