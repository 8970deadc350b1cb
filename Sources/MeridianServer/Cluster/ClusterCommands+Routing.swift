import MeridianCluster
import MeridianCore
import MeridianRESP
import NIOConcurrencyHelpers
import NIOCore

/// Commands in a data center of several nodes (docs/CLUSTER.md, "The server wiring"): a
/// command on keys runs on its partition's primary. Any other node forwards it there and
/// relays the reply; the primary runs it on its keyspace, as a one-node data center does, and
/// answers a write once `write_acks` owners hold the keys' new records.
extension CommandExecutor {
    static let clusterCrossSlot = "CROSSSLOT Keys in request don't hash to the same slot (in a data center of several nodes the keys of one command must share a partition: use a {hash tag})"

    /// nil: run the command here (this node is the partition's primary, or the command was
    /// forwarded to it). Otherwise the outcome that forwards it — or splits it by partition —
    /// or refuses it.
    mutating func routeToPrimary(
        _ id: CommandID, _ shape: CommandShape, _ arguments: [ByteBuffer], cluster: ClusterEngine, into out: inout ByteBuffer
    ) -> CommandOutcome? {
        guard !runsForwardedCommands else { return nil }
        var partition = -1
        var spans = false
        forEachKey(shape, arguments) { key in
            let keyPartition = cluster.partition(of: key)
            if partition < 0 { partition = keyPartition } else if keyPartition != partition { spans = true }
        }
        // No key after all (`OBJECT HELP`): it runs here.
        guard partition >= 0 else { return nil }
        guard cluster.isMember else {
            error(ClusterEngine.notMemberReply, into: &out)
            return .keepOpen
        }
        let protocolVersion: UInt8 = resp == .v3 ? 3 : 2
        if spans {
            if id == .mset && arguments.count % 2 == 0 {
                error("ERR wrong number of arguments for 'mset' command", into: &out)
                return .keepOpen
            }
            guard let split = SplitCommand(id, arguments, cluster: cluster) else {
                error(Self.clusterCrossSlot, into: &out)
                return .keepOpen
            }
            return .replyLater(DeferredReply { reply in split.run(cluster: cluster, protocolVersion: protocolVersion) { reply($0, nil) } })
        }
        if cluster.isPrimaryHere(partition) {
            // Here, after a read quorum when the keys' namespaces ask for one: on the thread
            // that runs forwarded commands, which reads first (`ForwardedCommands`).
            guard !Self.readQuorumKeys(id, shape, arguments, namespaces: database.namespaces).isEmpty else { return nil }
            let commands = [arguments.map { Array($0.readableBytesView) }]
            return .replyLater(DeferredReply { reply in
                cluster.runHere(commands: commands, protocolVersion: protocolVersion) { reply(ByteBuffer(bytes: $0), nil) }
            })
        }
        let routedPartition = partition
        let commands = [arguments.map { Array($0.readableBytesView) }]
        let isWrite = shape.flags.contains(.write)
        return .replyLater(DeferredReply { reply in
            cluster.forward(partition: routedPartition, protocolVersion: protocolVersion, commands: commands) { result in
                reply(ByteBuffer(bytes: Self.replyBytes(of: result, isWrite: isWrite)), nil)
            }
        })
    }

