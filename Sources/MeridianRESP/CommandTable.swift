/// Every command a Meridian node knows. The raw value indexes `CommandTable.specs`.
public enum CommandID: UInt8, CaseIterable, Sendable {
    // Connection and server
    case ping, echo, hello, quit, reset, select, auth, command, client, info, dbsize, time
    case flushdb, flushall, save, bgsave, lastsave, config, audit
    // Cluster introspection (docs/CLUSTER.md)
    case cluster
    // Strings
    case get, set, setnx, setex, psetex, getset, getdel, getex, mget, mset, msetnx
    case append, strlen, getrange, substr, setrange
    case incr, decr, incrby, decrby, incrbyfloat
    // Generic keyspace
    case del, unlink, exists, touch, type, rename, renamenx
    case expire, pexpire, expireat, pexpireat, ttl, pttl, expiretime, pexpiretime, persist
    case scan, keys, randomkey, object
    // Locks with fencing tokens (Meridian's own; docs/CONSISTENCY.md)
    case lock, unlock
    // Transactions (strong keys only)
    case multi, exec, discard, watch, unwatch
}

/// Properties of a command, in the sense of Redis's command table.
public struct CommandFlags: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Changes the keyspace.
    public static let write = CommandFlags(rawValue: 1 << 0)
    /// Only reads the keyspace.
    public static let readonly = CommandFlags(rawValue: 1 << 1)
    /// May grow memory: refused with `-OOM` when over `maxmemory` and eviction cannot help.
    public static let denyOOM = CommandFlags(rawValue: 1 << 2)
    /// Administrative.
    public static let admin = CommandFlags(rawValue: 1 << 3)
    /// Constant or logarithmic time.
    public static let fast = CommandFlags(rawValue: 1 << 4)
    /// Works before the connection is authenticated or in any state.
    public static let connection = CommandFlags(rawValue: 1 << 5)

    /// The flag names COMMAND INFO reports.
    public var names: [String] {
        var result: [String] = []
        if contains(.write) { result.append("write") }
        if contains(.readonly) { result.append("readonly") }
        if contains(.denyOOM) { result.append("denyoom") }
        if contains(.admin) { result.append("admin") }
        if contains(.fast) { result.append("fast") }
        if contains(.connection) { result.append("no_auth") }
        return result
    }
}

/// The static description of one command.
public struct CommandSpec: Sendable {
    public let id: CommandID
    /// Lower-case name, as Redis reports it.
    public let name: String
    /// Redis arity: positive means exactly that many arguments (the name included),
    /// negative means at least that many.
    public let arity: Int
    public let flags: CommandFlags
    /// Key positions: first, last (negative counts from the end) and step; 0 when keyless.
    public let firstKey: Int
    public let lastKey: Int
    public let keyStep: Int
    /// Redis's command group (`string`, `generic`, `connection`, `server`).
    public let group: String
    /// The Redis version that introduced the command.
    public let since: String
    /// One line on what it does.
    public let summary: String
    /// Subcommand names for container commands (CLIENT, CONFIG, COMMAND, OBJECT).
    public let subcommands: [String]
}

/// The part of a spec that every request needs, without reference-counted fields: copying a
/// `CommandSpec` would retain and release its strings on every command.
public struct CommandShape: Sendable {
    public let arity: Int32
    public let flags: CommandFlags
    public let firstKey: Int16
    public let lastKey: Int16
    public let keyStep: Int16

    /// Whether `argumentCount` (the name included) satisfies the arity.
    @inlinable
    public func acceptsArgumentCount(_ argumentCount: Int) -> Bool {
        arity >= 0 ? argumentCount == Int(arity) : argumentCount >= -Int(arity)
    }
}

