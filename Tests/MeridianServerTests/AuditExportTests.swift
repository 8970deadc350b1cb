// Proves the export side of the audit log (docs/AUDIT.md) on an in-memory store: an export
// holds exactly the changes in its range, in order, across chunks (the cursor carries the
// chain from one to the next), and what it writes passes the verifier; namespaces and ranges
// select, resuming from a trailer's `until` continues without a gap or a repeat; positions keep
// growing across a restart; a damaged entry stops the export instead of going missing; and
// each record reads as the operation that made it.
import Logging
import MeridianCore
import MeridianStorage
import NIOCore
import Testing

@testable import MeridianServer

@Suite struct AuditExportTests {
    static func makeDatabase(store: InMemoryStore) -> (Database, StorageEngine) {
        let engine = StorageEngine(store: store, logger: DurableDatabaseTests.logger) { reason in Issue.record("storage failed: \(reason)") }
        let namespaces = NamespaceTable([
            NamespaceConfig(name: "default", prefix: [], durability: .memory),
            NamespaceConfig(name: "durable", prefix: Array("durable:".utf8), durability: .writeBack, writeBackWindowMs: 200),
            NamespaceConfig(name: "orders", prefix: Array("orders:".utf8), durability: .writeThrough),
        ])
        let database = Database(
            namespaces: namespaces, origin: ReplicaID(datacenter: 0, node: 0),
            maxmemoryBytes: 0, eventLoopCount: 1, storage: engine)
        return (database, engine)
    }

    static func exporter(_ database: Database) -> AuditExporter {
        AuditExporter(database: database, clusterName: "test", nodeName: "east-1") { origin in ("dc\(origin.datacenter)", "n\(origin.node)") }
    }

    /// Runs a whole export; returns its lines (parsed), the verifier's summary and the chunk count.
    static func export(
        _ exporter: AuditExporter, namespaces: [String] = [], since: AuditExporter.Bound? = nil, until: AuditExporter.Bound? = nil
    ) throws -> (lines: [JSONValue], summary: AuditVerifier.Summary, chunks: Int) {
        var cursor: AuditExportCursor? = try exporter.start(
            namespaces: namespaces, since: since, until: until, digestOnly: false, nowUnixMs: SystemClock.nowUnixMs())
        var verifier = AuditVerifier()
        var lines: [JSONValue] = []
        var chunks = 0
        while let current = cursor {
            // The cursor travels as text between calls.
            let (bytes, _, next) = try exporter.nextChunk(try AuditExportCursor(decoding: current.encoded()))
            chunks += 1
            for line in bytes.split(separator: 0x0A) {
                try verifier.consume(line)
                lines.append(try JSONValue(parsing: line))
            }
            cursor = next
        }
        return (lines, try verifier.finish(), chunks)
    }

    static func deltaKeys(_ lines: [JSONValue]) -> [String] {
        lines.filter { $0["type"]?.stringValue == "delta" }.compactMap { $0["key"]?.stringValue }
    }

    @Test func anExportHoldsEveryChangeInOrderAcrossChunks() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        let count = AuditExporter.entriesPerChunk + 1_000
        for index in 0..<count { DurableDatabaseTests.set(database, "durable:\(index)", "v\(index)") }
        DurableDatabaseTests.set(database, "memory keys are not audited", "x")
        DurableDatabaseTests.delete(database, "durable:0")
        // Not flushed yet: the export waits for what was recorded before it started.
        let exporter = Self.exporter(database)
        let whole = try Self.export(exporter)
        #expect(whole.chunks > 1)
        #expect(whole.summary.deltas == count + 1)
        #expect(whole.summary.conflicts == 0)
        let expectedKeys = (0..<count).map { AuditFormat.base64(Array("durable:\($0)".utf8)) } + [AuditFormat.base64(Array("durable:0".utf8))]
        #expect(Self.deltaKeys(whole.lines) == expectedKeys)
        let last = whole.lines[whole.lines.count - 2]
        #expect(last["op"]?.stringValue == "delete" && last["value"] == .null)
        #expect(whole.lines[1]["op"]?.stringValue == "set" && whole.lines[1]["value"]?.stringValue == AuditFormat.base64(Array("v0".utf8)))
        #expect(whole.lines[1]["origin_dc"]?.stringValue == "dc0" && whole.lines[1]["dot"] == .null)

