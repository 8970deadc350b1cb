// Proves the database's side of durability on an in-memory store it can inspect: changes to
// durable keys reach the engine as whole records in memory's order (and memory namespaces
// never do), deletes without peers remove the record, loading from disk installs live
// records and drops expired, corrupt and tombstoned ones without crashing, and a disk read
// that raced a write is never installed over it (no resurrection of a deleted key), and
// concurrent misses on one key share one disk read.
import Logging
import MeridianCore
import MeridianStorage
import NIOCore
import NIOPosix
import Testing

@testable import MeridianServer

@Suite struct DurableDatabaseTests {
    static let logger = Logger(label: "test")
    static let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_000, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))

    /// A database with a `durable:` write-back namespace (60 s window: nothing is flushed
    /// unless asked) over `store`; everything else is memory-only.
    static func makeDatabase(store: InMemoryStore) -> (Database, StorageEngine) {
        let engine = StorageEngine(store: store, logger: logger) { reason in Issue.record("storage failed: \(reason)") }
        let namespaces = NamespaceTable([
            NamespaceConfig(name: "default", prefix: [], durability: .memory),
            NamespaceConfig(name: "durable", prefix: Array("durable:".utf8), durability: .writeBack, writeBackWindowMs: 60_000),
        ])
        let database = Database(
            namespaces: namespaces, origin: ReplicaID(datacenter: 0, node: 0),
            maxmemoryBytes: 0, eventLoopCount: 1, storage: engine)
        return (database, engine)
    }

    /// Sets `key` in the namespace its prefix names.
    static func set(_ database: Database, _ key: String, _ value: String, expiryUnixMs: Int64 = Entry.noExpiry) {
        let buffer = ByteBuffer(string: key)
        database.withShard(of: buffer) { keyspace in
            let namespace = Array(key.utf8).withUnsafeBytes { database.namespaces.index(of: $0) }
            let entry = Entry(value: Array(value.utf8), valueStamp: stamp, expiryUnixMs: expiryUnixMs, expiryStamp: stamp, lastAccessUnixMs: 0, namespaceIndex: namespace)
            if let slot = keyspace.slot(of: Key(borrowing: buffer)) {
                keyspace.setValue(at: slot, entry.value, stamp: stamp)
            } else {
                keyspace.insert(Key(borrowing: buffer), entry: entry)
            }
        }
    }

    static func delete(_ database: Database, _ key: String) {
        let buffer = ByteBuffer(string: key)
        database.withShard(of: buffer) { keyspace in
            if let slot = keyspace.slot(of: Key(borrowing: buffer)) { keyspace.remove(slot: slot) }
        }
    }

    static func flush(_ engine: StorageEngine) {
        let sequence = engine.flushNow()
        while engine.durableSequence.load(ordering: .acquiring) < sequence { usleep(500) }
    }

    static func stored(_ store: InMemoryStore, _ key: String) throws -> DurableRecord? {
        try store.read(key: Array(key.utf8)).map { try DurableRecord(decoding: $0) }
    }

    @Test func keyChangesReachTheDiskAsWholeRecords() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        Self.set(database, "durable:a", "1")
        Self.set(database, "durable:a", "2")
        Self.set(database, "durable:b", "x", expiryUnixMs: 9_999_999_999_999)
        Self.set(database, "cache:c", "memory only")
        Self.flush(engine)
        #expect(try Self.stored(store, "durable:a")?.value == Array("2".utf8))
        let b = try Self.stored(store, "durable:b")
        #expect(b?.expiryUnixMs == 9_999_999_999_999 && b?.valueStamp == Self.stamp)
        #expect(try store.read(key: Array("cache:c".utf8)) == nil)
        Self.delete(database, "durable:a")
        Self.flush(engine)
        // One full data center: nobody needs a tombstone, the record goes.
        #expect(try store.read(key: Array("durable:a".utf8)) == nil)
    }

    @Test func loadingInstallsLiveRecordsAndDropsTheRest() throws {
        let store = InMemoryStore()
        let live = DurableRecord(value: Array("v".utf8), valueStamp: Self.stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: Self.stamp, encoding: .byContent)
        let expired = DurableRecord(value: Array("old".utf8), valueStamp: Self.stamp, expiryUnixMs: 5, expiryStamp: Self.stamp, encoding: .byContent)
        var corrupt = live.encoded()
        corrupt[DurableRecord.headerBytes] ^= 0xFF
        try store.apply(StoreBatch(puts: [
            (Array("durable:live".utf8), live.encoded()),
            (Array("durable:expired".utf8), expired.encoded()),
            (Array("durable:corrupt".utf8), corrupt),
            (Array("durable:tombstone".utf8), DurableRecord.tombstone(stamp: Self.stamp).encoded()),
            (Array("cache:was-durable".utf8), live.encoded()),
        ]), sync: true)
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        let progress = WarmUpProgress()
        #expect(try database.loadKey(Array("durable:live".utf8), progress: progress, logger: Self.logger) == .installed)
        #expect(try database.loadKey(Array("durable:live".utf8), progress: progress, logger: Self.logger) == .alreadyInMemory)
        #expect(try database.loadKey(Array("durable:expired".utf8), progress: progress, logger: Self.logger) == .absent)
        #expect(try database.loadKey(Array("durable:corrupt".utf8), progress: progress, logger: Self.logger) == .absent)
        #expect(try database.loadKey(Array("durable:tombstone".utf8), progress: progress, logger: Self.logger) == .absent)
        #expect(try database.loadKey(Array("cache:was-durable".utf8), progress: progress, logger: Self.logger) == .absent)
        #expect(try database.loadKey(Array("durable:never".utf8), progress: progress, logger: Self.logger) == .absent)
        let corruptCount = progress.corruptRecords.load(ordering: .relaxed)
        let expiredCount = progress.expiredRecords.load(ordering: .relaxed)
        #expect(corruptCount == 1)
        #expect(expiredCount == 1)
        #expect(database.keyCount == 1)
        Self.flush(engine)
        // Expired records, tombstones (no peers) and records of a memory namespace are cleaned
        // up; the corrupt record is left for an operator to look at.
        #expect(try store.read(key: Array("durable:expired".utf8)) == nil)
        #expect(try store.read(key: Array("durable:tombstone".utf8)) == nil)
        #expect(try store.read(key: Array("cache:was-durable".utf8)) == nil)
        #expect(try store.read(key: Array("durable:corrupt".utf8)) != nil)
    }

    @Test func aReadThatRacedAWriteIsNotInstalled() throws {
        let store = InMemoryStore()
        let old = DurableRecord(value: Array("old".utf8), valueStamp: Self.stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: Self.stamp, encoding: .byContent)
        try store.apply(StoreBatch(puts: [(Array("durable:k".utf8), old.encoded())]), sync: true)
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        let progress = WarmUpProgress()
        // A read starts, sees the old record...
        let read = try engine.read(key: Array("durable:k".utf8))
        // ...then the key is written and deleted in memory before the read is installed.
        Self.set(database, "durable:k", "new")
        Self.delete(database, "durable:k")
        let outcome = database.install(
            key: Array("durable:k".utf8), record: read.record, token: read.token, nowUnixMs: 2_000,
            progress: progress, logger: Self.logger)
        #expect(outcome == .stale)
        // Read again: the queued delete wins; the deleted key stays deleted.
        #expect(try database.loadKey(Array("durable:k".utf8), progress: progress, logger: Self.logger) == .absent)
        #expect(database.keyCount == 0)
    }

    @Test func concurrentMissesOnOneKeyShareOneRead() throws {
        // A slow disk (200 ms per read), so that all the misses arrive while the first reads.
        let store = InMemoryStore(readLatencyMicroseconds: 200_000)
        let record = DurableRecord(value: Array("v".utf8), valueStamp: Self.stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: Self.stamp, encoding: .byContent)
        try store.apply(StoreBatch(puts: [(Array("durable:hot".utf8), record.encoded())]), sync: true)
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let reader = DiskReader(database: database, progress: WarmUpProgress(), logger: Self.logger)
        defer { reader.shutdown() }
        let futures = (0..<10).map { _ in
            reader.load([Array("durable:hot".utf8)], on: group.any())
        }
        for future in futures { try future.wait() }
        #expect(store.reads == 1)
        let reads = reader.reads.load(ordering: .relaxed)
        let shared = reader.sharedReads.load(ordering: .relaxed)
        #expect(reads == 1 && shared == 9)
        #expect(database.keyCount == 1)
    }

    @Test func flushAllClearsMemoryAndDiskAndTheDiskOnlyMarks() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        defer { engine.shutdown() }
        Self.set(database, "durable:a", "1")
        Self.flush(engine)
        database.diskOnlyKeysPossible.store(true, ordering: .relaxed)
        for shard in database.shards { shard.mayHaveDiskOnlyKeys.store(true, ordering: .relaxed) }
        let sequence = database.removeAll()
        #expect(sequence > 0)
        while engine.durableSequence.load(ordering: .acquiring) < sequence { usleep(500) }
        #expect(try store.read(key: Array("durable:a".utf8)) == nil)
        let diskOnly = database.diskOnlyKeysPossible.load(ordering: .relaxed)
        #expect(!diskOnly)
        #expect(database.keyCount == 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The audit log (docs/AUDIT.md): every change to a key of an audited (durable) namespace is
