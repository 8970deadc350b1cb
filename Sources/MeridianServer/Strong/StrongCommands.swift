import MeridianCore
import MeridianPaxos
import MeridianRESP
import NIOCore

/// A reply that comes later: the connection calls `start` and sends what it is handed as this
/// command's reply, in order with the rest of its replies.
public struct DeferredReply: Sendable {
    /// The reply, and a change to the connection's executor made when the reply is sent
    /// (WATCH records the versions it read).
    public typealias Completion = @Sendable (ByteBuffer, (@Sendable (inout CommandExecutor) -> Void)?) -> Void
    public let start: @Sendable (@escaping Completion) -> Void
}

/// Commands on strong keys (docs/CONSISTENCY.md, "Commands"): translated into a
/// `StrongCommand`, committed (or read) through the key's partition by the strong engine, and
/// answered when the engine says how it ended.
extension CommandExecutor {
    /// Strong values, and whole strong commands (a transaction, a multi-key DEL), are bounded
    /// so that a Paxos message always fits a peer frame.
    static let strongValueBytesMax = 512 << 10
    static let strongCommandBytesMax = 1 << 20
    static let tooLarge = "ERR strong command too large: one Paxos entry holds at most 1 MiB (keys, values and operations together)"

    /// The commands strong keys support (named in the error for the others).
    static let strongCommandNames = "GET, SET (NX|XX, EX|PX|EXAT|PXAT|KEEPTTL, GET, IFEQ, FENCE), SETNX, SETEX, PSETEX, GETSET, GETDEL, DEL, UNLINK, EXISTS, TYPE, INCR, DECR, INCRBY, DECRBY, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST"

    /// How a reply of the engine becomes this command's RESP reply.
    enum StrongReplyShape: Sendable {
        case plain
        /// SETNX: OK → 1, nil → 0.
        case setIfAbsent
        /// TTL: milliseconds → seconds, rounded as Redis does.
        case seconds
        /// DEL/EXISTS of several keys: the sum of the per-key integers.
        case sum
        /// GETDEL: the first reply of the pair.
        case first
        /// TYPE: `string` or `none`.
        case type
    }