    /// The keys a primary reads from their owners before it runs the command, with each one's
    /// `read_acks` (docs/CLUSTER.md, "The partition's primary executes"): none for a blind write
    /// (`SET` without options, `SETEX`, `PSETEX`, `MSET`: the result does not depend on what
    /// the key held) or when every key's namespace reads `one` (its own copy). `DEL` reads: a
    /// primary that lacks the key would delete nothing and leave it live on the others.
    static func readQuorumKeys(
        _ id: CommandID, _ shape: CommandShape, _ arguments: [ByteBuffer], namespaces: NamespaceTable
    ) -> [(key: [UInt8], acks: AckCount)] {
        switch id {
        case .set where arguments.count == 3: return []
        case .setex, .psetex, .mset: return []
        default: break
        }
        var keys: [(key: [UInt8], acks: AckCount)] = []
        let last = shape.lastKey < 0 ? arguments.count + Int(shape.lastKey) : Int(shape.lastKey)
        var position = Int(shape.firstKey)
        while shape.firstKey > 0 && position <= last && position < arguments.count {
            let key = arguments[position]
            let acks = namespaces.namespaces[key.withUnsafeReadableBytes { namespaces.index(of: $0) }].readAcks
            if acks != .one { keys.append((Array(key.readableBytesView), acks)) }
            position += Int(shape.keyStep)
        }
        return keys
    }

    /// The client's reply for a forwarded command's end.
    static func replyBytes(of result: ForwardingResult, isWrite: Bool) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        switch result {
        case .replied(let bytes): return bytes
        case .timedOut(mayHaveRun: true):
            buffer.writeErrorReply(isWrite ? "TIMEOUT the command may have been applied" : "TIMEOUT")
        case .timedOut(mayHaveRun: false): buffer.writeErrorReply("TIMEOUT the command did not run")
        case .tooLarge: buffer.writeErrorReply("ERR command too large to forward")
        case .replyTooLarge: buffer.writeErrorReply("ERR reply too large to forward (the command ran)")
        case .noPrimary: buffer.writeErrorReply("CLUSTERDOWN no live primary for the slot")
        }
        return Array(buffer.readableBytesView)
    }

    /// After a write ran here: holds its reply (written to `out` from `replyStart` on) until
    /// the record of each of its keys reached its namespace's `write_acks` owners; a write that does not is answered
    /// `-TIMEOUT` (it ran here and may still reach the others: hints and anti-entropy carry it).
    mutating func replicateAfterWrite(
        _ shape: CommandShape, _ arguments: [ByteBuffer], before: [DurableRecord?], replyFrom replyStart: Int, cluster: ClusterEngine,
        into out: inout ByteBuffer
    ) -> CommandOutcome {
        var records: [(key: [UInt8], record: DurableRecord, acks: AckCount)] = []
        var index = 0
        forEachKey(shape, arguments) { key in
            let bytes = Array(key.readableBytesView)
            defer { index += 1 }
            // A key the command did not change (`SET NX` on a key that exists, a `WRONGTYPE`)
            // has nothing to wait for.
            guard !records.contains(where: { $0.key == bytes }),
                  let record = database.withShard(of: key, { $0.record(of: bytes) }), record != before[index] else { return }
            let namespace = key.withUnsafeReadableBytes { database.namespaces.index(of: $0) }
            records.append((bytes, record, database.namespaces.namespaces[namespace].writeAcks))
        }
        guard !records.isEmpty else { return .keepOpen }
        let toReplicate = records
        let reply = ByteBuffer(bytes: out.getBytes(at: replyStart, length: out.writerIndex - replyStart) ?? [])
        out.moveWriterIndex(to: replyStart)
        return .replyLater(DeferredReply { done in
            cluster.replicate(toReplicate) { acknowledged in
                if acknowledged {
                    done(reply, nil)
                } else {
                    var error = ByteBufferAllocator().buffer(capacity: 96)
                    error.writeErrorReply("TIMEOUT the command may have been applied (fewer replicas than write_acks acknowledged it in time)")
                    done(error, nil)
                }
            }
        })
    }

    /// The record of every key argument of the command (nil: none), in argument order.
    func recordsOfKeys(_ shape: CommandShape, _ arguments: [ByteBuffer]) -> [DurableRecord?] {
        var records: [DurableRecord?] = []
        forEachKey(shape, arguments) { key in
            records.append(database.withShard(of: key) { $0.record(of: Array(key.readableBytesView)) })
        }
        return records
    }

    /// Calls `body` with every key argument of the command.
    func forEachKey(_ shape: CommandShape, _ arguments: [ByteBuffer], _ body: (ByteBuffer) -> Void) {
        let last = shape.lastKey < 0 ? arguments.count + Int(shape.lastKey) : Int(shape.lastKey)
        var position = Int(shape.firstKey)
        while position <= last && position < arguments.count {
            body(arguments[position])
            position += Int(shape.keyStep)
        }
    }
}

