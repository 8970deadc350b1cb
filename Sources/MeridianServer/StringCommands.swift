import MeridianCore
import MeridianRESP
import NIOCore

/// String commands: GET/SET and friends, counters, ranges. Semantics and error strings
/// follow Redis 7.
extension CommandExecutor {
    // MARK: Shared pieces

    /// The namespace index of a key.
    @inline(__always)
    func namespaceIndex(of key: ByteBuffer) -> Int {
        key.withUnsafeReadableBytes { database.namespaces.index(of: $0) }
    }

    /// The expiry a newly created key gets when the command gives none: its namespace's
    /// `default_ttl`, or none.
    @inline(__always)
    func defaultExpiry(namespaceIndex: Int, nowUnixMs: Int64) -> Int64 {
        // The loader bounds default_ttl, so this addition cannot overflow for any real clock.
        if let ttl = database.namespaces.namespaces[namespaceIndex].defaultTTLMs {
            return Self.addingWithoutOverflow(nowUnixMs, ttl) ?? Entry.noExpiry
        }
        return Entry.noExpiry
    }

    /// Writes `value` under `key`: replaces the value of a live key (keeping or replacing its
    /// expiry) or inserts a new key. An expiry at or before now deletes the key instead, as
    /// Redis does for `SET ... PXAT <past>`.
    static func store(
        _ keyspace: inout Keyspace, key: ByteBuffer, existing: Int?, value: [UInt8], expiry: ExpiryChange,
        namespaceIndex: Int, defaultExpiryUnixMs: Int64, stamp: LWWStamp, nowUnixMs: Int64,
        encoding: EncodingHint = .byContent
    ) {
        let expiryUnixMs: Int64
        switch expiry {
        case .keep: expiryUnixMs = existing.map { keyspace.entry(at: $0).expiryUnixMs } ?? defaultExpiryUnixMs
        case .set(let at): expiryUnixMs = at
        case .clear: expiryUnixMs = defaultExpiryUnixMs
        }
        if expiryUnixMs != Entry.noExpiry && expiryUnixMs <= nowUnixMs {
            if let existing { keyspace.remove(slot: existing) }
            return
        }
        if let slot = existing {
            keyspace.setValue(at: slot, value, stamp: stamp)
            if expiry != .keep { keyspace.setExpiry(at: slot, unixMs: expiryUnixMs, stamp: stamp) }
            keyspace.touch(slot: slot, nowUnixMs: nowUnixMs)
        } else {
            var entry = Entry(
                value: value, valueStamp: stamp, expiryUnixMs: expiryUnixMs, expiryStamp: stamp,
                lastAccessUnixMs: nowUnixMs, namespaceIndex: namespaceIndex)
            entry.encoding = encoding
            keyspace.insert(Key(borrowing: key), entry: entry)
        }
    }

    /// How a write treats the key's expiry.
    enum ExpiryChange: Equatable {
        /// KEEPTTL (or a command that never touches the TTL, such as APPEND).
        case keep
        /// A new absolute expiry.
        case set(Int64)
        /// A plain SET: the old TTL goes; a new key gets its namespace's default TTL.
        case clear
    }

    /// Replies with a value read from the keyspace, or null, counting a hit or a miss.
    mutating func replyValue(_ value: [UInt8]?, into out: inout ByteBuffer) {
        if let value {
            hitsTally += 1
            out.writeBulkString(value)
        } else {
            missesTally += 1
            out.writeNull(resp)
        }
    }

