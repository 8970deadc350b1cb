import MeridianCore
import MeridianRESP
import NIOCore

/// Server commands: INFO, CONFIG, COMMAND, TIME, FLUSHDB/FLUSHALL.
extension CommandExecutor {
    /// TIME → [seconds, microseconds] as bulk strings.
    mutating func time(into out: inout ByteBuffer) {
        let micros = SystemClock.nowUnixMicros()
        out.writeArrayHeader(2)
        out.writeBulkString(String(micros / 1_000_000))
        out.writeBulkString(String(micros % 1_000_000))
    }

    /// FLUSHDB / FLUSHALL [ASYNC|SYNC]: both remove every key (there is one database).
    mutating func flush(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        if a.count > 2 || (a.count == 2 && !Self.matches(a[1], Array("ASYNC".utf8)) && !Self.matches(a[1], Array("SYNC".utf8))) {
            syntaxError(into: &out)
            return
        }
        if server.cluster != nil {
            // Clearing one node's replicas would only let anti-entropy bring the keys back
            // from the other owners; a data center's flush is not built yet.
            error("ERR FLUSHALL and FLUSHDB are not supported in a data center of several nodes yet (delete the keys instead)", into: &out)
            return
        }
        // The reply waits until the disk is cleared too (the clear is synced like a
        // write-through write), so a FLUSHALL that was answered cannot come back after a crash.
        syncSequence = max(syncSequence, database.removeAll())
        out.writeSimpleString("OK")
    }

    // MARK: Persistence

    /// SAVE: makes every pending write-back state due now and replies once all of it is
    /// synced. There is no snapshot file: durable namespaces are always on disk, so SAVE only
    /// closes the write-back window early. Without durable namespaces there is nothing to save.
    mutating func save(into out: inout ByteBuffer) {
        if let storage = database.storage {
            syncSequence = max(syncSequence, storage.flushNow())
        }
        out.writeSimpleString("OK")
    }

    /// BGSAVE [SCHEDULE]: like SAVE, but replies at once.
    mutating func bgsave(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        if a.count > 2 || (a.count == 2 && !Self.matches(a[1], Array("SCHEDULE".utf8))) {
            syntaxError(into: &out)
            return
        }
        guard let storage = database.storage else {
            error("ERR no namespace is durable: there is nothing to save (every namespace has durability: memory)", into: &out)
            return
        }
        storage.flushNow()
        out.writeSimpleString("Background saving started")
    }

    /// LASTSAVE: the Unix time in seconds of the last completed sync (the start time when
    /// there was none, as Redis answers with its start time before the first save).
    mutating func lastsave(into out: inout ByteBuffer) {
        let lastSyncMs = database.storage?.statisticsSnapshot().lastSyncUnixMs ?? 0
        out.writeIntegerReply(Int((lastSyncMs > 0 ? lastSyncMs : server.startUnixMs) / 1000))
    }

    /// INFO [section ...]
    mutating func info(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let sections = a.dropFirst().map { String(buffer: $0).lowercased() }
        flushStatistics()  // so this connection's own commands so far are counted
        out.writeVerbatimText(InfoReport(server: server).render(sections: sections), resp)
    }

    // MARK: CONFIG