/// A multi-key command whose keys span partitions (docs/CLUSTER.md, "Routing"): `MGET`, `MSET`,
/// `DEL`, `UNLINK`, `EXISTS` and `TOUCH` run as one command per partition, each on its
/// partition's primary (here, or forwarded), all at once; the replies are put back together in
/// argument order. Atomicity ends at the partition: an `MSET` whose partitions answer
/// differently has set some of its keys (the reply is then the first error, which says so).
/// Commands whose meaning needs every key at once (`MSETNX`, `RENAME`) are not split.
struct SplitCommand: Sendable {
    enum Kind: Sendable {
        /// `MGET`: the parts' arrays, item by item, back in argument order.
        case values
        /// `MSET`: `OK` when every part said `OK`.
        case allOK
        /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the sum of the parts' integers.
        case sum
    }

    let kind: Kind
    /// Whether the command writes (a part that times out may then have run).
    let isWrite: Bool
    /// Each part: its partition, its command, and the argument positions (among the keys) of
    /// its keys.
    let parts: [(partition: Int, command: [[UInt8]], keyIndexes: [Int])]
    let keyCount: Int

    init?(_ id: CommandID, _ arguments: [ByteBuffer], cluster: ClusterEngine) {
        let step: Int
        switch id {
        case .mget: (kind, step) = (.values, 1)
        case .mset: (kind, step) = (.allOK, 2)
        case .del, .unlink, .exists, .touch: (kind, step) = (.sum, 1)
        default: return nil
        }
        isWrite = CommandTable.shape(id).flags.contains(.write)
        let name = Array(arguments[0].readableBytesView)
        var byPartition: [Int: Int] = [:]
        var parts: [(partition: Int, command: [[UInt8]], keyIndexes: [Int])] = []
        var keyIndex = 0
        var position = 1
        while position + step - 1 < arguments.count {
            let partition = cluster.partition(of: arguments[position])
            let part: Int
            if let existing = byPartition[partition] {
                part = existing
            } else {
                part = parts.count
                byPartition[partition] = part
                parts.append((partition, [name], []))
            }
            for offset in 0..<step { parts[part].command.append(Array(arguments[position + offset].readableBytesView)) }
            parts[part].keyIndexes.append(keyIndex)
            keyIndex += 1
            position += step
        }
        self.parts = parts
        self.keyCount = keyIndex
    }

    /// Runs every part and calls `done` once with the whole reply.
    func run(cluster: ClusterEngine, protocolVersion: UInt8, done: @escaping @Sendable (ByteBuffer) -> Void) {
        let replies = NIOLockedValueBox((remaining: parts.count, bytes: [[UInt8]?](repeating: nil, count: parts.count)))
        let isWrite = self.isWrite
        for (index, part) in parts.enumerated() {
            let finish: @Sendable ([UInt8]) -> Void = { bytes in
                let all = replies.withLockedValue { state -> [[UInt8]]? in
                    state.bytes[index] = bytes
                    state.remaining -= 1
                    return state.remaining == 0 ? state.bytes.map { $0! } : nil
                }
                if let all { done(assemble(all)) }
            }
            if cluster.isPrimaryHere(part.partition) {
                cluster.runHere(commands: [part.command], protocolVersion: protocolVersion, reply: finish)
            } else {
                cluster.forward(partition: part.partition, protocolVersion: protocolVersion, commands: [part.command]) { result in
                    finish(CommandExecutor.replyBytes(of: result, isWrite: isWrite))
                }
            }
        }
    }

