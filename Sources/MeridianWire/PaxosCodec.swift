import MeridianPaxos

/// The byte form of the strong protocol's messages (docs/CONSISTENCY.md, "Messages"): the
/// payload of a `strong` peer frame. Little-endian integers, byte strings with a 32-bit
/// length; the first byte is the message kind. Decoding never reads past the payload and
/// refuses unknown kinds, so a damaged or hostile frame is an error, not a crash.
public enum PaxosCodec {
    public static func encode(_ message: PaxosMessage) -> [UInt8] {
        var writer = Writer()
        switch message {
        case .prepare(let p, let ballot, let fromSlot, let sentAt):
            writer.u8(1); writer.partition(p); writer.ballot(ballot); writer.u64(fromSlot); writer.i64(sentAt)
        case .promise(let p, let ballot, let accepted, let chosen, let applied, let sentAt, let part, let parts):
            writer.u8(2); writer.partition(p); writer.ballot(ballot)
            writer.u32(UInt32(accepted.count))
            for entry in accepted { writer.u64(entry.slot); writer.ballot(entry.ballot); writer.entry(entry.entry) }
            writer.chosen(chosen)
            writer.u64(applied); writer.i64(sentAt); writer.u32(UInt32(part)); writer.u32(UInt32(parts))
        case .accept(let p, let ballot, let slot, let entry, let chosenThrough, let truncateThrough, let sentAt):
            writer.u8(3); writer.partition(p); writer.ballot(ballot); writer.u64(slot); writer.entry(entry)
            writer.u64(chosenThrough); writer.u64(truncateThrough); writer.i64(sentAt)
        case .accepted(let p, let ballot, let slot, let applied, let sentAt):
            writer.u8(4); writer.partition(p); writer.ballot(ballot); writer.u64(slot); writer.u64(applied); writer.i64(sentAt)
        case .nack(let p, let ballot, let promised, let holder, let remaining, let behindFrom):
            writer.u8(5); writer.partition(p); writer.ballot(ballot); writer.ballot(promised)
            writer.u8(holder == nil ? 0 : 1); writer.u16(holder ?? 0); writer.i64(remaining)
            writer.u8(behindFrom == nil ? 0 : 1); writer.u64(behindFrom ?? 0)
        case .commit(let p, let entries, let chosenThrough, let truncateThrough):
            writer.u8(6); writer.partition(p); writer.chosen(entries); writer.u64(chosenThrough); writer.u64(truncateThrough)
        case .learned(let p, let applied):
            writer.u8(7); writer.partition(p); writer.u64(applied)
        case .learn(let p, let fromSlot):
            writer.u8(8); writer.partition(p); writer.u64(fromSlot)
        case .renew(let p, let ballot, let truncateThrough, let sentAt):
            writer.u8(9); writer.partition(p); writer.ballot(ballot); writer.u64(truncateThrough); writer.i64(sentAt)
        case .renewed(let p, let ballot, let applied, let sentAt):
            writer.u8(10); writer.partition(p); writer.ballot(ballot); writer.u64(applied); writer.i64(sentAt)
        case .release(let p, let ballot):
            writer.u8(13); writer.partition(p); writer.ballot(ballot)
        case .forward(let p, let request, let command):
            writer.u8(11); writer.partition(p); writer.request(request); writer.command(command)
        case .forwardReply(let request, let outcome):
            writer.u8(12); writer.request(request)
            switch outcome {
            case .reply(let reply): writer.u8(0); writer.reply(reply)
            case .notLeader: writer.u8(1)
            case .uncertain: writer.u8(2)
            }
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> PaxosMessage {
        var reader = WireReader(bytes)
        let message: PaxosMessage
        switch try reader.uint8() {
        case 1:
            message = .prepare(partition: try reader.partition(), ballot: try reader.ballot(), fromSlot: try reader.uint64(), sentAt: try reader.int64())
        case 2:
            let p = try reader.partition()
            let ballot = try reader.ballot()
            var accepted: [AcceptedEntry] = []
            for _ in 0..<(try reader.count()) {
                accepted.append(AcceptedEntry(slot: try reader.uint64(), ballot: try reader.ballot(), entry: try reader.entry()))
            }
            let chosen = try reader.chosen()
            let applied = try reader.uint64()
            let sentAt = try reader.int64()
            let part = Int(try reader.uint32())
            let parts = Int(try reader.uint32())
            message = .promise(partition: p, ballot: ballot, accepted: accepted, chosen: chosen, applied: applied, sentAt: sentAt, part: part, parts: parts)
        case 3:
            message = .accept(
                partition: try reader.partition(), ballot: try reader.ballot(), slot: try reader.uint64(), entry: try reader.entry(),
                chosenThrough: try reader.uint64(), truncateThrough: try reader.uint64(), sentAt: try reader.int64())
        case 4:
            message = .accepted(partition: try reader.partition(), ballot: try reader.ballot(), slot: try reader.uint64(), applied: try reader.uint64(), sentAt: try reader.int64())
        case 5:
            let p = try reader.partition()
            let ballot = try reader.ballot()
            let promised = try reader.ballot()
            let hasHolder = try reader.flag()
            let holder = try reader.uint16()
            let remaining = try reader.int64()
            let hasBehind = try reader.flag()
            let behind = try reader.uint64()
            message = .nack(partition: p, ballot: ballot, promised: promised, leaseHolder: hasHolder ? holder : nil, leaseRemainingMs: remaining, behindFrom: hasBehind ? behind : nil)
        case 6:
            message = .commit(partition: try reader.partition(), entries: try reader.chosen(), chosenThrough: try reader.uint64(), truncateThrough: try reader.uint64())
        case 7:
            message = .learned(partition: try reader.partition(), applied: try reader.uint64())
        case 8:
            message = .learn(partition: try reader.partition(), fromSlot: try reader.uint64())
        case 9:
            message = .renew(partition: try reader.partition(), ballot: try reader.ballot(), truncateThrough: try reader.uint64(), sentAt: try reader.int64())
        case 10:
            message = .renewed(partition: try reader.partition(), ballot: try reader.ballot(), applied: try reader.uint64(), sentAt: try reader.int64())
        case 11:
            message = .forward(partition: try reader.partition(), request: try reader.request(), command: try reader.command())
        case 12:
            let request = try reader.request()
            let outcome: ForwardOutcome
            switch try reader.uint8() {
            case 0: outcome = .reply(try reader.reply(depth: 0))
            case 1: outcome = .notLeader
            case 2: outcome = .uncertain
            case let other: throw .malformed("unknown forward outcome \(other)")
            }
            message = .forwardReply(request: request, outcome: outcome)
        case 13:
            message = .release(partition: try reader.partition(), ballot: try reader.ballot())
        case let other:
            throw .malformed("unknown strong message kind \(other)")
        }
        guard reader.isAtEnd else { throw .malformed("bytes after the strong message") }
        return message
    }

    // MARK: - Durable forms (a voter's store: docs/CONSISTENCY.md, "Recovery")

    public static func encode(ballot: Ballot) -> [UInt8] {
        var writer = Writer()
        writer.ballot(ballot)
        return writer.bytes
    }

    public static func decodeBallot(_ bytes: [UInt8]) throws(WireError) -> Ballot {
        var reader = WireReader(bytes)
        let ballot = try reader.ballot()
        guard reader.isAtEnd else { throw .malformed("bytes after a ballot") }
        return ballot
    }

    /// An accepted entry without its slot (the store's key holds it).
    public static func encode(ballot: Ballot, entry: StrongEntry) -> [UInt8] {
        var writer = Writer()
        writer.ballot(ballot)
        writer.entry(entry)
        return writer.bytes
    }

    public static func decodeAccepted(slot: UInt64, _ bytes: [UInt8]) throws(WireError) -> AcceptedEntry {
        var reader = WireReader(bytes)
        let accepted = AcceptedEntry(slot: slot, ballot: try reader.ballot(), entry: try reader.entry())
        guard reader.isAtEnd else { throw .malformed("bytes after an accepted entry") }
        return accepted
    }

    /// A learner's snapshot of its applied state (log compaction), with the slot it is at.
    public static func encode(snapshotAt slot: UInt64, _ snapshot: StrongStateSnapshot) -> [UInt8] {
        var writer = Writer()
        writer.u64(slot)
        writer.i64(snapshot.timeMs)
        writer.u32(UInt32(snapshot.records.count))
        for item in snapshot.records {
            writer.blob(item.key); writer.blob(item.record.value)
            writer.flag(item.record.expiresAtMs != nil); writer.i64(item.record.expiresAtMs ?? 0); writer.u64(item.record.version)
        }
        writer.u32(UInt32(snapshot.locks.count))
        for item in snapshot.locks {
            writer.blob(item.name); writer.u64(item.lock.token); writer.blob(item.lock.owner)
            writer.i64(item.lock.expiresAtMs); writer.flag(item.lock.held)
        }
        writer.u32(UInt32(snapshot.recent.count))
        for item in snapshot.recent { writer.request(item.request); writer.i64(item.timeMs); writer.reply(item.reply) }
        return writer.bytes
    }

    public static func decodeSnapshot(_ bytes: [UInt8]) throws(WireError) -> (slot: UInt64, snapshot: StrongStateSnapshot) {
        var reader = WireReader(bytes)
        let slot = try reader.uint64()
        let timeMs = try reader.int64()
        var records: [StrongStateSnapshot.KeyRecord] = []
        for _ in 0..<(try reader.count()) {
            let key = try reader.blob()
            let value = try reader.blob()
            let hasExpiry = try reader.flag()
            let expiry = try reader.int64()
            records.append(.init(key: key, record: .init(value: value, expiresAtMs: hasExpiry ? expiry : nil, version: try reader.uint64())))
        }
        var locks: [StrongStateSnapshot.NamedLock] = []
        for _ in 0..<(try reader.count()) {
            let name = try reader.blob()
            let token = try reader.uint64()
            let owner = try reader.blob()
            let expiry = try reader.int64()
            locks.append(.init(name: name, lock: .init(token: token, owner: owner, expiresAtMs: expiry, held: try reader.flag())))
        }
        var recent: [StrongStateSnapshot.Remembered] = []
        for _ in 0..<(try reader.count()) {
            recent.append(.init(request: try reader.request(), timeMs: try reader.int64(), reply: try reader.reply(depth: 0)))
        }
        guard reader.isAtEnd else { throw .malformed("bytes after a snapshot") }
        return (slot, StrongStateSnapshot(records: records, locks: locks, timeMs: timeMs, recent: recent))
    }

    public static func encode(entry: StrongEntry) -> [UInt8] {
        var writer = Writer()
        writer.entry(entry)
        return writer.bytes
    }

    public static func decodeEntry(_ bytes: [UInt8]) throws(WireError) -> StrongEntry {
        var reader = WireReader(bytes)
        let entry = try reader.entry()
        guard reader.isAtEnd else { throw .malformed("bytes after an entry") }
        return entry
    }

    typealias Writer = WireWriter
}

/// The strong protocol's values in byte form.
extension WireWriter {
    mutating func partition(_ value: Int) { u32(UInt32(value)) }
    mutating func ballot(_ value: Ballot) { u64(value.round); u16(value.voter) }
    mutating func request(_ value: RequestID) { u16(value.origin); u64(value.sequence) }

    mutating func chosen(_ entries: [ChosenEntry]) {
        u32(UInt32(entries.count))
        for chosen in entries { u64(chosen.slot); entry(chosen.entry) }
    }

    mutating func entry(_ value: StrongEntry) {
        request(value.request)
        i64(value.timeMs)
        if let command = value.command {
            u8(1)
            self.command(command)
        } else {
            u8(0)
        }
    }

    mutating func command(_ value: StrongCommand) {
        flag(value.isTransaction)
        u32(UInt32(value.operations.count))
        for operation in value.operations { self.operation(operation) }
        u32(UInt32(value.watched.count))
        for watched in value.watched { blob(watched.key); u64(watched.version) }
    }

    mutating func operation(_ value: StrongOperation) {
        switch value {
        case .get(let key): u8(1); blob(key)
        case .exists(let key): u8(2); blob(key)
        case .timeToLive(let key): u8(3); blob(key)
        case .set(let key, let value, let options):
            u8(4); blob(key); blob(value)
            switch options.condition {
            case .always: u8(0)
            case .ifAbsent: u8(1)
            case .ifPresent: u8(2)
            case .ifEqual(let old): u8(3); blob(old)
            }
            switch options.expiry {
            case .none: u8(0)
            case .keep: u8(1)
            case .afterMs(let ms): u8(2); i64(ms)
            }
            flag(options.fence != nil); u64(options.fence ?? 0)
            flag(options.returnPrevious)
        case .delete(let key): u8(5); blob(key)
        case .incrementBy(let key, let amount): u8(6); blob(key); i64(amount)
        case .expire(let key, let ttl): u8(7); blob(key); flag(ttl != nil); i64(ttl ?? 0)
        case .lock(let name, let ttl, let owner): u8(8); blob(name); i64(ttl); blob(owner)
        case .unlock(let name, let token): u8(9); blob(name); u64(token)
        case .version(let key): u8(10); blob(key)
        }
    }

    mutating func reply(_ value: StrongReply) {
        switch value {
        case .ok: u8(0)
        case .null: u8(1)
        case .bulk(let bytes): u8(2); blob(bytes)
        case .integer(let number): u8(3); i64(number)
        case .error(let message): u8(4); blob(Array(message.utf8))
        case .array(let items): u8(5); u32(UInt32(items.count)); for item in items { reply(item) }
        case .nullArray: u8(6)
        }
    }
}

/// The strong protocol's values.
extension WireReader {
    mutating func partition() throws(WireError) -> Int { Int(try uint32()) }
    mutating func ballot() throws(WireError) -> Ballot { Ballot(round: try uint64(), voter: try uint16()) }
    mutating func request() throws(WireError) -> RequestID { RequestID(origin: try uint16(), sequence: try uint64()) }

    mutating func chosen() throws(WireError) -> [ChosenEntry] {
        var entries: [ChosenEntry] = []
        for _ in 0..<(try count()) { entries.append(ChosenEntry(slot: try uint64(), entry: try entry())) }
        return entries
    }

    mutating func entry() throws(WireError) -> StrongEntry {
        let request = try request()
        let timeMs = try int64()
        let command = try flag() ? try self.command() : nil
        return StrongEntry(request: request, timeMs: timeMs, command: command)
    }

    mutating func command() throws(WireError) -> StrongCommand {
        let isTransaction = try flag()
        var operations: [StrongOperation] = []
        for _ in 0..<(try count()) { operations.append(try operation()) }
        var watched: [WatchedKey] = []
        for _ in 0..<(try count()) { watched.append(WatchedKey(key: try blob(), version: try uint64())) }
        guard !operations.isEmpty || isTransaction else { throw .malformed("a command without operations") }
        if isTransaction { return StrongCommand(transaction: operations, watched: watched) }
        guard operations.count == 1, watched.isEmpty else { throw .malformed("a plain command has one operation") }
        return StrongCommand(operations[0])
    }

    mutating func operation() throws(WireError) -> StrongOperation {
        switch try uint8() {
        case 1: return .get(key: try blob())
        case 2: return .exists(key: try blob())
        case 3: return .timeToLive(key: try blob())
        case 4:
            let key = try blob()
            let value = try blob()
            var options = SetOptions()
            switch try uint8() {
            case 0: options.condition = .always
            case 1: options.condition = .ifAbsent
            case 2: options.condition = .ifPresent
            case 3: options.condition = .ifEqual(try blob())
            case let other: throw .malformed("SET condition \(other)")
            }
            switch try uint8() {
            case 0: options.expiry = .none
            case 1: options.expiry = .keep
            case 2: options.expiry = .afterMs(try int64())
            case let other: throw .malformed("SET expiry \(other)")
            }
            let hasFence = try flag()
            let fence = try uint64()
            options.fence = hasFence ? fence : nil
            options.returnPrevious = try flag()
            return .set(key: key, value: value, options: options)
        case 5: return .delete(key: try blob())
        case 6: return .incrementBy(key: try blob(), amount: try int64())
        case 7:
            let key = try blob()
            let hasTTL = try flag()
            let ttl = try int64()
            return .expire(key: key, ttlMs: hasTTL ? ttl : nil)
        case 8: return .lock(name: try blob(), ttlMs: try int64(), owner: try blob())
        case 9: return .unlock(name: try blob(), token: try uint64())
        case 10: return .version(key: try blob())
        case let other: throw .malformed("unknown strong operation \(other)")
        }
    }

    mutating func reply(depth: Int) throws(WireError) -> StrongReply {
        guard depth < 8 else { throw .malformed("reply nested too deep") }
        switch try uint8() {
        case 0: return .ok
        case 1: return .null
        case 2: return .bulk(try blob())
        case 3: return .integer(try int64())
        case 4: return .error(String(decoding: try blob(), as: UTF8.self))
        case 5:
            var items: [StrongReply] = []
            for _ in 0..<(try count()) { items.append(try reply(depth: depth + 1)) }
            return .array(items)
        case 6: return .nullArray
        case let other: throw .malformed("unknown reply kind \(other)")
        }
    }
}
