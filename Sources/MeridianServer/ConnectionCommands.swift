import MeridianCore
import MeridianRESP
import NIOCore

/// Connection commands: PING, HELLO, RESET, SELECT, AUTH and CLIENT.
extension CommandExecutor {
    /// PING [message]
    mutating func ping(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        if a.count > 2 {
            error("ERR wrong number of arguments for 'ping' command", into: &out)
        } else if a.count == 2 {
            out.writeBulkString(a[1])
        } else {
            out.writeSimpleString("PONG")
        }
    }

    private static let helloAUTH: [UInt8] = Array("AUTH".utf8)
    private static let helloSETNAME: [UInt8] = Array("SETNAME".utf8)

    /// HELLO [protover [AUTH username password] [SETNAME clientname]]
    mutating func hello(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        var version = session.protocolVersion
        if a.count >= 2 {
            guard let requested = Self.parseInt64(a[1]) else {
                error("ERR Protocol version is not an integer or out of range", into: &out)
                return
            }
            guard requested == 2 || requested == 3 else {
                error("NOPROTO unsupported protocol version", into: &out)
                return
            }
            version = requested == 3 ? .v3 : .v2
        }
        var newName: String?
        var index = 2
        while index < a.count {
            if Self.matches(a[index], Self.helloAUTH) && index + 2 < a.count {
                guard authenticate(user: a[index + 1], into: &out) else { return }
                index += 3
            } else if Self.matches(a[index], Self.helloSETNAME) && index + 1 < a.count {
                guard let name = validClientName(a[index + 1], into: &out) else { return }
                newName = name
                index += 2
            } else {
                error("ERR Syntax error in HELLO option '\(Self.printable(a[index], max: 128))'", into: &out)
                return
            }
        }
        session.protocolVersion = version
        if let newName { session.name = newName }
        out.writeMapHeader(7, version)
        out.writeBulkString("server")
        out.writeBulkString("meridian")
        out.writeBulkString("version")
        out.writeBulkString(ServerContext.redisCompatibleVersion)
        out.writeBulkString("proto")
        out.writeIntegerReply(version.rawValue)
        out.writeBulkString("id")
        out.writeIntegerReply(session.clientID)
        out.writeBulkString("mode")
        out.writeBulkString("standalone")
        out.writeBulkString("role")
        out.writeBulkString("master")
        out.writeBulkString("modules")
        out.writeArrayHeader(0)
    }

    /// RESET: back to RESP2, no name, database 0.
    mutating func reset(into out: inout ByteBuffer) {
        transactionQueue = nil
        watchedKeys = []
        session.protocolVersion = .v2
        session.name = ""
        out.writeSimpleString("RESET")
    }

    /// SELECT index: only database 0 exists (namespaces replace numbered databases).
    mutating func select(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        guard let index = Self.parseInt64(a[1]) else {
            notInteger(into: &out)
            return
        }
        if index == 0 { out.writeSimpleString("OK") } else { error("ERR DB index is out of range", into: &out) }
    }

    /// AUTH [username] password. No passwords exist yet: the default user accepts any
    /// password, like Redis's `nopass` default user; the one-argument form says so.
    mutating func auth(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        if a.count == 2 {
            error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?", into: &out)
        } else if a.count == 3 {
            if authenticate(user: a[1], into: &out) { out.writeSimpleString("OK") }
        } else {
            syntaxError(into: &out)
        }
    }

    private mutating func authenticate(user: ByteBuffer, into out: inout ByteBuffer) -> Bool {
        if String(buffer: user) == "default" { return true }
        error("WRONGPASS invalid username-password pair or user is disabled.", into: &out)
        return false
    }

    private mutating func validClientName(_ name: ByteBuffer, into out: inout ByteBuffer) -> String? {
        let valid = name.readableBytes <= Limits.clientNameBytesMax
            && name.readableBytesView.allSatisfy { $0 > 0x20 && $0 < 0x7F }
        guard valid else {
            error("ERR Client names cannot contain spaces, newlines or special characters.", into: &out)
            return nil
        }
        return String(buffer: name)
    }

    private static let clientID: [UInt8] = Array("ID".utf8)
    private static let clientSETNAME: [UInt8] = Array("SETNAME".utf8)
    private static let clientGETNAME: [UInt8] = Array("GETNAME".utf8)
    private static let clientINFO: [UInt8] = Array("INFO".utf8)
    private static let clientLIST: [UInt8] = Array("LIST".utf8)
    private static let clientSETINFO: [UInt8] = Array("SETINFO".utf8)
    private static let clientHELP: [UInt8] = Array("HELP".utf8)
    private static let libName: [UInt8] = Array("LIB-NAME".utf8)
    private static let libVersion: [UInt8] = Array("LIB-VER".utf8)