    /// The whole reply from the parts' replies (in part order).
    func assemble(_ replies: [[UInt8]]) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 64)
        // The first error a part answered stands for the command.
        if let failed = replies.first(where: { $0.first == UInt8(ascii: "-") }) {
            out.writeBytes(failed)
            return out
        }
        switch kind {
        case .allOK:
            guard replies.allSatisfy({ $0 == Array("+OK\r\n".utf8) }) else { return Self.unexpected(replies) }
            out.writeBytes(Array("+OK\r\n".utf8))
        case .sum:
            var total = 0
            for reply in replies {
                guard let value = RESPReplyScanner.integer(reply) else { return Self.unexpected(replies) }
                total += value
            }
            out.writeIntegerReply(total)
        case .values:
            var items = [ArraySlice<UInt8>?](repeating: nil, count: keyCount)
            for (part, reply) in zip(parts, replies) {
                guard let elements = RESPReplyScanner.arrayElements(reply), elements.count == part.keyIndexes.count else {
                    return Self.unexpected(replies)
                }
                for (keyIndex, element) in zip(part.keyIndexes, elements) { items[keyIndex] = element }
            }
            out.writeArrayHeader(keyCount)
            for item in items { out.writeBytes(item!) }
        }
        return out
    }

    private static func unexpected(_ replies: [[UInt8]]) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 64)
        out.writeErrorReply("ERR a part of a command split by partition answered unexpectedly")
        return out
    }
}

/// Reads whole RESP replies (as a primary wrote them) back: what a split command needs to put
/// its parts' replies together.
enum RESPReplyScanner {
    /// The integer of a `:n` reply.
    static func integer(_ reply: [UInt8]) -> Int? {
        guard reply.first == UInt8(ascii: ":"), let end = lineEnd(reply, from: 1), end + 2 == reply.count else { return nil }
        return Int(String(decoding: reply[1..<end], as: UTF8.self))
    }

    /// The elements of an array reply, each as its own bytes.
    static func arrayElements(_ reply: [UInt8]) -> [ArraySlice<UInt8>]? {
        guard reply.first == UInt8(ascii: "*"), let end = lineEnd(reply, from: 1),
              let count = Int(String(decoding: reply[1..<end], as: UTF8.self)), count >= 0 else { return nil }
        var elements: [ArraySlice<UInt8>] = []
        var position = end + 2
        for _ in 0..<count {
            guard let length = valueLength(reply, from: position) else { return nil }
            elements.append(reply[position..<position + length])
            position += length
        }
        return position == reply.count ? elements : nil
    }

    /// The byte length of the value starting at `start` (bulk strings, nulls, integers, simple
    /// strings and errors, arrays of them), or nil when it is cut short or not one of those.
    static func valueLength(_ bytes: [UInt8], from start: Int) -> Int? {
        guard start < bytes.count, let end = lineEnd(bytes, from: start + 1) else { return nil }
        let header = String(decoding: bytes[(start + 1)..<end], as: UTF8.self)
        switch bytes[start] {
        case UInt8(ascii: "$"):
            guard let length = Int(header) else { return nil }
            if length < 0 { return end + 2 - start }
            let total = end + 2 + length + 2
            return total <= bytes.count ? total - start : nil
        case UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "+"), UInt8(ascii: "-"):
            return end + 2 - start
        case UInt8(ascii: "*"):
            guard let count = Int(header) else { return nil }
            var position = end + 2
            for _ in 0..<max(0, count) {
                guard let length = valueLength(bytes, from: position) else { return nil }
                position += length
            }
            return position - start
        default:
            return nil
        }
    }

    /// The index of the `\r` that ends the line starting at `start`.
    private static func lineEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var index = start
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "\r") && bytes[index + 1] == UInt8(ascii: "\n") { return index }
            index += 1
        }
        return nil
    }
}