    /// CONFIG GET pattern [pattern ...] | SET name value [name value ...] | RESETSTAT | HELP
    mutating func config(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let sub = a[1]
        if Self.matches(sub, Array("GET".utf8)) {
            guard a.count >= 3 else {
                error("ERR wrong number of arguments for 'config|get' command", into: &out)
                return
            }
            var pairs: [(String, String)] = []
            let settings = RuntimeSettings(server: server).all()
            for argument in a.dropFirst(2) {
                let requested = String(buffer: argument)
                let lowered = requested.lowercased()
                if !lowered.contains(where: { $0 == "*" || $0 == "?" || $0 == "[" }) {
                    // An exact name is echoed as the client spelled it, as Redis does.
                    if let setting = settings.first(where: { $0.0 == lowered }), !pairs.contains(where: { $0.0.lowercased() == lowered }) {
                        pairs.append((requested, setting.1))
                    }
                    continue
                }
                guard let pattern = compilePattern(ByteBuffer(string: lowered), into: &out) else { return }
                for (name, value) in settings where pattern.matches(Array(name.utf8)) && !pairs.contains(where: { $0.0.lowercased() == name }) {
                    pairs.append((name, value))
                }
            }
            out.writeMapHeader(pairs.count, resp)
            for (name, value) in pairs {
                out.writeBulkString(name)
                out.writeBulkString(value)
            }
        } else if Self.matches(sub, Array("SET".utf8)) {
            guard a.count >= 4 && a.count % 2 == 0 else {
                error("ERR wrong number of arguments for 'config|set' command", into: &out)
                return
            }
            var changes: [(String, String)] = []
            var index = 2
            while index < a.count {
                changes.append((String(buffer: a[index]).lowercased(), String(buffer: a[index + 1])))
                index += 2
            }
            let settings = RuntimeSettings(server: server)
            // Validate every change before applying any, as Redis does.
            var seen: Set<String> = []
            for (name, _) in changes where !seen.insert(name).inserted {
                error("ERR CONFIG SET failed (possibly related to argument '\(name)') - duplicate parameter", into: &out)
                return
            }
            for (name, value) in changes {
                if let problem = settings.validate(name: name, value: value) {
                    error(problem, into: &out)
                    return
                }
            }
            for (name, value) in changes { settings.apply(name: name, value: value) }
            out.writeSimpleString("OK")
        } else if Self.matches(sub, Array("RESETSTAT".utf8)) {
            database.statistics.reset()
            out.writeSimpleString("OK")
        } else if Self.matches(sub, Array("HELP".utf8)) {
            let lines = [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
                "RESETSTAT", "    Reset statistics reported by the INFO command.",
                "HELP", "    Print this help.",
            ]
            Self.writeHelp(lines, into: &out)
        } else {
            unknownSubcommand(sub, of: "CONFIG", into: &out)
        }
    }

    // MARK: COMMAND

    /// COMMAND | COMMAND COUNT | COMMAND INFO [name ...] | COMMAND DOCS [name ...] | COMMAND LIST
    mutating func command(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        if a.count == 1 {
            out.writeArrayHeader(CommandTable.specs.count)
            for spec in CommandTable.specs { writeCommandInfo(spec, into: &out) }
            return
        }
        let sub = a[1]
        if Self.matches(sub, Array("COUNT".utf8)) {
            out.writeIntegerReply(CommandTable.specs.count)
        } else if Self.matches(sub, Array("LIST".utf8)) {
            out.writeArrayHeader(CommandTable.specs.count)
            for spec in CommandTable.specs { out.writeBulkString(spec.name) }
        } else if Self.matches(sub, Array("INFO".utf8)) {
            let specs: [CommandSpec?] = a.count == 2 ? CommandTable.specs.map { $0 } : a.dropFirst(2).map { name in
                name.withUnsafeReadableBytes { CommandTable.lookup($0) }.map(CommandTable.spec)
            }
            out.writeArrayHeader(specs.count)
            for spec in specs {
                if let spec { writeCommandInfo(spec, into: &out) } else { out.writeNull(resp) }
            }
        } else if Self.matches(sub, Array("DOCS".utf8)) {
            let specs: [CommandSpec] = a.count == 2 ? CommandTable.specs : a.dropFirst(2).compactMap { name in
                name.withUnsafeReadableBytes { CommandTable.lookup($0) }.map(CommandTable.spec)
            }
            out.writeMapHeader(specs.count, resp)
            for spec in specs {
                out.writeBulkString(spec.name)
                out.writeMapHeader(3, resp)
                out.writeBulkString("summary")
                out.writeBulkString(spec.summary)
                out.writeBulkString("since")
                out.writeBulkString(spec.since)
                out.writeBulkString("group")
                out.writeBulkString(spec.group)
            }
        } else if Self.matches(sub, Array("HELP".utf8)) {
            let lines = [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)", "    Return details about all commands.",
                "COUNT", "    Return the total number of commands in this server.",
                "LIST", "    Return a list of all commands in this server.",
                "INFO [<command-name> ...]", "    Return details about the given commands, or all of them.",
                "DOCS [<command-name> ...]", "    Return documentation details about the given commands, or all of them.",
                "HELP", "    Print this help.",
            ]
            Self.writeHelp(lines, into: &out)
        } else {
            unknownSubcommand(sub, of: "COMMAND", into: &out)
        }
    }

    /// One COMMAND INFO entry in Redis 7's ten-field layout.
    private func writeCommandInfo(_ spec: CommandSpec, into out: inout ByteBuffer) {
        out.writeArrayHeader(10)
        out.writeBulkString(spec.name)
        out.writeIntegerReply(spec.arity)
        let flags = spec.flags.names
        out.writeSetHeader(flags.count, resp)
        for flag in flags { out.writeSimpleString(flag) }
        out.writeIntegerReply(spec.firstKey)
        out.writeIntegerReply(spec.lastKey)
        out.writeIntegerReply(spec.keyStep)
        out.writeSetHeader(1, resp)
        out.writeSimpleString("@" + spec.group)
        out.writeArrayHeader(0)  // tips
        out.writeArrayHeader(0)  // key specifications
        out.writeArrayHeader(spec.subcommands.count)
        for subcommand in spec.subcommands {
            out.writeArrayHeader(10)
            out.writeBulkString("\(spec.name)|\(subcommand)")
            out.writeIntegerReply(-2)
            out.writeSetHeader(0, resp)
            out.writeIntegerReply(0)
            out.writeIntegerReply(0)
            out.writeIntegerReply(0)
            out.writeSetHeader(0, resp)
            out.writeArrayHeader(0)
            out.writeArrayHeader(0)
            out.writeArrayHeader(0)
        }
    }
}