    /// CLIENT ID | SETNAME | GETNAME | INFO | LIST | SETINFO | HELP
    mutating func client(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let sub = a[1]
        func arity(_ expected: Int, _ name: String) -> Bool {
            if a.count == expected { return true }
            error("ERR wrong number of arguments for 'client|\(name)' command", into: &out)
            return false
        }
        if Self.matches(sub, Self.clientID) {
            guard arity(2, "id") else { return }
            out.writeIntegerReply(session.clientID)
        } else if Self.matches(sub, Self.clientSETNAME) {
            guard arity(3, "setname"), let name = validClientName(a[2], into: &out) else { return }
            session.name = name
            out.writeSimpleString("OK")
        } else if Self.matches(sub, Self.clientGETNAME) {
            guard arity(2, "getname") else { return }
            if session.name.isEmpty { out.writeNull(resp) } else { out.writeBulkString(session.name) }
        } else if Self.matches(sub, Self.clientINFO) {
            guard arity(2, "info") else { return }
            let now = SystemClock.nowUnixMs()
            let own = server.clients.snapshots().first { $0.id == session.clientID }
            var snapshot = own ?? ClientSnapshot(id: session.clientID, address: "?", localAddress: "?", createdUnixMs: now, lastInteractionUnixMs: now)
            applySession(to: &snapshot, command: "client|info")
            out.writeVerbatimText(snapshot.line(nowUnixMs: now) + "\n", resp)
        } else if Self.matches(sub, Self.clientLIST) {
            clientList(a, into: &out)
        } else if Self.matches(sub, Self.clientSETINFO) {
            guard arity(4, "setinfo") else { return }
            let value = String(buffer: a[3])
            guard a[3].readableBytesView.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) || a[3].readableBytes == 0 else {
                error("ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.", into: &out)
                return
            }
            if Self.matches(a[2], Self.libName) {
                session.libraryName = value
            } else if Self.matches(a[2], Self.libVersion) {
                session.libraryVersion = value
            } else {
                error("ERR Unrecognized option '\(Self.printable(a[2], max: 128))'", into: &out)
                return
            }
            out.writeSimpleString("OK")
        } else if Self.matches(sub, Self.clientHELP) {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "INFO", "    Return information about the current client connection.",
                "LIST [TYPE normal] [ID <id> [<id> ...]]", "    Return information about client connections.",
                "SETINFO <option> <value>", "    Set client meta attr (LIB-NAME or LIB-VER).",
                "SETNAME <name>", "    Assign the name <name> to the current connection.",
                "HELP", "    Print this help.",
            ]
            Self.writeHelp(lines, into: &out)
        } else {
            unknownSubcommand(sub, of: "CLIENT", into: &out)
        }
    }

    /// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id [id ...]]
    private mutating func clientList(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        var ids: Set<Int>?
        var onlyNormal = true
        var index = 2
        while index < a.count {
            if Self.matches(a[index], Array("TYPE".utf8)) && index + 1 < a.count {
                let type = String(buffer: a[index + 1]).lowercased()
                guard ["normal", "master", "replica", "pubsub"].contains(type) else {
                    error("ERR Unknown client type '\(Self.printable(a[index + 1], max: 64))'", into: &out)
                    return
                }
                onlyNormal = type == "normal"
                index += 2
            } else if Self.matches(a[index], Array("ID".utf8)) && index + 1 < a.count {
                // Every argument after ID is a client id, as in Redis.
                var set: Set<Int> = []
                index += 1
                while index < a.count {
                    guard let id = Self.parseInt64(a[index]), id > 0 else {
                        error("ERR Invalid client ID", into: &out)
                        return
                    }
                    set.insert(Int(id))
                    index += 1
                }
                ids = set
            } else {
                syntaxError(into: &out)
                return
            }
        }
        let now = SystemClock.nowUnixMs()
        var text = ""
        if onlyNormal {
            for var snapshot in server.clients.snapshots() where ids?.contains(snapshot.id) ?? true {
                if snapshot.id == session.clientID { applySession(to: &snapshot, command: "client|list") }
                text += snapshot.line(nowUnixMs: now) + "\n"
            }
        }
        out.writeVerbatimText(text, resp)
    }

    /// The registry's snapshot lags one batch behind; the caller's own line is made current.
    private func applySession(to snapshot: inout ClientSnapshot, command: String) {
        snapshot.name = session.name
        snapshot.protocolVersion = session.protocolVersion
        snapshot.libraryName = session.libraryName
        snapshot.libraryVersion = session.libraryVersion
        snapshot.lastCommand = command
    }
}
