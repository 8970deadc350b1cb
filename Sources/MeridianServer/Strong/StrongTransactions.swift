import MeridianCore
import MeridianPaxos
import MeridianRESP
import NIOCore

/// What MULTI has queued on a connection: each command's operations and reply shape.
struct StrongTransactionQueue {
    var commands: [CommandExecutor.StrongTranslation] = []
    /// A command was refused while queueing: EXEC answers EXECABORT (as Redis does).
    var failed = false
}

/// `MULTI` / `EXEC` / `DISCARD` / `WATCH` / `UNWATCH` on strong keys (docs/CONSISTENCY.md,
/// "CAS, transactions, locks"): the queued commands become one transaction entry of the
/// partition's log with the versions of the watched keys, so EXEC applies all of them or none,
/// and none when a watched key was written since WATCH read its version.
extension CommandExecutor {
    /// Handles the transaction commands, and every command while MULTI queues; nil for the rest.
    mutating func routeTransaction(_ id: CommandID, _ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome? {
        switch id {
        case .multi:
            guard let engine = server.strong else {
                error("ERR MULTI is supported on strong keys only, and no namespace of this node is strong", into: &out)
                return .keepOpen
            }
            _ = engine
            guard transactionQueue == nil else {
                error("ERR MULTI calls can not be nested", into: &out)
                return .keepOpen
            }
            transactionQueue = StrongTransactionQueue()
            out.writeSimpleString("OK")
            return .keepOpen
        case .discard:
            guard transactionQueue != nil else {
                error("ERR DISCARD without MULTI", into: &out)
                return .keepOpen
            }
            transactionQueue = nil
            watchedKeys = []
            out.writeSimpleString("OK")
            return .keepOpen
        case .unwatch:
            watchedKeys = []
            out.writeSimpleString("OK")
            return .keepOpen
        case .exec:
            return exec(into: &out)
        case .watch where transactionQueue != nil:
            error("ERR WATCH inside MULTI is not allowed", into: &out)
            return .keepOpen
        case .quit, .reset:
            return nil
        default:
            guard transactionQueue != nil else { return nil }
            // Keyed commands on strong keys are queued by `routeStrong`; everything else is
            // refused here, and makes EXEC fail.
            let shape = CommandTable.shape(id)
            if shape.firstKey > 0 || id == .lock || id == .unlock { return nil }
            transactionQueue!.failed = true
            error("ERR '\(CommandTable.spec(id).name)' cannot be queued: MULTI takes only commands on strong keys", into: &out)
            return .keepOpen
        }
    }

    /// Queues a command on strong keys (routeStrong decided they all are strong).
    mutating func queueInTransaction(_ id: CommandID, _ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let engine = server.strong else { return }
        if id == .watch {
            error("ERR WATCH inside MULTI is not allowed", into: &out)
            return
        }
        guard let translation = translateStrong(id, a, engine: engine, into: &out) else {
            transactionQueue!.failed = true
            return
        }
        transactionQueue!.commands.append(translation)
        out.writeSimpleString("QUEUED")
    }

    /// A queued command that is not on strong keys (or mixes): refused, and EXEC will fail.
    mutating func refuseInTransaction(_ message: String, into out: inout ByteBuffer) {
        transactionQueue!.failed = true
        error(message, into: &out)
    }

    private mutating func exec(into out: inout ByteBuffer) -> CommandOutcome {
        guard let queue = transactionQueue else {
            error("ERR EXEC without MULTI", into: &out)
            return .keepOpen
        }
        transactionQueue = nil
        let watched = watchedKeys
        watchedKeys = []
        if queue.failed {
            error("EXECABORT Transaction discarded because of previous errors.", into: &out)
            return .keepOpen
        }
        guard let engine = server.strong else { return .keepOpen }
        let operations = queue.commands.flatMap(\.operations)
        let keys = operations.map(\.key) + watched.map(\.key)
        if keys.isEmpty {
            out.writeArrayHeader(0)
            return .keepOpen
        }
        let partitions = Set(keys.map { engine.partition(of: $0) })
        guard partitions.count == 1, let partition = partitions.first else {
            error(Self.crossSlot, into: &out)
            return .keepOpen
        }
        let command = StrongCommand(transaction: operations, watched: watched)
        guard command.approximateBytes <= Self.strongCommandBytesMax else {
            error(Self.tooLarge, into: &out)
            return .keepOpen
        }
        let version = resp
        let timeoutMs = engine.configuration.timeoutMs
        let commands = queue.commands.map { ($0.operations.count, $0.shape) }
        return .replyLater(DeferredReply { reply in
            engine.submit(command, partition: partition) { result in
                var buffer = ByteBufferAllocator().buffer(capacity: 64)
                switch result {
                case .reply(.array(let items)) where items.count == operations.count:
                    buffer.writeArrayHeader(commands.count)
                    var index = 0
                    for (count, shape) in commands {
                        let part = count == 1 ? items[index] : .array(Array(items[index..<(index + count)]))
                        Self.encode(.reply(part), shape: shape, partition: partition, timeoutMs: timeoutMs, version: version, into: &buffer)
                        index += count
                    }
                default:
                    Self.encode(result, shape: .plain, partition: partition, timeoutMs: timeoutMs, version: version, into: &buffer)
                }
                reply(buffer, nil)
            }
        })
    }

    /// WATCH key...: reads the keys' versions (linearizably) and keeps them for EXEC.
    mutating func watch(_ a: [ByteBuffer], engine: StrongEngine, into out: inout ByteBuffer) -> CommandOutcome {
        let keys = a.dropFirst().map { Array($0.readableBytesView) }
        let partitions = Set((keys + watchedKeys.map(\.key)).map { engine.partition(of: $0) })
        guard partitions.count == 1, let partition = partitions.first else {
            error(Self.crossSlot, into: &out)
            return .keepOpen
        }
        let command = StrongCommand(transaction: keys.map { .version(key: $0) })
        let version = resp
        let timeoutMs = engine.configuration.timeoutMs
        return .replyLater(DeferredReply { reply in
            engine.submit(command, partition: partition) { result in
                var buffer = ByteBufferAllocator().buffer(capacity: 16)
                guard case .reply(.array(let items)) = result, items.count == keys.count else {
                    Self.encode(result, shape: .plain, partition: partition, timeoutMs: timeoutMs, version: version, into: &buffer)
                    reply(buffer, nil)
                    return
                }
                var seen: [WatchedKey] = []
                for (key, item) in zip(keys, items) {
                    if case .integer(let slot) = item { seen.append(WatchedKey(key: key, version: UInt64(truncatingIfNeeded: slot))) }
                }
                buffer.writeSimpleString("OK")
                let watchedNow = seen
                reply(buffer) { executor in
                    // A key watched twice keeps its first version (an older one can only make
                    // EXEC fail, never wrongly succeed).
                    for watched in watchedNow where !executor.watchedKeys.contains(where: { $0.key == watched.key }) {
                        executor.watchedKeys.append(watched)
                    }
                }
            }
        })
    }
}
