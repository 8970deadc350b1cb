import MeridianCore
import MeridianPaxos
import MeridianRESP
import NIOCore

/// What the connection does after a command's reply.
public enum CommandOutcome: Sendable {
    case keepOpen
    /// QUIT: close once the reply is written.
    case closeAfterReply
    /// Not executed: these keys of durable namespaces may be on disk but are not in memory.
    /// The connection loads them (off the event loop) and then executes the command again.
    case loadFromDisk(keys: [[UInt8]])
    /// Not answered yet: the connection runs the work off the event loop (on the audit
    /// export thread) and sends what it returns as this command's reply.
    case replyOffLoop(OffLoopReply)
    /// Not answered yet: the strong engine answers it (docs/CONSISTENCY.md); the connection
    /// sends that as this command's reply, in order.
    case replyLater(DeferredReply)
}

/// What a command's reply waits for on disk.
enum DiskWait: Equatable {
    case nothing
    /// The command read or wrote a `write-through` key: wait for every write-through state
    /// queued so far (its own included) to be synced.
    case writeThroughSync
    /// The write-behind queue is over its bound: wait for everything queued so far.
    case everythingQueued
}

/// Per-connection state that commands read and change (HELLO, CLIENT SETNAME, RESET, ...).
public struct SessionState: Sendable {
    public var clientID: Int
    public var protocolVersion: RESPVersion = .v2
    public var name = ""
    public var libraryName = ""
    public var libraryVersion = ""

    public init(clientID: Int) { self.clientID = clientID }
}

/// Executes commands for one connection: validates arguments against the command table and
/// the limits, runs the command against the database and appends its reply to `out`.
///
/// It runs on the connection's event loop and never blocks: the only waits are the shard
/// locks, held for in-memory work only.
public struct CommandExecutor {
    public let server: ServerContext
    public var session: SessionState
    /// Randomness for eviction sampling and RANDOMKEY, seeded per connection.
    var generator: SplitMix64
    /// Per-batch tallies, added to the node's atomics by `flushStatistics`.
    var commandsTally = 0
    var hitsTally = 0
    var missesTally = 0
    var errorsTally = 0
    /// The last command, for CLIENT LIST.
    public private(set) var lastCommand: CommandID?
    /// Set when a command changed what CLIENT LIST shows (name, protocol, library).
    public var sessionChanged = false
    /// The storage sequence this connection's replies so far must wait for: a command that
    /// wrote or read a `write-through` key is answered only once everything it could have
    /// seen is synced (so no client ever sees a write that a crash could still take back).
    /// The connection resets it once the sequence is durable.
    public var syncSequence: UInt64 = 0
    /// Set by the connection while it executes a command again after loading its keys from
    /// disk: the keys are in memory now (or do not exist), so it does not ask again.
    public var keysJustLoaded = false
    /// Set when a write found the storage engine backlogged: the connection stops executing
    /// the rest of its input until the flush is done (a pipelined bulk load would otherwise
    /// queue a whole read's worth of writes first).
    public var pausedForDiskBacklog = false

    /// Set on the executor that runs commands other nodes of the data center forwarded to
    /// this one: they run here, whatever this node believes about the partition's primary.
    public var runsForwardedCommands = false

    /// Commands queued between MULTI and EXEC (strong keys only; nil outside MULTI).
    var transactionQueue: StrongTransactionQueue?
    /// Strong keys WATCHed and the versions they had then.
    var watchedKeys: [WatchedKey] = []

    /// The counters of the event loop this connection runs on.
    let loopCounters: LoopCounters

    public init(server: ServerContext, session: SessionState, seed: UInt64, loopCounters: LoopCounters) {
        self.server = server
        self.loopCounters = loopCounters
        self.session = session
        self.generator = SplitMix64(seed: seed)
    }

    var database: Database { server.database }
    var resp: RESPVersion { session.protocolVersion }