    /// Looks a key up for reading, counting a hit or a miss and touching it for LRU.
    mutating func readValue(_ key: ByteBuffer, nowUnixMs: Int64) -> [UInt8]? {
        let value: [UInt8]? = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: nowUnixMs) else { return nil }
            keyspace.touch(slot: slot, nowUnixMs: nowUnixMs)
            return keyspace.entry(at: slot).value
        }
        if value == nil { missesTally += 1 } else { hitsTally += 1 }
        return value
    }

    /// Parses the expiry options shared by SET and GETEX into an absolute time.
    /// Returns nil after writing the error reply.
    mutating func parseExpiryOption(
        _ option: ExpiryOption, _ argument: ByteBuffer, command: String, nowUnixMs: Int64, into out: inout ByteBuffer
    ) -> Int64? {
        guard let amount = Self.parseInt64(argument) else {
            notInteger(into: &out)
            return nil
        }
        guard amount > 0 else {
            error("ERR invalid expire time in '\(command)' command", into: &out)
            return nil
        }
        let absolute: Int64?
        switch option {
        case .ex: absolute = Self.addingWithoutOverflow(nowUnixMs, Self.multiplyWithoutOverflow(amount, 1000))
        case .px: absolute = Self.addingWithoutOverflow(nowUnixMs, amount)
        case .exat: absolute = Self.multiplyWithoutOverflow(amount, 1000)
        case .pxat: absolute = amount
        }
        guard let absolute else {
            error("ERR invalid expire time in '\(command)' command", into: &out)
            return nil
        }
        return absolute
    }

    enum ExpiryOption { case ex, px, exat, pxat }

    static func multiplyWithoutOverflow(_ a: Int64, _ b: Int64) -> Int64? {
        let (result, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : result
    }

    static func addingWithoutOverflow(_ a: Int64?, _ b: Int64?) -> Int64? {
        guard let a, let b else { return nil }
        let (result, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : result
    }

    // MARK: GET / SET family

    mutating func get(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let hit: Bool = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return false }
            keyspace.touch(slot: slot, nowUnixMs: now)
            // Copy straight from the entry into the reply while the shard is locked.
            keyspace.withValue(at: slot) { out.writeBulkString($0) }
            return true
        }
        if hit {
            hitsTally += 1
        } else {
            missesTally += 1
            out.writeNull(resp)
        }
    }

    static let optionNX: [UInt8] = Array("NX".utf8)
    static let optionXX: [UInt8] = Array("XX".utf8)
    private static let optionGT: [UInt8] = Array("GT".utf8)
    private static let optionLT: [UInt8] = Array("LT".utf8)
    static let optionGET: [UInt8] = Array("GET".utf8)
    private static let optionEX: [UInt8] = Array("EX".utf8)
    private static let optionPX: [UInt8] = Array("PX".utf8)
    private static let optionEXAT: [UInt8] = Array("EXAT".utf8)
    private static let optionPXAT: [UInt8] = Array("PXAT".utf8)
    static let optionKEEPTTL: [UInt8] = Array("KEEPTTL".utf8)
    private static let optionPERSIST: [UInt8] = Array("PERSIST".utf8)

    /// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
    mutating func set(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard checkValue(a[2], into: &out) else { return }
        let now = SystemClock.nowUnixMs()
        // Redis's rules: an option may repeat (the last expiry wins), conflicting ones are a
        // syntax error, and the expiry's number is read only once every option parsed.
        var nx = false, xx = false, returnOld = false, keepTTL = false
        var expiryOption: PendingExpiry?
        var index = 3
        while index < a.count {
            let option = a[index]
            if Self.matches(option, Self.optionNX) && !xx {
                nx = true
            } else if Self.matches(option, Self.optionXX) && !nx {
                xx = true
            } else if Self.matches(option, Self.optionGET) {
                returnOld = true
            } else if Self.matches(option, Self.optionKEEPTTL) && expiryOption == nil {
                keepTTL = true
            } else if !keepTTL && Self.takeExpiryOption(a, at: index, into: &expiryOption) {
                index += 1
            } else {
                syntaxError(into: &out)
                return
            }
            index += 1
        }
        var expiry: Int64?
        if let expiryOption {
            guard let at = parseExpiryOption(expiryOption.kind, expiryOption.argument, command: "set", nowUnixMs: now, into: &out) else { return }
            expiry = at
        }
        let change: ExpiryChange = keepTTL ? .keep : expiry.map { .set($0) } ?? .clear
        let condition: WriteCondition = nx ? .ifAbsent : xx ? .ifPresent : .always
        let (old, written) = writeValue(key: a[1], value: a[2], condition: condition, expiry: change, returnOld: returnOld, nowUnixMs: now)
        if returnOld {
            replyValue(old, into: &out)
        } else if written {
            out.writeSimpleString("OK")
        } else {
            out.writeNull(resp)  // NX or XX refused the write
        }
    }

    /// When a SET-like write applies.
    enum WriteCondition { case always, ifAbsent, ifPresent }

    /// The write behind SET, SETNX, SETEX and GETSET: stores `value` under `key` if `condition`
    /// holds. Returns the previous value (only when `returnOld`, so a plain SET copies nothing)
    /// and whether the write happened.
    mutating func writeValue(
        key: ByteBuffer, value: ByteBuffer, condition: WriteCondition, expiry: ExpiryChange,
        returnOld: Bool = false, nowUnixMs now: Int64
    ) -> (old: [UInt8]?, written: Bool) {
        let bytes = Array(value.readableBytesView)
        let namespace = namespaceIndex(of: key)
        let defaultExpiry = defaultExpiry(namespaceIndex: namespace, nowUnixMs: now)
        let stamp = database.stamp(nowUnixMs: now)
        return database.withShard(of: key) { keyspace in
            let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now)
            let old = returnOld ? slot.map { keyspace.entry(at: $0).value } : nil
            switch condition {
            case .ifAbsent where slot != nil, .ifPresent where slot == nil: return (old, false)
            default: break
            }
            Self.store(
                &keyspace, key: key, existing: slot, value: bytes, expiry: expiry, namespaceIndex: namespace,
                defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now)
            return (old, true)
        }
    }

    /// An expiry option seen while parsing; its number is read once all options are parsed.
    typealias PendingExpiry = (kind: ExpiryOption, argument: ByteBuffer)

    /// Takes `EX|PX|EXAT|PXAT <n>` at `index` into `pending` if it is one and does not conflict
    /// with an earlier, different expiry option (a repeat of the same one replaces it, as in
    /// Redis). Returns false when the argument is not an acceptable expiry option.
    static func takeExpiryOption(_ a: [ByteBuffer], at index: Int, into pending: inout PendingExpiry?) -> Bool {
        guard index + 1 < a.count, let kind = expiryOption(a[index]) else { return false }
        if let pending, pending.kind != kind { return false }
        pending = (kind, a[index + 1])
        return true
    }

    static func expiryOption(_ argument: ByteBuffer) -> ExpiryOption? {
        if matches(argument, optionEX) { return .ex }
        if matches(argument, optionPX) { return .px }
        if matches(argument, optionEXAT) { return .exat }
        if matches(argument, optionPXAT) { return .pxat }
        return nil
    }

    /// SETNX key value → 1 when set, 0 when the key existed.
    mutating func setnx(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard checkValue(a[2], into: &out) else { return }
        let written = writeValue(key: a[1], value: a[2], condition: .ifAbsent, expiry: .clear, nowUnixMs: SystemClock.nowUnixMs()).written
        out.writeIntegerReply(written ? 1 : 0)
    }

    /// SETEX key seconds value / PSETEX key ms value
    mutating func setex(_ a: [ByteBuffer], unitMs: Int64, into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let command = unitMs == 1 ? "psetex" : "setex"
        guard let at = parseExpiryOption(unitMs == 1 ? .px : .ex, a[2], command: command, nowUnixMs: now, into: &out) else { return }
        guard checkValue(a[3], into: &out) else { return }
        _ = writeValue(key: a[1], value: a[3], condition: .always, expiry: .set(at), nowUnixMs: now)
        out.writeSimpleString("OK")
    }

    /// GETSET key value: SET with GET.
    mutating func getset(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard checkValue(a[2], into: &out) else { return }
        let old = writeValue(key: a[1], value: a[2], condition: .always, expiry: .clear, returnOld: true, nowUnixMs: SystemClock.nowUnixMs()).old
        replyValue(old, into: &out)
    }

    /// GETDEL key
    mutating func getdel(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let old: [UInt8]? = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return nil }
            return keyspace.remove(slot: slot).value
        }
        replyValue(old, into: &out)
    }

    /// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
    mutating func getex(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        // As SET: repeats allowed, conflicts refused, the number read last.
        var persist = false
        var expiryOption: PendingExpiry?
        var index = 2
        while index < a.count {
            let option = a[index]
            if Self.matches(option, Self.optionPERSIST) && expiryOption == nil {
                persist = true
            } else if !persist && Self.takeExpiryOption(a, at: index, into: &expiryOption) {
                index += 1
            } else {
                syntaxError(into: &out)
                return
            }
            index += 1
        }
        var change: ExpiryChange = persist ? .clear : .keep
        if let expiryOption {
            guard let at = parseExpiryOption(expiryOption.kind, expiryOption.argument, command: "getex", nowUnixMs: now, into: &out) else { return }
            change = .set(at)
        }
        let key = a[1]
        let stamp = change == .keep ? LWWStamp.zero : database.stamp(nowUnixMs: now)
        let value: [UInt8]? = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return nil }
            keyspace.touch(slot: slot, nowUnixMs: now)
            let value = keyspace.entry(at: slot).value
            switch change {
            case .keep: break
            case .clear: keyspace.setExpiry(at: slot, unixMs: Entry.noExpiry, stamp: stamp)
            case .set(let at):
                if at <= now {
                    keyspace.remove(slot: slot)
                } else {
                    keyspace.setExpiry(at: slot, unixMs: at, stamp: stamp)
                }
            }
            return value
        }
        replyValue(value, into: &out)
    }

    /// MGET key [key ...]: atomic against concurrent multi-key writes (every involved shard
    /// is locked for the whole command). The reply's size is checked before it is written.
    mutating func mget(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let resp = self.resp
        let keys = a.dropFirst()
        let hits: Int? = database.withShards(of: Array(keys)) { shardOf in
            var replyBytes = 16
            for key in keys {
                let shard = shardOf(key)
                if let slot = shard.keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) {
                    replyBytes += shard.keyspace.withValue(at: slot) { $0.count } + 16
                } else {
                    replyBytes += 5
                }
            }
            guard replyBytes <= Limits.replyBytesMax else { return nil }
            out.reserveCapacity(minimumWritableBytes: replyBytes)
            out.writeArrayHeader(keys.count)
            var hits = 0
            for key in keys {
                let shard = shardOf(key)
                if let slot = shard.keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) {
                    shard.keyspace.touch(slot: slot, nowUnixMs: now)
                    shard.keyspace.withValue(at: slot) { out.writeBulkString($0) }
                    hits += 1
                } else {
                    out.writeNull(resp)
                }
            }
            return hits
        }
        guard let hits else {
            error("ERR reply too large (max \(Limits.replyBytesMax) bytes): ask for fewer keys per MGET", into: &out)
            return
        }
        hitsTally += hits
        missesTally += keys.count - hits
    }

    /// MSET key value [key value ...] and MSETNX. Atomic: every involved shard is locked.
    mutating func mset(_ a: [ByteBuffer], onlyIfNoneExist: Bool, into out: inout ByteBuffer) {
        guard a.count % 2 == 1 else {
            error("ERR wrong number of arguments for '\(onlyIfNoneExist ? "msetnx" : "mset")' command", into: &out)
            return
        }
        var pairs: [(key: ByteBuffer, value: ByteBuffer)] = []
        pairs.reserveCapacity(a.count / 2)
        var index = 1
        while index < a.count {
            guard checkValue(a[index + 1], into: &out) else { return }
            pairs.append((a[index], a[index + 1]))
            index += 2
        }
        let now = SystemClock.nowUnixMs()
        let stamp = database.stamp(nowUnixMs: now)
        let namespaces = pairs.map { namespaceIndex(of: $0.key) }
        let written: Bool = database.withShards(of: pairs.map(\.key)) { shardOf in
            if onlyIfNoneExist {
                for pair in pairs where shardOf(pair.key).keyspace.liveSlot(of: Key(borrowing: pair.key), nowUnixMs: now) != nil {
                    return false
                }
            }
            for (position, pair) in pairs.enumerated() {
                let shard = shardOf(pair.key)
                let slot = shard.keyspace.liveSlot(of: Key(borrowing: pair.key), nowUnixMs: now)
                Self.store(
                    &shard.keyspace, key: pair.key, existing: slot, value: Array(pair.value.readableBytesView),
                    expiry: .clear, namespaceIndex: namespaces[position],
                    defaultExpiryUnixMs: defaultExpiry(namespaceIndex: namespaces[position], nowUnixMs: now),
                    stamp: stamp, nowUnixMs: now)
            }
            return true
        }
        if onlyIfNoneExist { out.writeIntegerReply(written ? 1 : 0) } else { out.writeSimpleString("OK") }
    }

    /// APPEND key value → the new length.
    mutating func append(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let suffix = a[2]
        let namespace = namespaceIndex(of: key)
        let defaultExpiry = defaultExpiry(namespaceIndex: namespace, nowUnixMs: now)
        let stamp = database.stamp(nowUnixMs: now)
        let length: Int? = database.withShard(of: key) { keyspace in
            if let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) {
                let newLength = keyspace.entry(at: slot).value.count + suffix.readableBytes
                guard newLength <= Limits.valueBytesMax else { return nil }
                keyspace.touch(slot: slot, nowUnixMs: now)
                return keyspace.modifyValue(at: slot, stamp: stamp) { value in
                    value.append(contentsOf: suffix.readableBytesView)
                    return value.count
                }
            }
            guard suffix.readableBytes <= Limits.valueBytesMax else { return nil }
            Self.store(
                &keyspace, key: key, existing: nil, value: Array(suffix.readableBytesView), expiry: .clear,
                namespaceIndex: namespace, defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now)
            return suffix.readableBytes
        }
        if let length { out.writeIntegerReply(length) } else { _ = checkValueLength(Int.max, into: &out) }
    }

    /// STRLEN key
    mutating func strlen(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let length: Int? = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return nil }
            keyspace.touch(slot: slot, nowUnixMs: now)
            return keyspace.withValue(at: slot) { $0.count }
        }
        if length == nil { missesTally += 1 } else { hitsTally += 1 }
        out.writeIntegerReply(length ?? 0)
    }

    /// GETRANGE key start end (inclusive, negative offsets count from the end).
    mutating func getrange(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard var start = Self.parseInt64(a[2]), var end = Self.parseInt64(a[3]) else {
            notInteger(into: &out)
            return
        }
        let now = SystemClock.nowUnixMs()
        let value = readValue(a[1], nowUnixMs: now) ?? []
        let length = Int64(value.count)
        // Redis: both negative and start > end is empty; clamp to the string.
        if start < 0 && end < 0 && start > end {
            out.writeBulkString([UInt8]())
            return
        }
        if start < 0 { start += length }
        if end < 0 { end += length }
        if start < 0 { start = 0 }
        if end < 0 { end = 0 }
        if end >= length { end = length - 1 }
        if length == 0 || start > end {
            out.writeBulkString([UInt8]())
            return
        }
        value.withUnsafeBytes { bytes in
            out.writeBulkString(UnsafeRawBufferPointer(rebasing: bytes[Int(start)...Int(end)]))
        }
    }

    /// SETRANGE key offset value → the new length.
    mutating func setrange(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let offset = Self.parseInt64(a[2]) else {
            notInteger(into: &out)
            return
        }
        guard offset >= 0 else {
            error("ERR offset is out of range", into: &out)
            return
        }
        let patch = a[3]
        // Redis: an empty patch changes nothing, so it needs no size check.
        guard patch.readableBytes == 0 || (offset <= Int64(Limits.valueBytesMax) && checkValueLength(Int(offset) + patch.readableBytes, into: &out)) else {
            if offset > Int64(Limits.valueBytesMax) { _ = checkValueLength(Int.max, into: &out) }
            return
        }
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let namespace = namespaceIndex(of: key)
        let defaultExpiry = defaultExpiry(namespaceIndex: namespace, nowUnixMs: now)
        let stamp = database.stamp(nowUnixMs: now)
        let start = Int(offset)
        let length: Int = database.withShard(of: key) { keyspace in
            let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now)
            if patch.readableBytes == 0 {
                // Redis: an empty patch creates nothing and changes nothing.
                return slot.map { keyspace.entry(at: $0).value.count } ?? 0
            }
            func apply(_ value: inout [UInt8]) {
                if value.count < start + patch.readableBytes {
                    value.append(contentsOf: repeatElement(0, count: start + patch.readableBytes - value.count))
                }
                patch.withUnsafeReadableBytes { bytes in
                    for (index, byte) in bytes.enumerated() { value[start + index] = byte }
                }
            }
            if let slot {
                keyspace.touch(slot: slot, nowUnixMs: now)
                return keyspace.modifyValue(at: slot, stamp: stamp) { value in
                    apply(&value)
                    return value.count
                }
            }
            var value: [UInt8] = []
            apply(&value)
            // Redis creates SETRANGE's string unencoded: OBJECT ENCODING says `raw`.
            Self.store(
                &keyspace, key: key, existing: nil, value: value, expiry: .clear, namespaceIndex: namespace,
                defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now, encoding: .raw)
            return value.count
        }
        out.writeIntegerReply(length)
    }

    // MARK: Counters

    /// INCRBY / DECRBY key amount
    mutating func incrby(_ a: [ByteBuffer], negate: Bool, into out: inout ByteBuffer) {
        guard let amount = Self.parseInt64(a[2]) else {
            notInteger(into: &out)
            return
        }
        if negate && amount == Int64.min {
            error("ERR decrement would overflow", into: &out)
            return
        }
        incrementBy(a[1], negate ? -amount : amount, into: &out)
    }

    /// Adds `amount` to the integer stored at `key` (0 when absent); keeps the TTL.
    mutating func incrementBy(_ key: ByteBuffer, _ amount: Int64, into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let namespace = namespaceIndex(of: key)
        let defaultExpiry = defaultExpiry(namespaceIndex: namespace, nowUnixMs: now)
        let stamp = database.stamp(nowUnixMs: now)
        let replicated = database.keepsReplicaStates[namespace]
        let result: IncrementResult = database.withShard(of: key) { keyspace in
            let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now)
            if replicated {
                return Self.incrementCounter(
                    &keyspace, key: key, slot: slot, amount: amount, origin: database.origin, namespaceIndex: namespace,
                    defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now)
            }
            var current: Int64 = 0
            if let slot {
                guard let parsed = keyspace.withValue(at: slot, { Self.parseInt64(bytes: $0) }) else { return .notInteger }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(amount)
            if overflow { return .overflow }
            if let slot {
                keyspace.setValue(at: slot, Self.decimalBytes(sum), stamp: stamp)
                keyspace.touch(slot: slot, nowUnixMs: now)
            } else {
                Self.store(
                    &keyspace, key: key, existing: nil, value: Self.decimalBytes(sum), expiry: .clear,
                    namespaceIndex: namespace, defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now)
            }
            return .value(sum)
        }
        switch result {
        case .value(let value): out.writeIntegerReply(Int(value))
        case .notInteger: notInteger(into: &out)
        case .overflow: error("ERR increment or decrement would overflow", into: &out)
        }
    }

    enum IncrementResult { case value(Int64), notInteger, overflow }

    /// `INCRBY` on a key of a replicated namespace: the key's PN-counter gets the amount as
    /// this node's contribution (`Keyspace.counterIncrement`), so increments made concurrently
    /// in other data centers all count (docs/REPLICATION.md, "Counters in the server").
    static func incrementCounter(
        _ keyspace: inout Keyspace, key: ByteBuffer, slot: Int?, amount: Int64, origin: ReplicaID, namespaceIndex: Int,
        defaultExpiryUnixMs: Int64, stamp: LWWStamp, nowUnixMs: Int64
    ) -> IncrementResult {
        let keyBytes = Array(buffer: key)
        switch keyspace.counterIncrement(key: keyBytes, slot: slot, amount: amount, origin: origin, stamp: stamp) {
        case .notInteger: return .notInteger
        case .overflow: return .overflow
        case .value(let sum, let counter, let valueStamp):
            let decimal = PNCounter.decimalBytes(sum)
            if let slot {
                keyspace.setValue(at: slot, decimal, stamp: valueStamp)
                keyspace.setCounter(at: slot, counter)
                keyspace.touch(slot: slot, nowUnixMs: nowUnixMs)
            } else {
                store(
                    &keyspace, key: key, existing: nil, value: decimal, expiry: .clear, namespaceIndex: namespaceIndex,
                    defaultExpiryUnixMs: defaultExpiryUnixMs, stamp: stamp, nowUnixMs: nowUnixMs)
                if let newSlot = keyspace.slot(ofBytes: keyBytes) { keyspace.setCounter(at: newSlot, counter) }
            }
            return .value(sum)
        }
    }

    /// INCRBYFLOAT key amount → the new value as a bulk string.
    mutating func incrbyfloat(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let amount = Self.parseDouble(a[2]) else {
            error("ERR value is not a valid float", into: &out)
            return
        }
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let namespace = namespaceIndex(of: key)
        let defaultExpiry = defaultExpiry(namespaceIndex: namespace, nowUnixMs: now)
        let stamp = database.stamp(nowUnixMs: now)
        enum Result { case value([UInt8]), notFloat, notFinite }
        let result: Result = database.withShard(of: key) { keyspace in
            let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now)
            var current = 0.0
            if let slot {
                guard let parsed = Self.parseDouble(String(decoding: keyspace.entry(at: slot).value, as: UTF8.self)) else {
                    return .notFloat
                }
                current = parsed
            }
            let sum = current + amount
            guard sum.isFinite else { return .notFinite }
            let bytes = Array(Self.formatDouble(sum).utf8)
            // Redis stores the result as text, never integer-encoded.
            if let slot {
                keyspace.setValue(at: slot, bytes, stamp: stamp)
                keyspace.setEncoding(at: slot, .notInteger)
                keyspace.touch(slot: slot, nowUnixMs: now)
            } else {
                Self.store(
                    &keyspace, key: key, existing: nil, value: bytes, expiry: .clear, namespaceIndex: namespace,
                    defaultExpiryUnixMs: defaultExpiry, stamp: stamp, nowUnixMs: now, encoding: .notInteger)
            }
            return .value(bytes)
        }
        switch result {
        case .value(let bytes): out.writeBulkString(bytes)
        case .notFloat: error("ERR value is not a valid float", into: &out)
        case .notFinite: error("ERR increment would produce NaN or Infinity", into: &out)
        }
    }
}