/// The settings CONFIG GET reports and CONFIG SET may change.
struct RuntimeSettings {
    let server: ServerContext

    /// Settings that can be changed at run time.
    static let mutable: Set<String> = ["maxmemory", "maxmemory-samples", "maxclients"]

    /// Every setting with its current value, in a stable order.
    func all() -> [(String, String)] {
        let database = server.database
        let address = server.listenAddress.withLockedValue { $0 }
        return [
            ("maxmemory", String(database.maxmemoryBytes.load(ordering: .relaxed))),
            ("maxmemory-samples", String(database.evictionSamples.load(ordering: .relaxed))),
            ("maxclients", String(server.maxClients.load(ordering: .relaxed))),
            // Eviction is per namespace (`eviction: lru|none`); this is the closest Redis name.
            ("maxmemory-policy", "allkeys-lru"),
            ("port", String(address.port)),
            ("bind", address.host),
            ("databases", "1"),
            ("dir", server.dataDirectory),
            // Persistence belongs to namespaces (`durability`); there is no RDB or AOF.
            ("save", ""),
            ("appendonly", "no"),
            ("timeout", "0"),
            ("proto-max-bulk-len", String(Limits.bulkBytesMax)),
            ("client-query-buffer-limit", String(Limits.queryBufferBytesMax)),
        ]
    }

    /// Why `name value` cannot be applied, as the client reply, or nil.
    func validate(name: String, value: String) -> String? {
        switch name {
        case "maxmemory":
            guard Units.parseBytes(value) != nil else {
                return "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
            }
            return nil
        case "maxmemory-samples":
            guard let samples = Int(value), (1...64).contains(samples) else {
                return "ERR CONFIG SET failed (possibly related to argument 'maxmemory-samples') - argument must be between 1 and 64 inclusive"
            }
            return nil
        case "maxclients":
            guard let clients = Int(value), (1...1_000_000).contains(clients) else {
                return "ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument must be between 1 and 1000000 inclusive"
            }
            return nil
        default:
            if all().contains(where: { $0.0 == name }) {
                return "ERR CONFIG SET failed (possibly related to argument '\(name)') - can't set immutable config"
            }
            return "ERR Unknown option or number of arguments for CONFIG SET - '\(name)'"
        }
    }

    /// Applies a validated change.
    func apply(name: String, value: String) {
        switch name {
        case "maxmemory":
            let bytes = Units.parseBytes(value)!
            server.database.maxmemoryBytes.store(bytes, ordering: .relaxed)
            server.logger.info("maxmemory changed", metadata: ["maxmemory": "\(bytes)"])
        case "maxmemory-samples":
            server.database.evictionSamples.store(Int(value)!, ordering: .relaxed)
        case "maxclients":
            server.maxClients.store(Int(value)!, ordering: .relaxed)
        default:
            preconditionFailure("apply of an unvalidated setting \(name)")
        }
    }
}