    /// Adds this batch's tallies to the node's statistics.
    public mutating func flushStatistics() {
        let counters = loopCounters
        if commandsTally > 0 { counters.commandsProcessed.add(commandsTally, ordering: .relaxed) }
        if hitsTally > 0 { counters.keyspaceHits.add(hitsTally, ordering: .relaxed) }
        if missesTally > 0 { counters.keyspaceMisses.add(missesTally, ordering: .relaxed) }
        if errorsTally > 0 { counters.errorReplies.add(errorsTally, ordering: .relaxed) }
        commandsTally = 0
        hitsTally = 0
        missesTally = 0
        errorsTally = 0
    }

    /// Executes one command; `arguments[0]` is its name.
    public mutating func execute(_ arguments: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome {
        commandsTally += 1
        guard let id = arguments[0].withUnsafeReadableBytes({ CommandTable.lookup($0) }) else {
            replyUnknownCommand(arguments, into: &out)
            if transactionQueue != nil { transactionQueue!.failed = true }  // EXEC answers EXECABORT
            return .keepOpen
        }
        lastCommand = id
        let shape = CommandTable.shape(id)
        guard shape.acceptsArgumentCount(arguments.count) else {
            error("ERR wrong number of arguments for '\(CommandTable.spec(id).name)' command", into: &out)
            if transactionQueue != nil { transactionQueue!.failed = true }
            return .keepOpen
        }
        // Keyless commands of transactions (MULTI, EXEC, ...) and anything while MULTI queues.
        if shape.firstKey == 0, let outcome = routeTransaction(id, arguments, into: &out) { return outcome }
        // What the reply must wait for on disk, decided before the command runs and read
        // after it, so that the command's own state is covered.
        var waitsFor: DiskWait = .nothing
        if shape.firstKey > 0 {
            guard checkKeys(shape, arguments, into: &out) else {
                if transactionQueue != nil { transactionQueue!.failed = true }
                return .keepOpen
            }
            // Strong keys (and LOCK / UNLOCK) go to the strong engine.
            if let outcome = routeStrong(id, shape, arguments, into: &out) { return outcome }
            // In a data center of several nodes, to the partition's primary.
            if let cluster = server.cluster, let outcome = routeToPrimary(id, shape, arguments, cluster: cluster, into: &out) {
                return outcome
            }
            if let storage = database.storage {
                if !keysJustLoaded && database.diskOnlyKeysPossible.load(ordering: .relaxed),
                   let missing = keysOnlyOnDisk(shape, arguments) {
                    commandsTally -= 1
                    return .loadFromDisk(keys: missing)
                }
                if database.hasWriteThroughNamespaces && touchesWriteThrough(shape, arguments) {
                    waitsFor = .writeThroughSync
                } else if shape.flags.contains(.write) && storage.isBacklogged {
                    // The disk is behind: this writer waits for the flush instead of the queue growing.
                    waitsFor = .everythingQueued
                    pausedForDiskBacklog = true
                }
            }
        }
        if shape.flags.contains(.denyOOM) && database.isOverMemoryLimit {
            if !database.evictUntilWithinLimit(using: &generator) {
                database.statistics.rejectedCommandsOOM.add(1, ordering: .relaxed)
                error("OOM command not allowed when used memory > 'maxmemory'.", into: &out)
                return .keepOpen
            }
        }
        if waitsFor != .nothing, let storage = database.storage {
            defer {
                let sequence = waitsFor == .writeThroughSync
                    ? storage.enqueuedSyncSequence.load(ordering: .acquiring)
                    : storage.enqueuedSequence.load(ordering: .acquiring)
                syncSequence = max(syncSequence, sequence)
            }
            return dispatchReplicating(id, shape, arguments, into: &out)
        }
        switch id {
        case .hello, .client, .reset: sessionChanged = true
        default: break
        }
        return dispatchReplicating(id, shape, arguments, into: &out)
    }

    /// Runs the command; in a data center of several nodes a write on keys then replicates the
    /// keys' records before its reply goes (this node is their primary: `routeToPrimary`).
    @inline(__always)
    private mutating func dispatchReplicating(_ id: CommandID, _ shape: CommandShape, _ arguments: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome {
        guard let cluster = server.cluster, shape.firstKey > 0, shape.flags.contains(.write) else {
            return dispatch(id, arguments, into: &out)
        }
        let before = recordsOfKeys(shape, arguments)
        let replyStart = out.writerIndex
        let outcome = dispatch(id, arguments, into: &out)
        guard case .keepOpen = outcome else { return outcome }
        return replicateAfterWrite(shape, arguments, before: before, replyFrom: replyStart, cluster: cluster, into: &out)
    }

    private mutating func dispatch(_ id: CommandID, _ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome {
        switch id {
        case .ping: ping(a, into: &out)
        case .echo: out.writeBulkString(a[1])
        case .hello: hello(a, into: &out)
        case .quit:
            out.writeSimpleString("OK")
            return .closeAfterReply
        case .reset: reset(into: &out)
        case .select: select(a, into: &out)
        case .auth: auth(a, into: &out)
        case .command: command(a, into: &out)
        case .client: client(a, into: &out)
        case .info: info(a, into: &out)
        case .dbsize: out.writeIntegerReply(database.keyCount)
        case .time: time(into: &out)
        case .flushdb, .flushall: flush(a, into: &out)
        case .save: save(into: &out)
        case .bgsave: bgsave(a, into: &out)
        case .lastsave: lastsave(into: &out)
        case .config: config(a, into: &out)
        case .audit: return audit(a, into: &out)
        case .cluster:
            if let outcome = clusterPlacementChange(a, into: &out) { return outcome }
            cluster(a, into: &out)
        case .get: get(a, into: &out)
        case .set: set(a, into: &out)
        case .setnx: setnx(a, into: &out)
        case .setex: setex(a, unitMs: 1000, into: &out)
        case .psetex: setex(a, unitMs: 1, into: &out)
        case .getset: getset(a, into: &out)
        case .getdel: getdel(a, into: &out)
        case .getex: getex(a, into: &out)
        case .mget: mget(a, into: &out)
        case .mset: mset(a, onlyIfNoneExist: false, into: &out)
        case .msetnx: mset(a, onlyIfNoneExist: true, into: &out)
        case .append: append(a, into: &out)
        case .strlen: strlen(a, into: &out)
        case .getrange, .substr: getrange(a, into: &out)
        case .setrange: setrange(a, into: &out)
        case .incr: incrementBy(a[1], 1, into: &out)
        case .decr: incrementBy(a[1], -1, into: &out)
        case .incrby, .decrby: incrby(a, negate: id == .decrby, into: &out)
        case .incrbyfloat: incrbyfloat(a, into: &out)
        case .del, .unlink: delete(a, into: &out)
        case .exists: exists(a, into: &out)
        case .touch: touch(a, into: &out)
        case .type: type(a, into: &out)
        case .rename: rename(a, onlyIfTargetFree: false, into: &out)
        case .renamenx: rename(a, onlyIfTargetFree: true, into: &out)
        case .expire: expire(a, unitMs: 1000, absolute: false, into: &out)
        case .pexpire: expire(a, unitMs: 1, absolute: false, into: &out)
        case .expireat: expire(a, unitMs: 1000, absolute: true, into: &out)
        case .pexpireat: expire(a, unitMs: 1, absolute: true, into: &out)
        case .ttl: ttl(a, unitMs: 1000, absolute: false, into: &out)
        case .pttl: ttl(a, unitMs: 1, absolute: false, into: &out)
        case .expiretime: ttl(a, unitMs: 1000, absolute: true, into: &out)
        case .pexpiretime: ttl(a, unitMs: 1, absolute: true, into: &out)
        case .persist: persist(a, into: &out)
        case .scan: scan(a, into: &out)
        case .keys: keys(a, into: &out)
        case .randomkey: randomkey(into: &out)
        case .object: object(a, into: &out)
        case .lock, .unlock, .multi, .exec, .discard, .unwatch: break  // routed to the strong engine before dispatch
        case .watch: error("ERR WATCH is supported on strong keys only (an eventual key has no single order of writes to watch)", into: &out)
        }
        return .keepOpen
    }

    // MARK: Validation

    /// Checks every key argument against the key limits.
    private mutating func checkKeys(_ spec: CommandShape, _ arguments: [ByteBuffer], into out: inout ByteBuffer) -> Bool {
        let last = spec.lastKey < 0 ? arguments.count + Int(spec.lastKey) : Int(spec.lastKey)
        var position = Int(spec.firstKey)
        while position <= last && position < arguments.count {
            let key = arguments[position]
            do {
                try Limits.checkKey(byteCount: key.readableBytes)
            } catch {
                self.error(error.description, into: &out)
                return false
            }
            position += Int(spec.keyStep)
        }
        return true
    }

    /// Keys of the command that belong to durable namespaces, live in shards that may hold
    /// keys on disk only, and are not in memory; nil when there are none. A key found in
    /// memory is touched, so eviction does not pick it before the command runs.
    private func keysOnlyOnDisk(_ spec: CommandShape, _ arguments: [ByteBuffer]) -> [[UInt8]]? {
        let last = spec.lastKey < 0 ? arguments.count + Int(spec.lastKey) : Int(spec.lastKey)
        var position = Int(spec.firstKey)
        var missing: [[UInt8]]?
        let now = SystemClock.nowUnixMs()
        while position <= last && position < arguments.count {
            let key = arguments[position]
            position += Int(spec.keyStep)
            let shardIndex = database.shardIndex(of: key)
            guard database.shards[shardIndex].mayHaveDiskOnlyKeys.load(ordering: .relaxed) else { continue }
            let namespace = key.withUnsafeReadableBytes { database.namespaces.index(of: $0) }
            guard database.durableUrgency[namespace] != nil else { continue }
            let resident = database.withShard(index: shardIndex) { keyspace -> Bool in
                guard let slot = keyspace.liveSlot(of: Key(borrowing: key), nowUnixMs: now) else { return false }
                keyspace.touch(slot: slot, nowUnixMs: now)
                return true
            }
            if !resident {
                let bytes = Array(key.readableBytesView)
                if missing == nil { missing = [bytes] } else if !missing!.contains(bytes) { missing!.append(bytes) }
            }
        }
        return missing
    }

    /// Whether any key of the command is in a `write-through` namespace.
    private func touchesWriteThrough(_ spec: CommandShape, _ arguments: [ByteBuffer]) -> Bool {
        let last = spec.lastKey < 0 ? arguments.count + Int(spec.lastKey) : Int(spec.lastKey)
        var position = Int(spec.firstKey)
        while position <= last && position < arguments.count {
            let namespace = arguments[position].withUnsafeReadableBytes { database.namespaces.index(of: $0) }
            if database.durableUrgency[namespace] == .sync { return true }
            position += Int(spec.keyStep)
        }
        return false
    }

    /// Checks a value's size; writes the error reply when it is too large.
    mutating func checkValue(_ value: ByteBuffer, into out: inout ByteBuffer) -> Bool {
        checkValueLength(value.readableBytes, into: &out)
    }

    /// Checks a resulting value length; writes the error reply when it is too large.
    mutating func checkValueLength(_ length: Int, into out: inout ByteBuffer) -> Bool {
        do {
            try Limits.checkValue(byteCount: length)
            return true
        } catch {
            self.error(error.description, into: &out)
            return false
        }
    }

    // MARK: Replies

    /// Writes an error reply and counts it.
    mutating func error(_ message: String, into out: inout ByteBuffer) {
        errorsTally += 1
        out.writeErrorReply(message)
    }

    /// Writes a constant error reply and counts it.
    mutating func error(_ message: StaticString, into out: inout ByteBuffer) {
        errorsTally += 1
        out.writeErrorReply(message)
    }

    mutating func syntaxError(into out: inout ByteBuffer) { error("ERR syntax error", into: &out) }
    mutating func notInteger(into out: inout ByteBuffer) { error("ERR value is not an integer or out of range", into: &out) }

    /// Redis's reply to an unknown command: the name and the start of the arguments, quoted.
    private mutating func replyUnknownCommand(_ arguments: [ByteBuffer], into out: inout ByteBuffer) {
        var text = "ERR unknown command '\(Self.printable(arguments[0], max: 128))', with args beginning with: "
        var listed = ""
        for argument in arguments.dropFirst() where listed.utf8.count < 128 {
            listed += "'\(Self.printable(argument, max: 128 - listed.utf8.count))' "
        }
        text += listed
        error(text, into: &out)
    }

    /// Redis's reply to an unknown subcommand.
    mutating func unknownSubcommand(_ argument: ByteBuffer, of command: String, into out: inout ByteBuffer) {
        error("ERR unknown subcommand '\(Self.printable(argument, max: 128))'. Try \(command) HELP.", into: &out)
    }

    /// A HELP subcommand's reply: one status line per entry, as Redis sends them.
    static func writeHelp(_ lines: [String], into out: inout ByteBuffer) {
        out.writeArrayHeader(lines.count)
        for line in lines { out.writeSimpleString(line) }
    }

    /// Bytes as reply-safe text: CR and LF become spaces (an error reply is one line).
    static func printable(_ bytes: ByteBuffer, max: Int) -> String {
        var view = bytes
        let length = Swift.min(view.readableBytes, Swift.max(0, max))
        let slice = view.readBytes(length: length) ?? []
        return String(decoding: slice.map { $0 == 0x0D || $0 == 0x0A ? 0x20 : $0 }, as: UTF8.self)
    }

    // MARK: Argument parsing

    /// Whether an argument equals `upper` ignoring ASCII case.
    @inline(__always)
    static func matches(_ argument: ByteBuffer, _ upper: [UInt8]) -> Bool {
        argument.withUnsafeReadableBytes { CommandTable.equalsUppercased($0, upper) }
    }

    /// Parses a strict 64-bit decimal integer as Redis's `string2ll` does: no spaces, no `+`,
    /// no leading zeros.
    static func parseInt64(_ argument: ByteBuffer) -> Int64? {
        argument.withUnsafeReadableBytes { parseInt64(bytes: $0) }
    }

    /// `parseInt64` over raw bytes.
    @inline(__always)
    static func parseInt64(bytes: UnsafeRawBufferPointer) -> Int64? {
        PNCounter.parseDecimal(bytes)
    }

    /// Parses an integer from a value's bytes (INCR family, OBJECT ENCODING).
    static func parseInt64(_ bytes: [UInt8]) -> Int64? {
        bytes.withUnsafeBytes { parseInt64(bytes: $0) }
    }

    /// Parses a float as Redis's `strtold`-based parser accepts it (no spaces, no NaN).
    static func parseDouble(_ bytes: ByteBuffer) -> Double? {
        parseDouble(String(buffer: bytes))
    }

    static func parseDouble(_ text: String) -> Double? {
        guard !text.isEmpty, let first = text.utf8.first, first != 0x20, first != 0x09,
              let last = text.utf8.last, last != 0x20, last != 0x09,
              let value = Double(text), !value.isNaN
        else { return nil }
        return value
    }

    /// Formats a double the way INCRBYFLOAT replies: shortest round-trip digits, no exponent,
    /// no trailing `.0`.
    static func formatDouble(_ value: Double) -> String {
        if value == value.rounded() && Swift.abs(value) < 1e17 {
            return String(Int64(value))
        }
        let text = "\(value)"
        guard let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) else { return text }
        // Expand the exponent form into plain decimal digits.
        let mantissa = text[..<e]
        guard let exponent = Int(text[text.index(after: e)...]) else { return text }
        let negative = mantissa.hasPrefix("-")
        let unsigned = negative ? mantissa.dropFirst() : mantissa[...]
        let parts = unsigned.split(separator: ".", omittingEmptySubsequences: false)
        let integerDigits = String(parts[0])
        let fractionDigits = parts.count > 1 ? String(parts[1]) : ""
        var digits = integerDigits + fractionDigits
        var point = integerDigits.count + exponent
        if point <= 0 {
            digits = String(repeating: "0", count: -point + 1) + digits
            point = 1
        } else if point > digits.count {
            digits += String(repeating: "0", count: point - digits.count)
        }
        var result = String(digits.prefix(point))
        var fraction = String(digits.dropFirst(point))
        while fraction.hasSuffix("0") { fraction.removeLast() }
        if !fraction.isEmpty { result += "." + fraction }
        return (negative ? "-" : "") + result
    }

    /// Bytes of a decimal integer, for storing counters.
    static func decimalBytes(_ value: Int64) -> [UInt8] { Array(String(value).utf8) }
}
