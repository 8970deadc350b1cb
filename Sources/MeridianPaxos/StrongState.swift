import MeridianCore

/// The applied state of one partition's strong keys and locks: what every learner computes by
/// applying the chosen entries in slot order. Deterministic: conditions (CAS, WATCH versions,
/// locks, fencing tokens) and expiry are decided from the entries alone, never from a local
/// clock, so every learner reaches the same state and the same replies.
public struct StrongState: Equatable, Sendable {
    public struct Record: Equatable, Sendable {
        public var value: [UInt8]
        public var expiresAtMs: Int64?
        /// The slot of the last write (what `WATCH` compares).
        public var version: UInt64

        public init(value: [UInt8], expiresAtMs: Int64?, version: UInt64) {
            self.value = value
            self.expiresAtMs = expiresAtMs
            self.version = version
        }
    }

    public struct Lock: Equatable, Sendable {
        /// The slot of the latest grant: fencing tokens strictly increase with every grant.
        public var token: UInt64
        public var owner: [UInt8]
        public var expiresAtMs: Int64
        public var held: Bool

        public init(token: UInt64, owner: [UInt8], expiresAtMs: Int64, held: Bool) {
            self.token = token
            self.owner = owner
            self.expiresAtMs = expiresAtMs
            self.held = held
        }
    }

    public private(set) var records: [[UInt8]: Record] = [:]
    public private(set) var locks: [[UInt8]: Lock] = [:]
    /// The largest entry stamp applied: the state's notion of "now".
    public private(set) var timeMs: Int64 = 0
    /// Requests applied within the last `requestMemoryMs` of entry time and their replies: a
    /// request chosen a second time (a retried proposal, a duplicated forward) is not applied
    /// again, and answers what it answered the first time.
    private var recentRequests: [RequestID: StrongReply] = [:]
    private var recentOrder: [RecentRequest] = []
    private var recentStart = 0
    /// Longer than any command's life (its timeout, plus the clock offset between proposers):
    /// duplicates are made only while a command is pending.
    public static let requestMemoryMs: Int64 = 10_000

    struct RecentRequest: Equatable, Sendable {
        var request: RequestID
        var timeMs: Int64
    }

    public init() {}

    /// Two states are equal when they hold the same keys, locks, time and remembered requests
    /// (however their internal buffers happen to be laid out).
    public static func == (lhs: StrongState, rhs: StrongState) -> Bool {
        lhs.records == rhs.records && lhs.locks == rhs.locks && lhs.timeMs == rhs.timeMs && lhs.snapshot().recent == rhs.snapshot().recent
    }

    /// Everything the state holds, as plain sorted values: what a compaction snapshot stores.
    public func snapshot() -> StrongStateSnapshot {
        StrongStateSnapshot(
            records: records.map { StrongStateSnapshot.KeyRecord(key: $0.key, record: $0.value) }.sorted { $0.key.lexicographicallyPrecedes($1.key) },
            locks: locks.map { StrongStateSnapshot.NamedLock(name: $0.key, lock: $0.value) }.sorted { $0.name.lexicographicallyPrecedes($1.name) },
            timeMs: timeMs,
            recent: recentOrder[recentStart...].compactMap { item in
                recentRequests[item.request].map { StrongStateSnapshot.Remembered(request: item.request, timeMs: item.timeMs, reply: $0) }
            })
    }

    /// The state a snapshot describes.
    public init(_ snapshot: StrongStateSnapshot) {
        for item in snapshot.records { records[item.key] = item.record }
        for item in snapshot.locks { locks[item.name] = item.lock }
        timeMs = snapshot.timeMs
        for item in snapshot.recent {
            recentRequests[item.request] = item.reply
            recentOrder.append(RecentRequest(request: item.request, timeMs: item.timeMs))
        }
    }

    /// Applies the entry chosen in `slot`; returns the reply its client gets.
    public mutating func apply(_ entry: StrongEntry, slot: UInt64) -> StrongReply {
        timeMs = max(timeMs, entry.timeMs)
        guard let command = entry.command else { return .ok }
        forgetOldRequests()
        if let earlier = recentRequests[entry.request] { return earlier }
        let reply = applyOnce(command, slot: slot)
        recentRequests[entry.request] = reply
        recentOrder.append(RecentRequest(request: entry.request, timeMs: timeMs))
        return reply
    }