        // Resuming from the trailer's vector: only what came after, and the files chain.
        DurableDatabaseTests.set(database, "durable:new", "after the first export")
        guard case .object(let members) = whole.summary.until, let position = members.first?.value.stringValue.flatMap(UInt64.init) else {
            Issue.record("until is not a vector")
            return
        }
        let vectorText = "{\"0.0\":\"\(position)\"}"
        let next = try Self.export(exporter, since: try exporter.parseBound(vectorText))
        #expect(Self.deltaKeys(next.lines) == [AuditFormat.base64(Array("durable:new".utf8))])
        #expect(next.summary.since == whole.summary.until)
        // Nothing new: an empty export that still chains on.
        let empty = try Self.export(exporter, since: .position(try #require(next.summary.until.members.first?.value.stringValue.flatMap(UInt64.init))))
        #expect(empty.summary.deltas == 0 && empty.summary.since == next.summary.until)
        // An explicit until ends the range early.
        let prefix = try Self.export(exporter, until: .position(position))
        #expect(prefix.summary.deltas == count + 1)
    }

    @Test func namespacesAndTimesSelect() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        DurableDatabaseTests.set(database, "durable:a", "1")
        DurableDatabaseTests.set(database, "orders:1", "o")
        let exporter = Self.exporter(database)
        let orders = try Self.export(exporter, namespaces: ["orders"])
        #expect(Self.deltaKeys(orders.lines) == [AuditFormat.base64(Array("orders:1".utf8))])
        #expect(orders.lines[0]["namespaces"] == .array([.string("orders")]))
        // A time range: everything recorded from a past time on, nothing before it.
        let now = SystemClock.nowUnixMs()
        #expect(try Self.export(exporter, since: .unixMs(now - 60_000)).summary.deltas == 2)
        #expect(try Self.export(exporter, until: .unixMs(now - 60_000)).summary.deltas == 0)
        // Clear refusals.
        #expect(throws: AuditExporter.Failure(message: "no namespace named 'nope'")) {
            try exporter.start(namespaces: ["nope"], since: nil, until: nil, digestOnly: false, nowUnixMs: now)
        }
        #expect(throws: AuditExporter.Failure.self) { try exporter.start(namespaces: ["default"], since: nil, until: nil, digestOnly: false, nowUnixMs: now) }
        #expect(throws: AuditExporter.Failure.self) { try exporter.parseBound("{\"1.0\":\"5\"}") }
        #expect(throws: AuditExporter.Failure.self) { try exporter.parseBound("{\"0.0\":5}") }
        #expect(throws: AuditExporter.Failure.self) { try exporter.parseBound("yesterday") }
        // A since older than retention could miss trimmed entries: refused, not silently partial.
        #expect(throws: AuditExporter.Failure.self) {
            try exporter.start(namespaces: [], since: .unixMs(now - NamespaceConfig.auditRetentionMsDefault - 60_000), until: nil, digestOnly: false, nowUnixMs: now)
        }
        #expect(throws: AuditExporter.Failure.self) {
            try exporter.start(namespaces: [], since: .unixMs(now + 60_000), until: .unixMs(now), digestOnly: false, nowUnixMs: now)
        }
    }

    @Test func positionsKeepGrowingAcrossARestartAndDamageStopsTheExport() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        // An entry from a clock far ahead (stepped back since).
        let ahead = AuditEntry.firstPosition(atUnixMs: SystemClock.nowUnixMs() + 3_600_000)
        let stamp = DurableDatabaseTests.stamp
        let future = AuditEntry.change(key: Array("durable:f".utf8), record: DurableRecord(value: [1], valueStamp: stamp, expiryUnixMs: 0, expiryStamp: stamp, encoding: .raw), fromPeer: false)
        let encoded = future.encoded()
        engine.appendLog(key: AuditEntry.key(position: ahead), valueBytes: encoded.count, urgency: .sync) { encoded }
        DurableDatabaseTests.flush(engine)
        engine.shutdown()

        let (restarted, restartedEngine) = Self.makeDatabase(store: store)
        defer { restartedEngine.shutdown() }
        DurableDatabaseTests.set(restarted, "durable:after", "1")
        let tail = try #require(restarted.auditLogSettledTail())
        #expect(tail == ahead + 1)
        #expect(try Self.export(Self.exporter(restarted)).summary.deltas == 2)

        // A damaged entry: the export names it and stops.
        let damaged = AuditEntry.key(position: tail + 1)
        restartedEngine.appendLog(key: damaged, valueBytes: 3, urgency: .sync) { [9, 9, 9] }
        restarted.auditLogTail.withLock { $0.position = tail + 1 }
        DurableDatabaseTests.flush(restartedEngine)
        let exporter = Self.exporter(restarted)
        let cursor = try exporter.start(namespaces: [], since: .position(tail), until: .position(tail + 1), digestOnly: false, nowUnixMs: SystemClock.nowUnixMs())
        #expect(throws: AuditExporter.Failure.self) { try exporter.nextChunk(cursor) }
    }

    @Test func aLogFromBeforePositionsMovesToPositionsInOrder() throws {
        let store = InMemoryStore()
        let engine = StorageEngine(store: store, logger: DurableDatabaseTests.logger) { reason in Issue.record("storage failed: \(reason)") }
        let stamp = DurableDatabaseTests.stamp
        let now = SystemClock.nowUnixMs()
        // The old layout: `a`, Unix ms, a per-run counter (two entries in one millisecond).
        for (index, ms) in [now - 2_000, now - 1_000, now - 1_000].enumerated() {
            var key: [UInt8] = [AuditEntry.prefix]
            for shift in stride(from: 56, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: UInt64(ms) >> UInt64(shift))) }
            for shift in stride(from: 56, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: UInt64(index) >> UInt64(shift))) }
            let value = AuditEntry.change(key: Array("durable:old\(index)".utf8), record: DurableRecord(value: [1], valueStamp: stamp, expiryUnixMs: 0, expiryStamp: stamp, encoding: .raw), fromPeer: false).encoded()
            engine.appendLog(key: key, valueBytes: value.count, urgency: .sync) { value }
        }
        DurableDatabaseTests.flush(engine)
        engine.shutdown()

        let (database, restarted) = Self.makeDatabase(store: store)
        defer { restarted.shutdown() }
        #expect(try store.scanLog(from: [AuditEntry.prefix], to: [AuditEntry.prefix + 1], limit: 10).allSatisfy { $0.key.count == 9 })
        DurableDatabaseTests.set(database, "durable:new", "1")
        let keys = Self.deltaKeys(try Self.export(Self.exporter(database)).lines)
        #expect(keys == ["durable:old0", "durable:old1", "durable:old2", "durable:new"].map { AuditFormat.base64(Array($0.utf8)) })
    }

    @Test func retentionOvertakingARunningExportFailsItAndExtremeBoundsDoNotTrap() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        for index in 0..<(AuditExporter.entriesPerChunk + 10) { DurableDatabaseTests.set(database, "durable:\(index)", "v") }
        let exporter = Self.exporter(database)
        let now = SystemClock.nowUnixMs()
        let first = try exporter.nextChunk(try exporter.start(namespaces: [], since: nil, until: nil, digestOnly: false, nowUnixMs: now))
        let cursor = try #require(first.next)
        // A trim (as if retention had passed everything) while the export is between chunks.
        database.trimAuditLog(nowUnixMs: now + NamespaceConfig.auditRetentionMsDefault + 60_000)
        #expect(throws: AuditExporter.Failure.self) { try exporter.nextChunk(cursor) }
        // The largest position a client can send: an empty export, not an arithmetic trap.
        let extreme = try exporter.start(namespaces: [], since: .position(.max), until: nil, digestOnly: false, nowUnixMs: now)
        #expect(extreme.since == .max && extreme.until == .max)
        #expect(try exporter.nextChunk(extreme).next == nil)
    }

    @Test func recordsReadAsTheirOperation() {
        let early = DurableDatabaseTests.stamp
        let late = LWWStamp(timestamp: HLCTimestamp(physicalMs: 2_000, logical: 0), origin: ReplicaID(datacenter: 1, node: 0))
        func record(_ value: [UInt8]?, valueStamp: LWWStamp, expiryStamp: LWWStamp, counter: PNCounter? = nil) -> DurableRecord {
            DurableRecord(value: value, valueStamp: valueStamp, expiryUnixMs: 0, expiryStamp: expiryStamp, encoding: .raw, counter: counter)
        }
        #expect(AuditExporter.operation(of: record([1], valueStamp: late, expiryStamp: early)) == "set")
        #expect(AuditExporter.operation(of: record([1], valueStamp: late, expiryStamp: late)) == "set")
        #expect(AuditExporter.operation(of: record([1], valueStamp: early, expiryStamp: late)) == "expire")
        #expect(AuditExporter.operation(of: record(nil, valueStamp: late, expiryStamp: early)) == "delete")
        var counter = PNCounter()
        counter.reset(to: 3, stamp: late)
        #expect(AuditExporter.operation(of: record(Array("3".utf8), valueStamp: late, expiryStamp: early, counter: counter)) == "counter")
        // A plain write newer than the counter's reset hides it.
        #expect(AuditExporter.operation(of: record(Array("x".utf8), valueStamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 3_000, logical: 0), origin: late.origin), expiryStamp: early, counter: counter)) == "set")
    }
}