    /// Nil when no key of the command is strong; otherwise the command was answered (an error)
    /// or handed to the strong engine.
    mutating func routeStrong(_ id: CommandID, _ shape: CommandShape, _ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome? {
        if let outcome = routeTransaction(id, a, into: &out) { return outcome }
        if id == .lock || id == .unlock { return strongCommand(id, a, into: &out) }
        guard shape.firstKey > 0, database.namespaces.hasStrongKeys else {
            if transactionQueue != nil && shape.firstKey > 0 {
                refuseInTransaction("ERR '\(CommandTable.spec(id).name)' cannot be queued: MULTI takes only commands on strong keys", into: &out)
                return .keepOpen
            }
            return nil
        }
        let last = shape.lastKey < 0 ? a.count + Int(shape.lastKey) : Int(shape.lastKey)
        var strong = 0
        var total = 0
        var position = Int(shape.firstKey)
        while position <= last && position < a.count {
            let isStrong = a[position].withUnsafeReadableBytes { bytes in
                database.namespaces.isStrong(bytes, namespaceIndex: database.namespaces.index(of: bytes))
            }
            if isStrong { strong += 1 }
            total += 1
            position += Int(shape.keyStep)
        }
        if strong == 0 {
            guard transactionQueue == nil else {
                refuseInTransaction("ERR '\(CommandTable.spec(id).name)' cannot be queued: MULTI takes only commands on strong keys", into: &out)
                return .keepOpen
            }
            return nil
        }
        if strong != total {
            let message = "ERR '\(CommandTable.spec(id).name)' mixes strong and eventual keys: a command is either committed by Paxos or replicated eventually, not both"
            if transactionQueue != nil { refuseInTransaction(message, into: &out) } else { error(message, into: &out) }
            return .keepOpen
        }
        if id == .watch && transactionQueue == nil, let engine = server.strong { return watch(a, engine: engine, into: &out) }
        return strongCommand(id, a, into: &out)
    }

    /// A command on strong keys as operations, and how their replies make its reply.
    struct StrongTranslation {
        var operations: [StrongOperation]
        var shape: StrongReplyShape
        /// Several operations: one transaction entry.
        var isTransaction: Bool { operations.count > 1 }
    }

    private mutating func strongCommand(_ id: CommandID, _ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome {
        guard let engine = server.strong else {
            error("ERR strong consistency is not configured on this node: no namespace is strong, so LOCK and UNLOCK are not available", into: &out)
            return .keepOpen
        }
        if transactionQueue != nil {
            queueInTransaction(id, a, into: &out)
            return .keepOpen
        }
        guard let translation = translateStrong(id, a, engine: engine, into: &out) else { return .keepOpen }
        let partitions = Set(translation.operations.map { engine.partition(of: $0.key) })
        guard partitions.count == 1, let partition = partitions.first else {
            error(Self.crossSlot, into: &out)
            return .keepOpen
        }
        let operations = translation.operations
        let command = translation.isTransaction ? StrongCommand(transaction: operations) : StrongCommand(operations[0])
        guard command.approximateBytes <= Self.strongCommandBytesMax else {
            error(Self.tooLarge, into: &out)
            return .keepOpen
        }
        let version = resp
        let replyShape = translation.shape
        let timeoutMs = engine.configuration.timeoutMs
        return .replyLater(DeferredReply { reply in
            engine.submit(command, partition: partition) { result in
                var buffer = ByteBufferAllocator().buffer(capacity: 64)
                Self.encode(result, shape: replyShape, partition: partition, timeoutMs: timeoutMs, version: version, into: &buffer)
                reply(buffer, nil)
            }
        })
    }

    static let crossSlot = "CROSSSLOT Keys in request don't hash to the same slot (strong keys of one command must share a partition: use a {hash tag})"

    /// Nil after writing the error reply.
    mutating func translateStrong(_ id: CommandID, _ a: [ByteBuffer], engine: StrongEngine, into out: inout ByteBuffer) -> StrongTranslation? {
        let bytes = { (index: Int) -> [UInt8] in Array(a[index].readableBytesView) }
        let now = SystemClock.nowUnixMs()
        var operations: [StrongOperation] = []
        var shape = StrongReplyShape.plain
        switch id {
        case .get: operations = [.get(key: bytes(1))]
        case .type:
            operations = [.exists(key: bytes(1))]
            shape = .type
        case .exists, .del, .unlink:
            for index in 1..<a.count { operations.append(id == .exists ? .exists(key: bytes(index)) : .delete(key: bytes(index))) }
            if operations.count > 1 { shape = .sum }
        case .set:
            guard let options = strongSetOptions(a, nowUnixMs: now, into: &out) else { return nil }
            operations = [.set(key: bytes(1), value: bytes(2), options: options)]
        case .setnx:
            operations = [.set(key: bytes(1), value: bytes(2), options: SetOptions(condition: .ifAbsent))]
            shape = .setIfAbsent
        case .setex, .psetex:
            guard let amount = Self.parseInt64(a[2]) else {
                notInteger(into: &out)
                return nil
            }
            let unit: Int64 = id == .setex ? 1000 : 1
            guard amount > 0, amount <= Int64.max / 1000 else {
                error("ERR invalid expire time in '\(CommandTable.spec(id).name)' command", into: &out)
                return nil
            }
            operations = [.set(key: bytes(1), value: bytes(3), options: SetOptions(expiry: .afterMs(amount * unit)))]
        case .getset:
            operations = [.set(key: bytes(1), value: bytes(2), options: SetOptions(returnPrevious: true))]
        case .getdel:
            operations = [.get(key: bytes(1)), .delete(key: bytes(1))]
            shape = .first
        case .incr, .decr, .incrby, .decrby:
            var amount: Int64 = id == .decr ? -1 : 1
            if id == .incrby || id == .decrby {
                guard let parsed = Self.parseInt64(a[2]), !(id == .decrby && parsed == .min) else {
                    notInteger(into: &out)
                    return nil
                }
                amount = id == .decrby ? -parsed : parsed
            }
            operations = [.incrementBy(key: bytes(1), amount: amount)]
        case .expire, .pexpire, .expireat, .pexpireat:
            guard a.count == 3 else {
                error("ERR EXPIRE options (NX, XX, GT, LT) are not supported on strong keys", into: &out)
                return nil
            }
            guard let amount = Self.parseInt64(a[2]) else {
                notInteger(into: &out)
                return nil
            }
            let unit: Int64 = id == .expire || id == .expireat ? 1000 : 1
            let (scaled, overflow) = amount.multipliedReportingOverflow(by: unit)
            guard !overflow else {
                error("ERR invalid expire time in '\(CommandTable.spec(id).name)' command", into: &out)
                return nil
            }
            var ttl = scaled
            if id == .expireat || id == .pexpireat {
                let (relative, overflow) = scaled.subtractingReportingOverflow(now)
                guard !overflow else {
                    error("ERR invalid expire time in '\(CommandTable.spec(id).name)' command", into: &out)
                    return nil
                }
                ttl = relative
            }
            operations = [.expire(key: bytes(1), ttlMs: ttl)]
        case .persist: operations = [.expire(key: bytes(1), ttlMs: nil)]
        case .ttl, .pttl:
            operations = [.timeToLive(key: bytes(1))]
            if id == .ttl { shape = .seconds }
        case .lock:
            // LOCK name ttl-ms [owner]
            guard a.count == 3 || a.count == 4 else {
                error("ERR wrong number of arguments for 'lock' command", into: &out)
                return nil
            }
            guard let ttl = Self.parseInt64(a[2]), ttl > 0, ttl <= Self.lockTTLMaxMs else {
                error("ERR LOCK's TTL must be a number of milliseconds from 1 to \(Self.lockTTLMaxMs)", into: &out)
                return nil
            }
            guard a.count == 3 || a[3].readableBytes <= Limits.keyBytesMax else {
                error("ERR LOCK's owner is limited to \(Limits.keyBytesMax) bytes", into: &out)
                return nil
            }
            operations = [.lock(name: bytes(1), ttlMs: ttl, owner: a.count == 4 ? bytes(3) : [])]
        case .unlock:
            guard let token = Self.parseInt64(a[2]), token > 0 else {
                error("ERR UNLOCK's token must be the positive integer LOCK returned", into: &out)
                return nil
            }
            operations = [.unlock(name: bytes(1), token: UInt64(token))]
        default:
            error("ERR '\(CommandTable.spec(id).name)' is not supported on strong keys; strong keys support \(Self.strongCommandNames)", into: &out)
            return nil
        }
        for operation in operations {
            if case .set(_, let value, let options) = operation {
                var largest = value.count
                if case .ifEqual(let old) = options.condition { largest = max(largest, old.count) }
                if largest > Self.strongValueBytesMax {
                    error("ERR values of strong keys are limited to \(Self.strongValueBytesMax) bytes", into: &out)
                    return nil
                }
            }
        }
        return StrongTranslation(operations: operations, shape: shape)
    }

    static let lockTTLMaxMs: Int64 = 24 * 3_600_000
    /// SET's options that only strong keys take (the others are StringCommands').
    static let optionIFEQ: [UInt8] = Array("IFEQ".utf8)
    static let optionFENCE: [UInt8] = Array("FENCE".utf8)

    /// SET's options for a strong key: Redis's, plus `IFEQ old` (compare-and-set, Valkey's
    /// syntax) and `FENCE token`. Nil after writing the error reply.
    private mutating func strongSetOptions(_ a: [ByteBuffer], nowUnixMs: Int64, into out: inout ByteBuffer) -> SetOptions? {
        var options = SetOptions()
        var nx = false, xx = false, keepTTL = false
        var ifEqual: [UInt8]?
        var expiryOption: PendingExpiry?
        var index = 3
        while index < a.count {
            let option = a[index]
            if Self.matches(option, Self.optionNX) && !xx && ifEqual == nil {
                nx = true
            } else if Self.matches(option, Self.optionXX) && !nx && ifEqual == nil {
                xx = true
            } else if Self.matches(option, Self.optionGET) {
                options.returnPrevious = true
            } else if Self.matches(option, Self.optionKEEPTTL) && expiryOption == nil {
                keepTTL = true
            } else if Self.matches(option, Self.optionIFEQ) && !nx && !xx && index + 1 < a.count {
                ifEqual = Array(a[index + 1].readableBytesView)
                index += 1
            } else if Self.matches(option, Self.optionFENCE) && index + 1 < a.count {
                guard let token = Self.parseInt64(a[index + 1]), token > 0 else {
                    error("ERR FENCE's token must be the positive integer LOCK returned", into: &out)
                    return nil
                }
                options.fence = UInt64(token)
                index += 1
            } else if !keepTTL && Self.takeExpiryOption(a, at: index, into: &expiryOption) {
                index += 1
            } else {
                syntaxError(into: &out)
                return nil
            }
            index += 1
        }
        if let expiryOption {
            guard let at = parseExpiryOption(expiryOption.kind, expiryOption.argument, command: "set", nowUnixMs: nowUnixMs, into: &out) else { return nil }
            options.expiry = .afterMs(at - nowUnixMs)
        } else if keepTTL {
            options.expiry = .keep
        }
        options.condition = nx ? .ifAbsent : xx ? .ifPresent : ifEqual.map { .ifEqual($0) } ?? .always
        return options
    }

    static func encode(_ result: StrongResult, shape: StrongReplyShape, partition: Int, timeoutMs: Int64, version: RESPVersion, into out: inout ByteBuffer) {
        switch result {
        case .noQuorum:
            out.writeErrorReply("TRYAGAIN no quorum for partition \(partition) within the strong timeout (\(timeoutMs) ms): the command was not applied")
        case .uncertain:
            out.writeErrorReply("UNCERTAIN partition \(partition): no quorum confirmed the command within the strong timeout (\(timeoutMs) ms); it may or may not be applied (read the key, or use IFEQ / FENCE, before retrying)")
        case .reply(let reply):
            switch (shape, reply) {
            case (.setIfAbsent, .ok): out.writeIntegerReply(1)
            case (.setIfAbsent, .null): out.writeIntegerReply(0)
            case (.seconds, .integer(let ms)) where ms >= 0: out.writeIntegerReply(Int(ms / 1000 + (ms % 1000 >= 500 ? 1 : 0)))
            case (.sum, .array(let items)):
                out.writeIntegerReply(items.reduce(0) { total, item in
                    if case .integer(let value) = item { return total + Int(value) }
                    return total
                })
            case (.first, .array(let items)) where !items.isEmpty: encode(items[0], version: version, into: &out)
            case (.type, .integer(let exists)): out.writeSimpleString(exists == 1 ? "string" : "none")
            default: encode(reply, version: version, into: &out)
            }
        }
    }

    static func encode(_ reply: StrongReply, version: RESPVersion, into out: inout ByteBuffer) {
        switch reply {
        case .ok: out.writeSimpleString("OK")
        case .null: out.writeNull(version)
        case .bulk(let bytes): out.writeBulkString(bytes)
        case .integer(let value): out.writeIntegerReply(Int(value))
        case .error(let message): out.writeErrorReply(message)
        case .array(let items):
            out.writeArrayHeader(items.count)
            for item in items { encode(item, version: version, into: &out) }
        case .nullArray:
            if version == .v2 { out.writeString("*-1\r\n") } else { out.writeNull(version) }
        }
    }
}
