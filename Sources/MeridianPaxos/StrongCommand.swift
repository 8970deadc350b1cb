import MeridianCore

/// One operation of a strong command (docs/CONSISTENCY.md, "The log"). Writes are decided by
/// the partition's Paxos log; reads are answered from the applied state (at the lease holder)
/// or decided through the log like writes (anywhere else), so both are linearizable.
public enum StrongOperation: Equatable, Sendable {
    case get(key: [UInt8])
    case exists(key: [UInt8])
    /// Remaining time to live in ms: -2 no key, -1 no expiry.
    case timeToLive(key: [UInt8])
    case set(key: [UInt8], value: [UInt8], options: SetOptions)
    case delete(key: [UInt8])
    case incrementBy(key: [UInt8], amount: Int64)
    /// `ttlMs` nil: remove the expiry (`PERSIST`).
    case expire(key: [UInt8], ttlMs: Int64?)
    /// Grants the lock when it is free (never granted, unlocked, or past its TTL); the reply is
    /// the fencing token (the granting slot), or nil when it is held.
    case lock(name: [UInt8], ttlMs: Int64, owner: [UInt8])
    case unlock(name: [UInt8], token: UInt64)
    /// The key's version: the slot of its last write, 0 when it has none (what `WATCH` reads).
    case version(key: [UInt8])

    /// The key (or lock name) whose partition the operation belongs to.
    public var key: [UInt8] {
        switch self {
        case .get(let key), .exists(let key), .timeToLive(let key), .set(let key, _, _), .delete(let key),
             .incrementBy(let key, _), .expire(let key, _), .version(let key):
            key
        case .lock(let name, _, _), .unlock(let name, _):
            name
        }
    }

    public var isRead: Bool {
        switch self {
        case .get, .exists, .timeToLive, .version: true
        default: false
        }
    }
}

/// `SET`'s options that a strong write honours.
public struct SetOptions: Equatable, Sendable {
    public enum Condition: Equatable, Sendable {
        case always
        /// `NX`
        case ifAbsent
        /// `XX`
        case ifPresent
        /// `IFEQ old`: the current value must be exactly `old` (a missing key never matches).
        case ifEqual([UInt8])
    }

    public enum Expiry: Equatable, Sendable {
        /// No expiry (the default: a plain SET clears a previous TTL, as Redis does).
        case none
        case keep
        case afterMs(Int64)
    }

    public var condition: Condition = .always
    public var expiry: Expiry = .none
    /// `FENCE token`: the write applies only if `token` is at least the latest grant of the
    /// lock named by the key's hash tag (the whole key when it has none).
    public var fence: UInt64?
    /// `GET`: reply with the previous value.
    public var returnPrevious = false

    public init(condition: Condition = .always, expiry: Expiry = .none, fence: UInt64? = nil, returnPrevious: Bool = false) {
        self.condition = condition
        self.expiry = expiry
        self.fence = fence
        self.returnPrevious = returnPrevious
    }
}

/// A client's strong command: one operation, or a `MULTI`/`EXEC` block of them (all in one
/// partition) with the versions its `WATCH`ed keys had when they were watched.
public struct StrongCommand: Equatable, Sendable {
    public var operations: [StrongOperation]
    /// A transaction replies with an array (or a null array when a watched key changed).
    public var isTransaction: Bool
    /// Watched key → the version (slot of its last write, 0: never written) seen by `WATCH`.
    public var watched: [WatchedKey]

    public init(_ operation: StrongOperation) {
        self.operations = [operation]
        self.isTransaction = false
        self.watched = []
    }

    public init(transaction operations: [StrongOperation], watched: [WatchedKey] = []) {
        self.operations = operations
        self.isTransaction = true
        self.watched = watched
    }

    /// Answerable from the applied state by a lease holder, without a log entry.
    public var isReadOnly: Bool { watched.isEmpty && operations.allSatisfy(\.isRead) }
}

public struct WatchedKey: Equatable, Sendable {
    public var key: [UInt8]
    public var version: UInt64

    public init(key: [UInt8], version: UInt64) {
        self.key = key
        self.version = version
    }
}

/// Identifies a proposal: the voter whose client asked, and that voter's sequence number.
/// Sequence 0 is a `noop`.
public struct RequestID: Hashable, Sendable {
    public var origin: UInt16
    public var sequence: UInt64

    public init(origin: UInt16, sequence: UInt64) {
        self.origin = origin
        self.sequence = sequence
    }
}

/// What one slot of a partition's log chooses.
public struct StrongEntry: Equatable, Sendable {
    public var request: RequestID
    /// The proposer's wall clock when it proposed: expiry and lock TTLs are measured in these
    /// stamps (never decreasing along the log), so every learner decides alike.
    public var timeMs: Int64
    /// nil: a `noop` (a slot a new leader found empty).
    public var command: StrongCommand?

    public init(request: RequestID, timeMs: Int64, command: StrongCommand?) {
        self.request = request
        self.timeMs = timeMs
        self.command = command
    }

    public static func noop(timeMs: Int64) -> StrongEntry {
        StrongEntry(request: RequestID(origin: 0, sequence: 0), timeMs: timeMs, command: nil)
    }
}

/// A reply to a strong command, in RESP terms.
public indirect enum StrongReply: Equatable, Sendable {
    case ok
    case null
    case bulk([UInt8])
    case integer(Int64)
    case error(String)
    case array([StrongReply])
    /// A transaction whose watched key changed (`EXEC` → null array).
    case nullArray
}
