/// The lines of an audit export as `AuditFormat` writes them, and the checks of
/// `meridian audit verify` (docs/AUDIT.md, "Verifying"): fed one line at a time (constant
/// memory), it names the first line that breaks the format, the chain or the counts.
extension AuditFormat {
    /// The keys of each line type, in order.
    public static let keys: [String: [String]] = [
        "header": ["type", "format", "cluster", "node", "since", "until", "namespaces", "digest_only", "prev", "hash"],
        "delta": ["type", "namespace", "key", "op", "value", "value_sha256", "counter", "hlc", "time", "origin_dc",
                  "origin_node", "dot", "expiry", "prev", "hash"],
        "conflict": ["type", "namespace", "key", "winner_hlc", "winner_origin", "loser_hlc", "loser_origin",
                     "loser_value_sha256", "detected_at", "prev", "hash"],
        "trailer": ["type", "deltas", "conflicts", "until", "chain_head", "prev", "hash"],
    ]

    public static let operations: Set<String> = ["set", "delete", "expire", "counter", "strong-commit"]

    /// What a field may hold.
    enum FieldType { case string, optionalString, number, bool, strings, vector }

    static let fieldTypes: [String: FieldType] = [
        "type": .string, "format": .number, "cluster": .string, "node": .string, "since": .vector, "until": .vector,
        "namespaces": .strings, "digest_only": .bool, "namespace": .string, "key": .string, "op": .string,
        "value": .optionalString, "value_sha256": .optionalString, "counter": .optionalString, "hlc": .string,
        "time": .string, "origin_dc": .string, "origin_node": .string, "dot": .optionalString, "expiry": .optionalString,
        "winner_hlc": .string, "winner_origin": .string, "loser_hlc": .string, "loser_origin": .string,
        "loser_value_sha256": .optionalString, "detected_at": .string, "deltas": .number, "conflicts": .number,
        "chain_head": .string, "prev": .string, "hash": .string,
    ]

    /// Whether `value` has the type the format gives `field`.
    static func hasDocumentedType(_ value: JSONValue, field: String) -> Bool {
        switch (fieldTypes[field], value) {
        case (.string, .string), (.optionalString, .string), (.optionalString, .null), (.bool, .bool): return true
        case (.number, .number(let text)): return Int(text) != nil && !text.hasPrefix("-")
        case (.strings, .array(let items)): return items.allSatisfy { $0.stringValue != nil }
        case (.vector, .object(let members)): return members.allSatisfy { member in
            member.value.stringValue.map { UInt64($0) != nil } ?? false
        }
        default: return false
        }
    }

    public static func header(
        cluster: String, node: String, since: VersionVector, until: VersionVector, namespaces: [String], digestOnly: Bool
    ) -> LineBuilder {
        var line = LineBuilder(type: "header")
        line.number("format", version)
        line.string("cluster", cluster)
        line.string("node", node)
        line.vector("since", since)
        line.vector("until", until)
        line.strings("namespaces", namespaces)
        line.bool("digest_only", digestOnly)
        return line
    }

    /// A delta line. `value` nil: a delete (or a change that carries no value).
    public static func delta(
        namespace: String, key: [UInt8], operation: String, value: [UInt8]?, digestOnly: Bool, counter: Int64?,
        stamp: LWWStamp, originDatacenter: String, originNode: String, dot: Dot?, expiryUnixMs: Int64?
    ) -> LineBuilder {
        precondition(operations.contains(operation), "unknown operation \(operation)")
        var line = LineBuilder(type: "delta")
        line.string("namespace", namespace)
        line.base64("key", key)
        line.string("op", operation)
        let digest = value.map { SHA256.digest($0) }
        if digestOnly { line.hex("value", digest) } else { line.base64("value", value) }
        line.hex("value_sha256", digest)
        line.string("counter", counter.map { String($0) })
        line.string("hlc", String(stamp.timestamp.rawValue))
        line.time("time", unixMs: Int64(stamp.timestamp.physicalMs))
        line.string("origin_dc", originDatacenter)
        line.string("origin_node", originNode)
        line.string("dot", dot.map { "\($0.origin.datacenter).\($0.origin.node)#\($0.sequence)" })
        line.time("expiry", unixMs: expiryUnixMs)
        return line
    }

    public static func conflict(
        namespace: String, key: [UInt8], winner: LWWStamp, loser: LWWStamp, loserValueDigest: [UInt8]?, detectedUnixMs: Int64
    ) -> LineBuilder {
        var line = LineBuilder(type: "conflict")
        line.string("namespace", namespace)
        line.base64("key", key)
        line.string("winner_hlc", String(winner.timestamp.rawValue))
        line.string("winner_origin", "\(winner.origin)")
        line.string("loser_hlc", String(loser.timestamp.rawValue))
        line.string("loser_origin", "\(loser.origin)")
        line.hex("loser_value_sha256", loserValueDigest)
        line.time("detected_at", unixMs: detectedUnixMs)
        return line
    }