/// appended, in order, as the record it left, in the same flush as the record; memory
/// namespaces and `audit_retention: 0` append nothing; retention trims what is older.
@Suite struct AuditLogTests {
    static func makeDatabase(store: InMemoryStore, retentionMs: Int64? = nil) -> (Database, StorageEngine) {
        let engine = StorageEngine(store: store, logger: DurableDatabaseTests.logger) { reason in Issue.record("storage failed: \(reason)") }
        let namespaces = NamespaceTable([
            NamespaceConfig(name: "default", prefix: [], durability: .memory),
            NamespaceConfig(name: "durable", prefix: Array("durable:".utf8), durability: .writeBack, writeBackWindowMs: 60_000, auditRetentionMs: retentionMs),
        ])
        let database = Database(
            namespaces: namespaces, origin: ReplicaID(datacenter: 0, node: 0),
            maxmemoryBytes: 0, eventLoopCount: 1, storage: engine)
        return (database, engine)
    }

    @Test func changesToAuditedKeysAreAppendedInOrder() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store)
        #expect(database.auditRetentionMs == NamespaceConfig.auditRetentionMsDefault)
        DurableDatabaseTests.set(database, "durable:a", "1")
        DurableDatabaseTests.set(database, "durable:a", "2")
        DurableDatabaseTests.set(database, "cache", "memory keys are not audited")
        DurableDatabaseTests.delete(database, "durable:a")
        // Nothing is on disk before the flush that carries the records.
        #expect(try database.auditEntries(after: 0, limit: 10).isEmpty)
        DurableDatabaseTests.flush(engine)
        let entries = try database.auditEntries(after: 0, limit: 10)
        #expect(entries.count == 3)
        let values = entries.map { entry -> String? in
            guard case .success(.change(let key, let record, let fromPeer)) = entry.entry, key == Array("durable:a".utf8), !fromPeer else { return "?" }
            return record.value.map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(values == ["1", "2", nil])
        #expect(zip(entries, entries.dropFirst()).allSatisfy { $0.position < $1.position })
        // Reading on after the second entry gives the third; an upper bound stops before it.
        #expect(try database.auditEntries(after: entries[1].position, limit: 10).map(\.position) == [entries[2].position])
        #expect(try database.auditEntries(after: 0, through: entries[1].position, limit: 10).map(\.position) == entries.prefix(2).map(\.position))
        // The settled tail covers every entry, on disk; later entries come after it.
        let settled = try #require(database.auditLogSettledTail())
        #expect(settled >= entries[2].position)
        // Queued (a 60 s window), then flushed: the settled tail waits for that flush.
        DurableDatabaseTests.set(database, "durable:b", "queued")
        engine.flushNow()
        let tail = try #require(database.auditLogSettledTail())
        let after = try database.auditEntries(after: settled, limit: 10).map(\.position)
        #expect(after.count == 1 && after[0] > settled && after[0] <= tail)
        #expect(database.auditAppends.load(ordering: .relaxed) == 4)
        engine.shutdown()
    }

    @Test func retentionTrimsOldEntriesAndZeroTurnsAuditingOff() throws {
        let store = InMemoryStore()
        let (database, engine) = Self.makeDatabase(store: store, retentionMs: 60_000)
        DurableDatabaseTests.set(database, "durable:a", "1")
        DurableDatabaseTests.flush(engine)
        #expect(try database.auditEntries(after: 0, limit: 10).count == 1)
        // A minute and a bit later the entry is past the retention.
        database.trimAuditLog(nowUnixMs: SystemClock.nowUnixMs() + 61_000)
        DurableDatabaseTests.flush(engine)
        #expect(try database.auditEntries(after: 0, limit: 10).isEmpty)
        engine.shutdown()

        let quiet = InMemoryStore()
        let (off, offEngine) = Self.makeDatabase(store: quiet, retentionMs: 0)
        DurableDatabaseTests.set(off, "durable:a", "1")
        DurableDatabaseTests.flush(offEngine)
        #expect(try off.auditEntries(after: 0, limit: 10).isEmpty)
        #expect(try DurableDatabaseTests.stored(quiet, "durable:a") != nil)
        offEngine.shutdown()
    }

    @Test func entriesRoundTrip() throws {
        let stamp = DurableDatabaseTests.stamp
        let loser = LWWStamp(timestamp: HLCTimestamp(physicalMs: 900, logical: 3), origin: ReplicaID(datacenter: 1, node: 0))
        for entry in [
            AuditEntry.change(key: Array("k".utf8), record: DurableRecord(value: [1, 2], valueStamp: stamp, expiryUnixMs: 5, expiryStamp: stamp, encoding: .raw), fromPeer: true),
            AuditEntry.conflict(key: Array("k".utf8), winner: stamp, loser: loser, loserDigest: SHA256.digest([9]), detectedUnixMs: 1_234),
            AuditEntry.conflict(key: Array("k".utf8), winner: stamp, loser: loser, loserDigest: [], detectedUnixMs: 1_234),
        ] {
            #expect(try AuditEntry(decoding: entry.encoded()) == entry)
            #expect(entry.encoded().count == entry.encodedByteCount)
        }
        let position = AuditEntry.nextPosition(after: 0, nowUnixMs: 1_795_849_343_123)
        #expect(AuditEntry.position(ofKey: AuditEntry.key(position: position)) == position)
        #expect(position >> AuditEntry.positionShift == 1_795_849_343_123)
        // Many entries in one millisecond, and a clock that stepped back: still increasing.
        #expect(AuditEntry.nextPosition(after: position, nowUnixMs: 1_795_849_343_123) == position + 1)
        #expect(AuditEntry.nextPosition(after: position + 1, nowUnixMs: 1_795_849_343_000) == position + 2)
        #expect(AuditEntry.key(position: position).lexicographicallyPrecedes(AuditEntry.key(position: position + 1)))
    }
}
