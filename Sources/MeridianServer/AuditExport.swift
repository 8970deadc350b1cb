import MeridianCore
import MeridianStorage

/// Turns the node's audit log into export lines (docs/AUDIT.md): `start` fixes an export's
/// range, each `nextChunk` reads the next entries after the cursor and writes their lines,
/// chained to the previous chunk's. Reads block on the disk: call off the event loops.
public struct AuditExporter: Sendable {
    let database: Database
    let clusterName: String
    let nodeName: String
    /// Data center and node names of origins, from the configuration.
    let originNames: @Sendable (ReplicaID) -> (datacenter: String, node: String)

    /// Entries read, and line bytes written, per chunk at most (a chunk may pass the byte
    /// bound by its last line).
    public static let entriesPerChunk = 4_096
    public static let chunkBytes = 1 << 20

    public init(database: Database, clusterName: String, nodeName: String,
                originNames: @escaping @Sendable (ReplicaID) -> (datacenter: String, node: String)) {
        self.database = database
        self.clusterName = clusterName
        self.nodeName = nodeName
        self.originNames = originNames
    }

    /// Where a range starts or ends: a vector from a previous export, or a time.
    public enum Bound: Equatable, Sendable {
        /// A log position of this node (an export's `since`/`until` vector).
        case position(UInt64)
        /// Unix milliseconds: entries recorded before this time (`until`) or from it on (`since`).
        case unixMs(Int64)
    }

    public struct Failure: Error, Equatable {
        public var message: String
    }

    /// Parses a bound as the command takes it: a vector as exports write it
    /// (`{"<dc>.<node>":"<position>"}`, naming this node) or Unix milliseconds.
    public func parseBound(_ text: String) throws(Failure) -> Bound {
        if let ms = Int64(text) {
            guard ms >= 0 else { throw Failure(message: "a time must be Unix milliseconds, not negative") }
            return .unixMs(ms)
        }
        guard let json = try? JSONValue(parsing: Array(text.utf8)[...]), case .object(let members) = json else {
            throw Failure(message: "a range bound is a version vector from an export ({\"<dc>.<node>\":\"<position>\"}) or Unix milliseconds")
        }
        let me = "\(database.origin.datacenter).\(database.origin.node)"
        guard members.count == 1, let member = members.first, let text = member.value.stringValue, let position = UInt64(text) else {
            throw Failure(message: "the vector must have one member, this node's (\(me)), with a decimal position")
        }
        guard member.key == me else {
            throw Failure(message: "the vector is of node \(member.key)'s audit log; this node is \(me): export from that node, or use a time")
        }
        return .position(position)
    }

    /// Starts an export: checks the request and fixes the range, up to the last entry already
    /// recorded (waiting for it to reach the disk).
    public func start(
        namespaces: [String], since: Bound?, until: Bound?, digestOnly: Bool, linesPerSecond: UInt32 = 0, nowUnixMs: Int64
    ) throws(Failure) -> AuditExportCursor {
        guard database.auditRetentionMs > 0 else {
            throw Failure(message: "no namespace is audited on this node (audit_retention of a durable namespace)")
        }
        for name in namespaces {
            guard let index = database.namespaces.namespaces.firstIndex(where: { $0.name == name }) else {
                throw Failure(message: "no namespace named '\(name)'")
            }
            guard database.auditedNamespaces[index] else {
                throw Failure(message: "namespace '\(name)' is not audited (audit_retention is 0, or it is a memory namespace)")
            }
        }
        guard let tail = database.auditLogSettledTail() else {
            throw Failure(message: "the audit log's queued entries did not reach the disk within \(Int(Database.auditSettleTimeoutSeconds)) s (see INFO persistence)")
        }
        func position(_ bound: Bound) -> UInt64 {
            switch bound {
            case .position(let position): return position
            case .unixMs(let ms): return max(AuditEntry.firstPosition(atUnixMs: ms), 1) - 1
            }
        }
        let sincePosition = since.map(position) ?? 0
        let requestedUntil = until.map(position)
        if let requestedUntil, requestedUntil < sincePosition {
            throw Failure(message: "the range is empty: until is before since")
        }
        // Nothing recorded beyond the tail yet: the export ends there, or at `since` when that
        // is later (an empty export that the next one resumes from).
        let untilPosition = max(sincePosition, min(requestedUntil ?? tail, tail))
        // Retention may have removed entries after `since`: the export could not be complete.
        // (Not when the log's last entry is at or before `since`: then none came after it.)
        let retainedFrom = database.auditRetainedFrom(nowUnixMs: nowUnixMs)
        if since != nil && retainedFrom > 0 && sincePosition < retainedFrom - 1 && (tail == 0 || sincePosition < tail) {
            throw Failure(message: "entries after since are older than audit_retention (\(database.auditRetentionMs / 1000) s) and may be gone: the export could not be complete; start later, or without since")
        }
        let names = namespaces.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        return AuditExportCursor(
            node: database.origin, since: sincePosition, until: untilPosition, digestOnly: digestOnly, namespaces: names,
            linesPerSecond: linesPerSecond)
    }

