import MeridianCore
import MeridianRESP
import NIOCore

/// Generic keyspace commands: DEL, EXISTS, TYPE, RENAME, the TTL family, SCAN, KEYS,
/// RANDOMKEY and OBJECT.
extension CommandExecutor {
    /// DEL / UNLINK key [key ...] → number removed. Atomic across keys, as in Redis.
    mutating func delete(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let removed = forEachKeyAtomically(a.dropFirst()) { keyspace, key in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return false }
            keyspace.remove(slot: slot)
            return true
        }
        out.writeIntegerReply(removed)
    }

    /// EXISTS key [key ...] → how many of the arguments exist (repeats count again).
    mutating func exists(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let found = forEachKeyAtomically(a.dropFirst()) { keyspace, key in
            keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) != nil
        }
        hitsTally += found
        missesTally += a.count - 1 - found
        out.writeIntegerReply(found)
    }

    /// TOUCH key [key ...] → how many exist; refreshes their LRU time.
    mutating func touch(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let found = forEachKeyAtomically(a.dropFirst()) { keyspace, key in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return false }
            keyspace.touch(slot: slot, nowUnixMs: now)
            return true
        }
        hitsTally += found
        missesTally += a.count - 1 - found
        out.writeIntegerReply(found)
    }

    /// Runs `body` for each key with every involved shard locked for the whole command (so a
    /// multi-key command is atomic, as Redis's are), and counts the keys for which it
    /// returned true. A single key takes just its shard's lock.
    func forEachKeyAtomically(_ keys: ArraySlice<ByteBuffer>, _ body: (inout Keyspace, ByteBuffer) -> Bool) -> Int {
        if keys.count == 1, let key = keys.first {
            return database.withShard(of: key) { body(&$0, key) } ? 1 : 0
        }
        return database.withShards(of: Array(keys)) { shardOf in
            var count = 0
            for key in keys where body(&shardOf(key).keyspace, key) { count += 1 }
            return count
        }
    }

    /// TYPE key → `string` or `none`.
    mutating func type(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let live = database.withShard(of: key) { $0.liveSlot(of: Key(borrowing: key), nowUnixMs: now) != nil }
        if live { hitsTally += 1 } else { missesTally += 1 }
        out.writeSimpleString(live ? "string" : "none")
    }

    /// RENAME / RENAMENX source destination. The value and its TTL move; the key takes the
    /// destination's namespace.
    mutating func rename(_ a: [ByteBuffer], onlyIfTargetFree: Bool, into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let source = a[1], destination = a[2]
        let destinationNamespace = namespaceIndex(of: destination)
        let stamp = database.stamp(nowUnixMs: now)
        enum Result { case noSuchKey, targetExists, renamed }
        let result: Result = database.withShards(of: [source, destination]) { shardOf in
            let sourceShard = shardOf(source), destinationShard = shardOf(destination)
            guard let sourceSlot = sourceShard.keyspace.liveSlot(of: Key(borrowing: source), nowUnixMs: now) else {
                return .noSuchKey
            }
            if source == destination { return onlyIfTargetFree ? .targetExists : .renamed }
            let targetSlot = destinationShard.keyspace.liveSlot(of: Key(borrowing: destination), nowUnixMs: now)
            if onlyIfTargetFree && targetSlot != nil { return .targetExists }
            let entry = sourceShard.keyspace.remove(slot: sourceSlot)
            if let targetSlot { destinationShard.keyspace.remove(slot: targetSlot) }
            var moved = Entry(
                value: entry.value, valueStamp: stamp, expiryUnixMs: entry.expiryUnixMs, expiryStamp: stamp,
                lastAccessUnixMs: now, namespaceIndex: destinationNamespace)
            moved.encoding = entry.encoding
            destinationShard.keyspace.insert(Key(borrowing: destination), entry: moved)
            return .renamed
        }
        switch result {
        case .noSuchKey: error("ERR no such key", into: &out)
        case .targetExists: out.writeIntegerReply(0)
        case .renamed: if onlyIfTargetFree { out.writeIntegerReply(1) } else { out.writeSimpleString("OK") }
        }
    }

    private static let expireNX: [UInt8] = Array("NX".utf8)
    private static let expireXX: [UInt8] = Array("XX".utf8)
    private static let expireGT: [UInt8] = Array("GT".utf8)
    private static let expireLT: [UInt8] = Array("LT".utf8)

    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX|XX|GT|LT]
    mutating func expire(_ a: [ByteBuffer], unitMs: Int64, absolute: Bool, into out: inout ByteBuffer) {
        let command = (unitMs == 1 ? "p" : "") + (absolute ? "expireat" : "expire")
        var nx = false, xx = false, gt = false, lt = false
        for option in a.dropFirst(3) {
            if Self.matches(option, Self.expireNX) { nx = true }
            else if Self.matches(option, Self.expireXX) { xx = true }
            else if Self.matches(option, Self.expireGT) { gt = true }
            else if Self.matches(option, Self.expireLT) { lt = true }
            else {
                error("ERR Unsupported option \(Self.printable(option, max: 128))", into: &out)
                return
            }
        }
        if nx && (xx || gt || lt) {
            error("ERR NX and XX, GT or LT options at the same time are not compatible", into: &out)
            return
        }
        if gt && lt {
            error("ERR GT and LT options at the same time are not compatible", into: &out)
            return
        }
        guard let amount = Self.parseInt64(a[2]) else {
            notInteger(into: &out)
            return
        }
        let now = SystemClock.nowUnixMs()
        // Redis's bounds: the conversion to milliseconds and the addition of now must not
        // overflow; any other value, in the past or far future, is accepted.
        let scaled = Self.multiplyWithoutOverflow(amount, unitMs)
        let at = absolute ? scaled : Self.addingWithoutOverflow(scaled, now)
        guard let at else {
            error("ERR invalid expire time in '\(command)' command", into: &out)
            return
        }
        let key = a[1]
        let stamp = database.stamp(nowUnixMs: now)
        let changed: Bool = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return false }
            let entry = keyspace.entry(at: slot)
            let current = entry.hasExpiry ? entry.expiryUnixMs : nil
            if nx && current != nil { return false }
            if xx && current == nil { return false }
            // A key without a TTL has an infinite one: GT never beats it, LT always does.
            if gt && (current == nil || at <= current!) { return false }
            if lt && current != nil && at >= current! { return false }
            if at <= now {
                keyspace.remove(slot: slot)
            } else {
                keyspace.setExpiry(at: slot, unixMs: at, stamp: stamp)
            }
            return true
        }
        out.writeIntegerReply(changed ? 1 : 0)
    }

    /// TTL / PTTL (remaining) and EXPIRETIME / PEXPIRETIME (absolute): -2 missing, -1 no TTL.
    mutating func ttl(_ a: [ByteBuffer], unitMs: Int64, absolute: Bool, into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let expiry: Int64? = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return nil }
            return keyspace.entry(at: slot).expiryUnixMs
        }
        guard let expiry else {
            missesTally += 1
            out.writeIntegerReply(-2)
            return
        }
        hitsTally += 1
        if expiry == Entry.noExpiry {
            out.writeIntegerReply(-1)
            return
        }
        let value = absolute ? expiry : max(0, expiry - now)
        // Redis rounds seconds to the nearest one, for TTL and EXPIRETIME alike.
        out.writeIntegerReply(Int(unitMs == 1 ? value : value / 1000 + (value % 1000 >= 500 ? 1 : 0)))
    }

    /// PERSIST key → 1 when a TTL was removed.
    mutating func persist(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        let key = a[1]
        let stamp = database.stamp(nowUnixMs: now)
        let changed: Bool = database.withShard(of: key) { keyspace in
            guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now),
                  keyspace.entry(at: slot).hasExpiry else { return false }
            keyspace.setExpiry(at: slot, unixMs: Entry.noExpiry, stamp: stamp)
            return true
        }
        out.writeIntegerReply(changed ? 1 : 0)
    }

    private static let scanMATCH: [UInt8] = Array("MATCH".utf8)
    private static let scanCOUNT: [UInt8] = Array("COUNT".utf8)
    private static let scanTYPE: [UInt8] = Array("TYPE".utf8)

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]
    ///
    /// The cursor packs a shard index (low 8 bits) and a slot position (the rest). Slots do not
    /// move while their key lives, so every key present for the whole scan is returned.
    mutating func scan(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let cursor = Self.parseUInt64(a[1]) else {
            error("ERR invalid cursor", into: &out)
            return
        }
        var pattern: GlobPattern?
        var count = 10
        var typeFilter: ByteBuffer?
        var index = 2
        while index < a.count {
            guard index + 1 < a.count else {
                syntaxError(into: &out)
                return
            }
            let option = a[index], value = a[index + 1]
            if Self.matches(option, Self.scanMATCH) {
                guard let compiled = compilePattern(value, into: &out) else { return }
                pattern = compiled
            } else if Self.matches(option, Self.scanCOUNT) {
                guard let parsed = Self.parseInt64(value) else {
                    notInteger(into: &out)
                    return
                }
                guard parsed >= 1 else {
                    syntaxError(into: &out)
                    return
                }
                count = Int(min(parsed, Int64(Limits.scanCountMax)))
            } else if Self.matches(option, Self.scanTYPE) {
                typeFilter = value
            } else {
                syntaxError(into: &out)
                return
            }
            index += 2
        }
        // Only strings exist, so a TYPE filter other than `string` matches nothing; the
        // cursor still advances as Redis's does.
        let onlyStrings = typeFilter.map { Self.matches($0, Array("STRING".utf8)) } ?? true
        let now = SystemClock.nowUnixMs()
        var shard = Int(cursor & 0xFF)
        var slot = Int(cursor >> 8)
        guard shard < Database.shardCount else {
            out.writeArrayHeader(2)
            out.writeBulkString("0")
            out.writeArrayHeader(0)
            return
        }
        var found: [[UInt8]] = []
        var visited = 0
        // Holes left by deletions cost a tenth of a key each, as Redis bounds the empty
        // buckets one SCAN call may walk, so a sparse shard cannot stall the loop.
        var holesVisited = 0
        while shard < Database.shardCount && visited < count && holesVisited < count * 10 {
            database.withShard(index: shard) { keyspace in
                while slot < keyspace.slotCapacity && visited < count && holesVisited < count * 10 {
                    if !keyspace.isOccupied(slot) {
                        holesVisited += 1
                    } else {
                        visited += 1
                        let entry = keyspace.entry(at: slot)
                        let key = keyspace.key(at: slot)
                        if !entry.isExpired(atUnixMs: now) && onlyStrings
                            && (pattern.map { p in p.matches(key) } ?? true) {
                            found.append(key)
                        }
                    }
                    slot += 1
                }
                if slot >= keyspace.slotCapacity {
                    shard += 1
                    slot = 0
                }
            }
        }
        let next: UInt64 = shard >= Database.shardCount ? 0 : (UInt64(slot) << 8) | UInt64(shard)
        out.writeArrayHeader(2)
        out.writeBulkString(String(next))
        out.writeArrayHeader(found.count)
        for key in found { out.writeBulkString(key) }
    }

    /// KEYS pattern: every live key matching the glob.
    mutating func keys(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let pattern = compilePattern(a[1], into: &out) else { return }
        let now = SystemClock.nowUnixMs()
        var found: [[UInt8]] = []
        var replyBytes = 16
        for shard in 0..<Database.shardCount where replyBytes <= Limits.replyBytesMax {
            database.withShard(index: shard) { keyspace in
                var slot = 0
                while slot < keyspace.slotCapacity && replyBytes <= Limits.replyBytesMax {
                    if keyspace.isOccupied(slot) {
                        let key = keyspace.key(at: slot)
                        if !keyspace.entry(at: slot).isExpired(atUnixMs: now)
                            && pattern.matches(key) {
                            found.append(key)
                            replyBytes += key.count + 16
                        }
                    }
                    slot += 1
                }
            }
        }
        guard replyBytes <= Limits.replyBytesMax else {
            error("ERR reply too large (max \(Limits.replyBytesMax) bytes): use SCAN to iterate over this many keys", into: &out)
            return
        }
        out.writeArrayHeader(found.count)
        for key in found { out.writeBulkString(key) }
    }

    /// RANDOMKEY: a random live key, or nil when there is none.
    mutating func randomkey(into out: inout ByteBuffer) {
        let now = SystemClock.nowUnixMs()
        // Pick a shard weighted by its size, then a slot in it; an expired pick is reaped and
        // the draw repeated a bounded number of times.
        for _ in 0..<100 {
            var sizes: [Int] = []
            sizes.reserveCapacity(Database.shardCount)
            var total = 0
            for shard in database.shards {
                shard.lock.lock()
                sizes.append(shard.keyspace.count)
                shard.lock.unlock()
                total += sizes.last!
            }
            guard total > 0 else { break }
            var pick = Int.random(in: 0..<total, using: &generator)
            var shardIndex = 0
            while pick >= sizes[shardIndex] {
                pick -= sizes[shardIndex]
                shardIndex += 1
            }
            var generator = self.generator
            let key: [UInt8]?? = database.withShard(index: shardIndex) { keyspace in
                guard let slot = keyspace.randomSlot(using: &generator) else { return .some(nil) }
                if keyspace.entry(at: slot).isExpired(atUnixMs: now) {
                    keyspace.expire(slot: slot)
                    return .none
                }
                return .some(keyspace.key(at: slot))
            }
            self.generator = generator
            switch key {
            case .some(.some(let key)):
                out.writeBulkString(key)
                return
            case .some(.none), .none:
                continue
            }
        }
        out.writeNull(resp)
    }

    private static let objectENCODING: [UInt8] = Array("ENCODING".utf8)
    private static let objectFREQ: [UInt8] = Array("FREQ".utf8)
    private static let objectIDLETIME: [UInt8] = Array("IDLETIME".utf8)
    private static let objectREFCOUNT: [UInt8] = Array("REFCOUNT".utf8)
    private static let objectHELP: [UInt8] = Array("HELP".utf8)

    /// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key, OBJECT HELP. Inspection never touches LRU.
    mutating func object(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let sub = a[1]
        if Self.matches(sub, Self.objectHELP) {
            let lines = [
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>", "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>", "    Return the access frequency index of the <key> (needs an LFU policy; Meridian uses LRU).",
                "IDLETIME <key>", "    Return the idle time of the <key>, that is the approximated number of",
                "    seconds elapsed since the last access to the key.",
                "REFCOUNT <key>", "    Return the number of references of the value associated with the specified",
                "    <key>.",
                "HELP", "    Print this help.",
            ]
            Self.writeHelp(lines, into: &out)
            return
        }
        let known = [Self.objectENCODING, Self.objectFREQ, Self.objectIDLETIME, Self.objectREFCOUNT]
        guard known.contains(where: { Self.matches(sub, $0) }) else {
            unknownSubcommand(sub, of: "OBJECT", into: &out)
            return
        }
        guard a.count == 3 else {
            error("ERR wrong number of arguments for 'object|\(String(buffer: sub).lowercased())' command", into: &out)
            return
        }
        if let problem = Self.keyProblem(a[2]) {
            error(problem, into: &out)
            return
        }
        let now = SystemClock.nowUnixMs()
        let key = a[2]
        let entry: Entry? = database.withShard(of: key) { keyspace in
            keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now).map { keyspace.entry(at: $0) }
        }
        guard let entry else {
            missesTally += 1
            out.writeNull(resp)
            return
        }
        hitsTally += 1
        if Self.matches(sub, Self.objectENCODING) {
            out.writeBulkString(Self.encodingName(entry.value, entry.encoding))
        } else if Self.matches(sub, Self.objectIDLETIME) {
            out.writeIntegerReply(Int(max(0, now - entry.lastAccessUnixMs) / 1000))
        } else if Self.matches(sub, Self.objectREFCOUNT) {
            out.writeIntegerReply(1)
        } else {
            error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.", into: &out)
        }
    }

    /// The encoding Redis reports for a string value: `int` for a canonical 64-bit integer
    /// written whole, `embstr` up to 44 bytes, `raw` above or after an in-place edit.
    static func encodingName(_ value: [UInt8], _ hint: EncodingHint) -> String {
        switch hint {
        case .raw: return "raw"
        case .byContent where value.count <= 20 && parseInt64(value) != nil: return "int"
        case .byContent, .notInteger: return value.count <= 44 ? "embstr" : "raw"
        }
    }

    /// The limit error for a key argument outside the command table's key positions.
    static func keyProblem(_ key: ByteBuffer) -> String? {
        do {
            try Limits.checkKey(byteCount: key.readableBytes)
            return nil
        } catch {
            return error.description
        }
    }

    /// Compiles a glob argument; writes the error reply when it is refused.
    mutating func compilePattern(_ argument: ByteBuffer, into out: inout ByteBuffer) -> GlobPattern? {
        do {
            return try GlobPattern(Array(argument.readableBytesView))
        } catch {
            self.error("ERR pattern too long or complex (max \(Limits.patternBytesMax) bytes, \(Limits.patternTokensMax) tokens)", into: &out)
            return nil
        }
    }

    /// Parses a cursor as Redis does (`strtoul`): an optional sign and decimal digits, a
    /// negative value wrapping around (`-1` is 2^64 - 1); no spaces.
    static func parseUInt64(_ argument: ByteBuffer) -> UInt64? {
        var text = Substring(String(buffer: argument))
        if text.isEmpty { return 0 }
        var negative = false
        if text.first == "-" || text.first == "+" {
            negative = text.first == "-"
            text = text.dropFirst()
        }
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let magnitude = UInt64(text) else { return nil }
        return negative ? 0 &- magnitude : magnitude
    }
}