    private mutating func applyOnce(_ command: StrongCommand, slot: UInt64) -> StrongReply {
        if command.isTransaction {
            for watched in command.watched where version(of: watched.key) != watched.version {
                return .nullArray
            }
            // All or nothing: a transaction whose operation fails is rolled back. Each operation
            // changes at most its own key's record and lock, so an undo list of those is enough
            // (a copy of the whole state would cost as much as the state).
            var undo: [(key: [UInt8], record: Record?, lock: Lock?)] = []
            var replies: [StrongReply] = []
            for operation in command.operations {
                undo.append((operation.key, records[operation.key], locks[operation.key]))
                let reply = execute(operation, slot: slot)
                if case .error = reply {
                    for saved in undo.reversed() {
                        records[saved.key] = saved.record
                        locks[saved.key] = saved.lock
                    }
                    return .error("EXECABORT transaction rolled back: \(Self.text(of: reply))")
                }
                replies.append(reply)
            }
            return .array(replies)
        }
        return execute(command.operations[0], slot: slot)
    }

    private mutating func forgetOldRequests() {
        while recentStart < recentOrder.count && recentOrder[recentStart].timeMs < timeMs - Self.requestMemoryMs {
            recentRequests[recentOrder[recentStart].request] = nil
            recentStart += 1
        }
        if recentStart > 1024 && recentStart * 2 > recentOrder.count {
            recentOrder.removeFirst(recentStart)
            recentStart = 0
        }
    }

    /// Answers a read-only command at `nowMs` (never earlier than the last applied stamp).
    public func read(_ command: StrongCommand, nowMs: Int64) -> StrongReply {
        var copy = self
        copy.timeMs = max(timeMs, nowMs)
        let replies = command.operations.map { copy.execute($0, slot: 0) }
        return command.isTransaction ? .array(replies) : replies[0]
    }

    /// The version `WATCH` records: the slot of the key's last write, 0 when it has none.
    public func version(of key: [UInt8]) -> UInt64 {
        guard let record = records[key] else { return 0 }
        if let expiry = record.expiresAtMs, expiry <= timeMs { return 0 }
        return record.version
    }

    private func live(_ key: [UInt8]) -> Record? {
        guard let record = records[key] else { return nil }
        if let expiry = record.expiresAtMs, expiry <= timeMs { return nil }
        return record
    }

    private static func text(of reply: StrongReply) -> String {
        if case .error(let message) = reply { return message }
        return ""
    }