    /// The lines after `cursor` (the header first, the trailer last) and the cursor after
    /// them; nil when the export is complete.
    public func nextChunk(_ cursor: AuditExportCursor) throws(Failure) -> (lines: [UInt8], lineCount: Int, next: AuditExportCursor?) {
        guard cursor.node == database.origin else { throw Failure(message: "the cursor is of another node's export") }
        var cursor = cursor
        var lines: [UInt8] = []
        lines.reserveCapacity(Self.chunkBytes + 64 * 1024)
        var lineCount = 0
        func append(_ line: AuditFormat.LineBuilder) {
            let (bytes, hash) = line.finish(prev: cursor.previousHash)
            lines += bytes
            cursor.previousHash = hash
            lineCount += 1
        }
        if cursor.isAtStart {
            append(AuditFormat.header(
                cluster: clusterName, node: nodeName, since: vector(cursor.since), until: vector(cursor.until),
                namespaces: cursor.namespaces, digestOnly: cursor.digestOnly))
        }
        // Retention trimmed below a position this export has not read up to: entries in
        // between may be gone (the first chunk of an export from the log's start reads
        // whatever is oldest, so it is not checked).
        let trimmedBefore = database.auditTrimmedBefore.load(ordering: .acquiring)
        if cursor.after > 0 && trimmedBefore > 0 && cursor.after < trimmedBefore - 1 {
            throw Failure(message: "audit_retention removed entries this export had not read yet (it was slower than retention); export again with a later since")
        }
        let namespaceFilter: [Bool]? = cursor.namespaces.isEmpty ? nil
            : database.namespaces.namespaces.map { cursor.namespaces.contains($0.name) }
        let entries: [(position: UInt64, entry: Result<AuditEntry, DurableRecordError>)]
        do {
            entries = try database.auditEntries(after: cursor.after, through: cursor.until, limit: Self.entriesPerChunk)
        } catch {
            throw Failure(message: "reading the audit log failed: \(error)")
        }
        var stoppedEarly = false
        for (index, (position, result)) in entries.enumerated() {
            let entry: AuditEntry
            switch result {
            case .success(let decoded): entry = decoded
            case .failure(let error):
                throw Failure(message: "the audit log entry at position \(position) is damaged (\(error)); the export stops rather than leave it out")
            }
            cursor.after = position
            if let line = self.line(for: entry, filter: namespaceFilter, digestOnly: cursor.digestOnly) {
                append(line.builder)
                if line.isConflict { cursor.conflicts += 1 } else { cursor.deltas += 1 }
            }
            if lines.count >= Self.chunkBytes && index < entries.count - 1 {
                stoppedEarly = true
                break
            }
        }
        database.auditExportChunks.add(1, ordering: .relaxed)
        if stoppedEarly || entries.count == Self.entriesPerChunk {
            database.auditExportLines.add(lineCount, ordering: .relaxed)
            return (lines, lineCount, cursor)
        }
        cursor.after = cursor.until
        append(AuditFormat.trailer(deltas: cursor.deltas, conflicts: cursor.conflicts, until: vector(cursor.until), chainHead: cursor.previousHash))
        database.auditExportLines.add(lineCount, ordering: .relaxed)
        return (lines, lineCount, nil)
    }

    /// This node's log position as the vector exports write.
    func vector(_ position: UInt64) -> VersionVector {
        VersionVector([(database.origin, position)])
    }

    /// The line for one log entry, or nil when its namespace is not exported.
    func line(for entry: AuditEntry, filter: [Bool]?, digestOnly: Bool) -> (builder: AuditFormat.LineBuilder, isConflict: Bool)? {
        let key: [UInt8]
        switch entry {
        case .change(let changed, _, _): key = changed
        case .conflict(let conflicted, _, _, _, _): key = conflicted
        }
        let namespaceIndex = key.withUnsafeBytes { database.namespaces.index(of: $0) }
        if let filter, !filter[namespaceIndex] { return nil }
        let namespace = database.namespaces.namespaces[namespaceIndex].name
        switch entry {
        case .change(_, let record, _):
            let operation = Self.operation(of: record)
            let expiryChanged = operation == "expire"
            let stamp = expiryChanged ? record.expiryStamp : record.valueStamp
            let dot = expiryChanged ? record.expiryDot : record.dot
            // The write's dot names who made it: for a counter, the data center of the last
            // increment (increments commute and carry no stamp; the stamp is the counter's).
            let names = originNames(dot?.origin ?? stamp.origin)
            return (AuditFormat.delta(
                namespace: namespace, key: key, operation: operation, value: record.value, digestOnly: digestOnly,
                counter: operation == "counter" ? record.value.flatMap { Int64(String(decoding: $0, as: UTF8.self)) } : nil,
                stamp: stamp, originDatacenter: names.datacenter, originNode: names.node,
                dot: dot,
                expiryUnixMs: record.expiryUnixMs == Entry.noExpiry ? nil : record.expiryUnixMs), false)
        case .conflict(_, let winner, let loser, let digest, let detected):
            return (AuditFormat.conflict(
                namespace: namespace, key: key, winner: winner, loser: loser,
                loserValueDigest: digest.count == 32 ? digest : nil, detectedUnixMs: detected), true)
        }
    }

    /// What a change did, read from the state it left (docs/AUDIT.md, "Delta"): a tombstone
    /// is a delete; a value that shows the key's counter, a counter change; an expiry field
    /// newer than the value field, a TTL change; anything else, a set.
    static func operation(of record: DurableRecord) -> String {
        if record.isTombstone { return "delete" }
        if let counter = record.counter, counter.resetStamp >= record.valueStamp { return "counter" }
        if record.expiryStamp > record.valueStamp { return "expire" }
        return "set"
    }
}