    /// The trailer; `chainHead` is the hash of the line before it.
    public static func trailer(deltas: Int, conflicts: Int, until: VersionVector, chainHead: [UInt8]) -> LineBuilder {
        var line = LineBuilder(type: "trailer")
        line.number("deltas", deltas)
        line.number("conflicts", conflicts)
        line.vector("until", until)
        line.hex("chain_head", chainHead)
        return line
    }
}

/// Checks an export line by line.
public struct AuditVerifier {
    /// The first thing wrong, with the line it is on (1-based).
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }

        public init(line: Int, message: String) {
            self.line = line
            self.message = message
        }
    }

    public struct Summary: Equatable {
        public var lines: Int
        public var deltas: Int
        public var conflicts: Int
        /// The header's `since` and the trailer's `until` (for continuity across files).
        public var since: JSONValue
        public var until: JSONValue
        /// The header's namespace filter (empty: every audited namespace).
        public var namespaces: [String]
    }

    private var lineNumber = 0
    private var previousHash = AuditFormat.hex(AuditFormat.chainStart)
    private var since: JSONValue?
    private var namespaces: [String] = []
    private var until: JSONValue?
    private var trailerSeen = false
    private var deltas = 0
    private var conflicts = 0

    public init() {}

    /// Checks the next line (without its newline).
    public mutating func consume(_ line: ArraySlice<UInt8>) throws(Problem) {
        lineNumber += 1
        func problem(_ message: String) -> Problem { Problem(line: lineNumber, message: message) }
        if trailerSeen { throw problem("a line after the trailer") }
        let json: JSONValue
        do {
            json = try JSONValue(parsing: line)
        } catch {
            throw problem("not a JSON object: \(error)")
        }
        guard let type = json["type"]?.stringValue, let expected = AuditFormat.keys[type] else {
            throw problem("not a line of a known type")
        }
        guard json.keys == expected else {
            throw problem("\(type) line with keys \(json.keys.joined(separator: ",")), expected \(expected.joined(separator: ","))")
        }
        if case .object(let members) = json, let bad = members.first(where: { !AuditFormat.hasDocumentedType($0.value, field: $0.key) }) {
            throw problem("\(bad.key) is not of the documented type")
        }
        // The line must be written exactly as the format writes it (no whitespace, the same
        // escapes), so that what was hashed is what a reader parses.
        var canonical: [UInt8] = []
        json.canonicalBytes(into: &canonical)
        guard canonical.elementsEqual(line) else { throw problem("the line is not in the format's canonical form") }
        if lineNumber == 1 {
            guard type == "header" else { throw problem("the first line is a \(type), not the header") }
            guard json["format"]?.intValue == AuditFormat.version else {
                throw problem("format \(json["format"]?.intValue.map { String($0) } ?? "?") is not \(AuditFormat.version)")
            }
            guard case .object = json["since"], case .object = json["until"] else { throw problem("the header's range is not two version vectors") }
            since = json["since"]
            if case .array(let names) = json["namespaces"] { namespaces = names.compactMap(\.stringValue) }
        } else if type == "header" {
            throw problem("a second header")
        }
        if type == "delta", let operation = json["op"]?.stringValue, !AuditFormat.operations.contains(operation) {
            throw problem("unknown operation \(operation)")
        }
        for field in ["prev", "hash"] {
            guard let text = json[field]?.stringValue, text.utf8.count == 64, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }) else {
                throw problem("\(field) is not 64 lowercase hex digits")
            }
        }
        guard let parts = AuditFormat.chainParts(of: line) else { throw problem("the line does not end with the hash chain") }
        guard json["prev"]?.stringValue == previousHash else {
            throw problem("prev does not match the previous line's hash: a line before this one was removed, added or moved")
        }
        guard AuditFormat.hex(SHA256.digest(Array(parts.covered))) == parts.stated else {
            throw problem("hash does not match the line's bytes: this line was altered")
        }
        switch type {
        case "delta": deltas += 1
        case "conflict": conflicts += 1
        case "trailer":
            guard json["deltas"]?.intValue == deltas, json["conflicts"]?.intValue == conflicts else {
                let statedDeltas = json["deltas"]?.intValue.map { String($0) } ?? "?"
                let statedConflicts = json["conflicts"]?.intValue.map { String($0) } ?? "?"
                throw problem("the trailer counts \(statedDeltas) deltas and \(statedConflicts) conflicts; the file holds \(deltas) and \(conflicts)")
            }
            guard json["chain_head"]?.stringValue == previousHash else { throw problem("the trailer's chain_head is not the previous line's hash") }
            guard case .object = json["until"] else { throw problem("the trailer's until is not a version vector") }
            until = json["until"]
            trailerSeen = true
        default: break
        }
        previousHash = parts.stated
    }

    /// Ends the file: it must have had its trailer.
    public func finish() throws(Problem) -> Summary {
        guard trailerSeen, let since, let until else {
            throw Problem(line: lineNumber, message: "no trailer: the file ends early (truncated?)")
        }
        return Summary(lines: lineNumber, deltas: deltas, conflicts: conflicts, since: since, until: until, namespaces: namespaces)
    }
}