    private mutating func execute(_ operation: StrongOperation, slot: UInt64) -> StrongReply {
        switch operation {
        case .get(let key):
            return live(key).map { .bulk($0.value) } ?? .null
        case .exists(let key):
            return .integer(live(key) == nil ? 0 : 1)
        case .version(let key):
            return .integer(Int64(truncatingIfNeeded: version(of: key)))
        case .timeToLive(let key):
            guard let record = live(key) else { return .integer(-2) }
            return .integer(record.expiresAtMs.map { $0.subtractingReportingOverflow(timeMs).overflow ? Int64.max : $0 - timeMs } ?? -1)
        case .set(let key, let value, let options):
            let current = live(key)
            if let token = options.fence {
                let name = Self.lockName(forKey: key)
                guard let lock = locks[name] else {
                    return .error("ERR no lock '\(String(decoding: name, as: UTF8.self))' was ever granted: FENCE needs its token")
                }
                if token < lock.token {
                    return .error("ERR stale fencing token \(token): lock '\(String(decoding: name, as: UTF8.self))' was granted again with token \(lock.token)")
                }
            }
            let previous: StrongReply = current.map { .bulk($0.value) } ?? .null
            let allowed: Bool
            switch options.condition {
            case .always: allowed = true
            case .ifAbsent: allowed = current == nil
            case .ifPresent: allowed = current != nil
            case .ifEqual(let expected): allowed = current?.value == expected
            }
            guard allowed else { return options.returnPrevious ? previous : .null }
            let expiry: Int64?
            switch options.expiry {
            case .none: expiry = nil
            case .keep: expiry = current?.expiresAtMs
            case .afterMs(let ttl): expiry = Self.after(timeMs, ttl)
            }
            records[key] = Record(value: value, expiresAtMs: expiry, version: slot)
            return options.returnPrevious ? previous : .ok
        case .delete(let key):
            guard live(key) != nil else {
                records[key] = nil
                return .integer(0)
            }
            records[key] = nil
            return .integer(1)
        case .incrementBy(let key, let amount):
            let current = live(key)
            var number: Int64 = 0
            if let current {
                guard let parsed = PNCounter.parseDecimal(current.value) else {
                    return .error("ERR value is not an integer or out of range")
                }
                number = parsed
            }
            let (sum, overflow) = number.addingReportingOverflow(amount)
            if overflow { return .error("ERR increment or decrement would overflow") }
            records[key] = Record(value: Array(String(sum).utf8), expiresAtMs: current?.expiresAtMs, version: slot)
            return .integer(sum)
        case .expire(let key, let ttlMs):
            guard var record = live(key) else { return .integer(0) }
            if let ttlMs {
                if ttlMs <= 0 {
                    records[key] = nil
                    return .integer(1)
                }
                record.expiresAtMs = Self.after(timeMs, ttlMs)
            } else {
                guard record.expiresAtMs != nil else { return .integer(0) }
                record.expiresAtMs = nil
            }
            record.version = slot
            records[key] = record
            return .integer(1)
        case .lock(let name, let ttlMs, let owner):
            if let lock = locks[name], lock.held, lock.expiresAtMs > timeMs { return .null }
            locks[name] = Lock(token: slot, owner: owner, expiresAtMs: Self.after(timeMs, ttlMs), held: true)
            return .integer(Int64(slot))
        case .unlock(let name, let token):
            guard var lock = locks[name], lock.held, lock.token == token, lock.expiresAtMs > timeMs else { return .integer(0) }
            lock.held = false
            locks[name] = lock
            return .integer(1)
        }
    }

    /// `time + duration`, saturating: an entry's TTL comes from a client (or a peer) and must
    /// never trap the state machine (every learner would trap on the same entry).
    static func after(_ time: Int64, _ duration: Int64) -> Int64 {
        let (sum, overflow) = time.addingReportingOverflow(duration)
        return overflow ? (duration > 0 ? Int64.max : Int64.min) : sum
    }

    /// The lock a `FENCE`d write of `key` is checked against: the one named by the key's hash
    /// tag, or by the key itself when it has none. It is in the key's partition, hence in the
    /// same log, so the check is decided at apply time like everything else.
    public static func lockName(forKey key: [UInt8]) -> [UInt8] {
        key.withUnsafeBytes { Array(Partitioner.hashedPart(of: $0)) }
    }
}

/// A `StrongState` as plain values, sorted: what a learner writes when it compacts its log
/// (docs/CONSISTENCY.md, "Log compaction") and reloads at restart.
public struct StrongStateSnapshot: Equatable, Sendable {
    public struct KeyRecord: Equatable, Sendable {
        public var key: [UInt8]
        public var record: StrongState.Record

        public init(key: [UInt8], record: StrongState.Record) {
            self.key = key
            self.record = record
        }
    }

    public struct NamedLock: Equatable, Sendable {
        public var name: [UInt8]
        public var lock: StrongState.Lock

        public init(name: [UInt8], lock: StrongState.Lock) {
            self.name = name
            self.lock = lock
        }
    }

    public struct Remembered: Equatable, Sendable {
        public var request: RequestID
        public var timeMs: Int64
        public var reply: StrongReply

        public init(request: RequestID, timeMs: Int64, reply: StrongReply) {
            self.request = request
            self.timeMs = timeMs
            self.reply = reply
        }
    }

    public var records: [KeyRecord]
    public var locks: [NamedLock]
    public var timeMs: Int64
    public var recent: [Remembered]

    public init(records: [KeyRecord], locks: [NamedLock], timeMs: Int64, recent: [Remembered]) {
        self.records = records
        self.locks = locks
        self.timeMs = timeMs
        self.recent = recent
    }
}