/// The command table and the byte-level, case-insensitive name lookup used on every request.
public enum CommandTable {
    public static let specs: [CommandSpec] = {
        func spec(
            _ id: CommandID, _ arity: Int, _ flags: CommandFlags, keys: (Int, Int, Int) = (0, 0, 0),
            _ group: String, _ since: String, _ summary: String, subcommands: [String] = []
        ) -> CommandSpec {
            CommandSpec(
                id: id, name: "\(id)", arity: arity, flags: flags, firstKey: keys.0, lastKey: keys.1,
                keyStep: keys.2, group: group, since: since, summary: summary, subcommands: subcommands)
        }
        let one = (1, 1, 1)
        let all = (1, -1, 1)
        let list: [CommandSpec] = [
            spec(.ping, -1, [.fast, .connection], "connection", "1.0.0", "Returns the server's liveliness response."),
            spec(.echo, 2, [.fast, .connection], "connection", "1.0.0", "Returns the given string."),
            spec(.hello, -1, [.fast, .connection], "connection", "6.0.0", "Handshakes with the server (protocol version, client name)."),
            spec(.quit, -1, [.fast, .connection], "connection", "1.0.0", "Closes the connection."),
            spec(.reset, 1, [.fast, .connection], "connection", "6.2.0", "Resets the connection."),
            spec(.select, 2, [.fast, .connection], "connection", "1.0.0", "Changes the selected database (only 0 exists)."),
            spec(.auth, -2, [.fast, .connection], "connection", "1.0.0", "Authenticates the connection."),
            spec(.command, -1, [.connection], "server", "2.8.13", "Returns detailed information about all commands.",
                 subcommands: ["count", "docs", "info", "list"]),
            spec(.client, -2, [.connection], "connection", "2.4.0", "Inspects and names client connections.",
                 subcommands: ["getname", "id", "info", "list", "setinfo", "setname"]),
            spec(.info, -1, [], "server", "1.0.0", "Returns information and statistics about the server."),
            spec(.dbsize, 1, [.readonly, .fast], "server", "1.0.0", "Returns the number of keys."),
            spec(.time, 1, [.fast], "server", "2.6.0", "Returns the server time."),
            spec(.flushdb, -1, [.write], "server", "1.0.0", "Removes all keys."),
            spec(.flushall, -1, [.write], "server", "1.0.0", "Removes all keys."),
            spec(.save, 1, [.admin], "server", "1.0.0", "Flushes and syncs every durable namespace's pending writes; replies once they are on disk."),
            spec(.bgsave, -1, [.admin], "server", "1.0.0", "Starts flushing every durable namespace's pending writes; replies at once."),
            spec(.lastsave, 1, [.fast], "server", "1.0.0", "Returns the Unix time of the last completed disk sync."),
            spec(.config, -2, [.admin], "server", "2.0.0", "Reads and changes runtime settings.",
                 subcommands: ["get", "resetstat", "set"]),
            spec(.audit, -2, [.admin], "server", "meridian", "Exports the audit log of changes to audited namespaces (docs/AUDIT.md).",
                 subcommands: ["export", "help"]),
            spec(.cluster, -2, [], "cluster", "3.0.0", "Reports which node of this data center serves which hash slots.",
                 subcommands: ["help", "info", "keyslot", "myid", "nodes", "shards", "slots"]),
            spec(.get, 2, [.readonly, .fast], keys: one, "string", "1.0.0", "Returns the string value of a key."),
            spec(.set, -3, [.write, .denyOOM], keys: one, "string", "1.0.0", "Sets the string value of a key."),
            spec(.setnx, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Sets a key only when it does not exist."),
            spec(.setex, 4, [.write, .denyOOM], keys: one, "string", "2.0.0", "Sets a key with a TTL in seconds."),
            spec(.psetex, 4, [.write, .denyOOM], keys: one, "string", "2.6.0", "Sets a key with a TTL in milliseconds."),
            spec(.getset, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Sets a key and returns its old value."),
            spec(.getdel, 2, [.write, .fast], keys: one, "string", "6.2.0", "Returns a key's value and deletes it."),
            spec(.getex, -2, [.write, .fast], keys: one, "string", "6.2.0", "Returns a key's value and changes its TTL."),
            spec(.mget, -2, [.readonly, .fast], keys: all, "string", "1.0.0", "Returns the values of several keys."),
            spec(.mset, -3, [.write, .denyOOM], keys: (1, -1, 2), "string", "1.0.1", "Sets several keys."),
            spec(.msetnx, -3, [.write, .denyOOM], keys: (1, -1, 2), "string", "1.0.1", "Sets several keys only if none exists."),
            spec(.append, 3, [.write, .denyOOM, .fast], keys: one, "string", "2.0.0", "Appends to a key's value."),
            spec(.strlen, 2, [.readonly, .fast], keys: one, "string", "2.2.0", "Returns the length of a key's value."),
            spec(.getrange, 4, [.readonly], keys: one, "string", "2.4.0", "Returns a substring of a key's value."),
            spec(.substr, 4, [.readonly], keys: one, "string", "1.0.0", "Returns a substring of a key's value."),
            spec(.setrange, 4, [.write, .denyOOM], keys: one, "string", "2.2.0", "Overwrites part of a key's value."),
            spec(.incr, 2, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Increments an integer value by one."),
            spec(.decr, 2, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Decrements an integer value by one."),
            spec(.incrby, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Increments an integer value."),
            spec(.decrby, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Decrements an integer value."),
            spec(.incrbyfloat, 3, [.write, .denyOOM, .fast], keys: one, "string", "2.6.0", "Increments a floating point value."),
            spec(.del, -2, [.write], keys: all, "generic", "1.0.0", "Deletes keys."),
            spec(.unlink, -2, [.write, .fast], keys: all, "generic", "4.0.0", "Deletes keys."),
            spec(.exists, -2, [.readonly, .fast], keys: all, "generic", "1.0.0", "Counts the given keys that exist."),
            spec(.touch, -2, [.readonly, .fast], keys: all, "generic", "3.2.1", "Updates the last access time of keys."),
            spec(.type, 2, [.readonly, .fast], keys: one, "generic", "1.0.0", "Returns the type of a key's value."),
            spec(.rename, 3, [.write], keys: (1, 2, 1), "generic", "1.0.0", "Renames a key."),
            spec(.renamenx, 3, [.write, .fast], keys: (1, 2, 1), "generic", "1.0.0", "Renames a key if the new name is free."),
            spec(.expire, -3, [.write, .fast], keys: one, "generic", "1.0.0", "Sets a key's TTL in seconds."),
            spec(.pexpire, -3, [.write, .fast], keys: one, "generic", "2.6.0", "Sets a key's TTL in milliseconds."),
            spec(.expireat, -3, [.write, .fast], keys: one, "generic", "1.2.0", "Sets a key's expiry as a Unix time in seconds."),
            spec(.pexpireat, -3, [.write, .fast], keys: one, "generic", "2.6.0", "Sets a key's expiry as a Unix time in milliseconds."),
            spec(.ttl, 2, [.readonly, .fast], keys: one, "generic", "1.0.0", "Returns a key's TTL in seconds."),
            spec(.pttl, 2, [.readonly, .fast], keys: one, "generic", "2.6.0", "Returns a key's TTL in milliseconds."),
            spec(.expiretime, 2, [.readonly, .fast], keys: one, "generic", "7.0.0", "Returns a key's expiry as a Unix time in seconds."),
            spec(.pexpiretime, 2, [.readonly, .fast], keys: one, "generic", "7.0.0", "Returns a key's expiry as a Unix time in milliseconds."),
            spec(.persist, 2, [.write, .fast], keys: one, "generic", "2.2.0", "Removes a key's TTL."),
            spec(.scan, -2, [.readonly], "generic", "2.8.0", "Iterates over the keys."),
            spec(.keys, 2, [.readonly], "generic", "1.0.0", "Returns the keys matching a pattern."),
            spec(.randomkey, 1, [.readonly], "generic", "1.0.0", "Returns a random key."),
            spec(.object, -2, [.readonly], keys: (2, 2, 1), "generic", "2.2.3", "Inspects a key's internals.",
                 subcommands: ["encoding", "freq", "help", "idletime", "refcount"]),
            spec(.lock, -3, [.write, .fast], keys: one, "generic", "meridian", "Grants a lock for a TTL in milliseconds; replies its fencing token, or nil while another holds it (docs/CONSISTENCY.md)."),
            spec(.unlock, 3, [.write, .fast], keys: one, "generic", "meridian", "Releases a lock held with the given fencing token; replies 1, or 0 when the token no longer holds it."),
            spec(.multi, 1, [.fast], "transactions", "1.2.0", "Starts a transaction of commands on strong keys of one partition."),
            spec(.exec, 1, [], "transactions", "1.2.0", "Commits the queued commands as one Paxos entry: all or nothing."),
            spec(.discard, 1, [.fast], "transactions", "2.0.0", "Discards the queued commands and the watched keys."),
            spec(.watch, -2, [.readonly, .fast], keys: all, "transactions", "2.2.0", "Watches strong keys: EXEC fails if any changed."),
            spec(.unwatch, 1, [.fast], "transactions", "2.2.0", "Forgets the watched keys."),
        ]
        precondition(list.count == CommandID.allCases.count, "every command has a spec")
        for (position, entry) in list.enumerated() {
            precondition(Int(entry.id.rawValue) == position, "specs are ordered by CommandID")
        }
        return list
    }()

    /// The spec of a command.
    @inlinable
    public static func spec(_ id: CommandID) -> CommandSpec { specs[Int(id.rawValue)] }

    /// The request-path shape of every command, indexed like `specs`.
    public static let shapes: [CommandShape] = specs.map {
        CommandShape(
            arity: Int32($0.arity), flags: $0.flags, firstKey: Int16($0.firstKey), lastKey: Int16($0.lastKey),
            keyStep: Int16($0.keyStep))
    }

    /// The shape of a command.
    @inlinable
    public static func shape(_ id: CommandID) -> CommandShape { shapes[Int(id.rawValue)] }

    /// Upper-case names grouped by length, for lookup without allocating.
    private static let namesByLength: [[(name: [UInt8], id: CommandID)]] = {
        var table = Array(repeating: [(name: [UInt8], id: CommandID)](), count: 16)
        for spec in specs {
            let upper = Array(spec.name.uppercased().utf8)
            table[upper.count].append((upper, spec.id))
        }
        return table
    }()

    /// Finds a command by name, comparing ASCII case-insensitively on the bytes.
    public static func lookup(_ name: UnsafeRawBufferPointer) -> CommandID? {
        guard name.count < namesByLength.count else { return nil }
        for candidate in namesByLength[name.count] where equalsUppercased(name, candidate.name) {
            return candidate.id
        }
        return nil
    }

    /// Whether `bytes`, upper-cased (ASCII), equals `upper`.
    @inlinable
    public static func equalsUppercased(_ bytes: UnsafeRawBufferPointer, _ upper: [UInt8]) -> Bool {
        guard bytes.count == upper.count else { return false }
        for index in 0..<bytes.count {
            var byte = bytes[index]
            if byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") { byte -= 32 }
            if byte != upper[index] { return false }
        }
        return true
    }
}
