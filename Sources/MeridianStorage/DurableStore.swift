#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the node needs of a disk: point reads, atomic batches that may be synced, and a scan
/// in key order. `RocksDBStore` is the backend the server runs on; `InMemoryStore` stands in
/// for it where a test (or the simulator) wants a disk it can inspect and make fail.
///
/// Keys are user keys; values are encoded `DurableRecord`s. A store knows nothing of
/// namespaces, stamps or TTLs: those are decided above it.
public protocol DurableStore: AnyObject, Sendable {
    /// The record stored under `key`, or nil.
    func read(key: [UInt8]) throws(StorageError) -> [UInt8]?
    /// Applies `batch` atomically: after a crash either all of it is there or none. With
    /// `sync`, returns only once the batch is on stable storage (the WAL is fsynced).
    func apply(_ batch: StoreBatch, sync: Bool) throws(StorageError)
    /// Up to `limit` records in key order, starting after `key` (from the first when nil).
    func scan(after key: [UInt8]?, limit: Int) throws(StorageError) -> [(key: [UInt8], record: [UInt8])]
    /// Up to `limit` entries of the append-only logs (keys with their own prefix byte, e.g. the
    /// audit log's `a`) in key order, from `start` (inclusive) to `end` (exclusive).
    func scanLog(from start: [UInt8], to end: [UInt8], limit: Int) throws(StorageError) -> [(key: [UInt8], value: [UInt8])]
    /// The last log key from `start` (inclusive) to `end` (exclusive), or nil when there is none.
    func lastLogKey(from start: [UInt8], to end: [UInt8]) throws(StorageError) -> [UInt8]?
    /// An estimate of the number of records (for warm-up progress).
    var estimatedRecordCount: Int { get }
    /// Releases the store; no call may follow.
    func close()
}

/// One atomic write: an optional clear of every record, then puts and deletes (of distinct
/// keys), then appends to and trims of the logs (whose keys carry their own prefix byte, which
/// is not `r`; a clear leaves the logs alone).
public struct StoreBatch: Sendable {
    /// Remove every record before applying the rest (FLUSHALL).
    public var clearAll = false
    public var puts: [(key: [UInt8], record: [UInt8])] = []
    public var deletes: [[UInt8]] = []
    public var logPuts: [(key: [UInt8], value: [UInt8])] = []
    /// Log ranges to remove: from `start` (inclusive) to `end` (exclusive).
    public var logDeletes: [(start: [UInt8], end: [UInt8])] = []

    public init(clearAll: Bool = false, puts: [(key: [UInt8], record: [UInt8])] = [], deletes: [[UInt8]] = []) {
        self.clearAll = clearAll
        self.puts = puts
        self.deletes = deletes
    }

    public var isEmpty: Bool { !clearAll && puts.isEmpty && deletes.isEmpty && logPuts.isEmpty && logDeletes.isEmpty }
}

/// A disk operation that failed. Open errors are reported to the operator and stop the node
/// from starting; a failed write is fatal to a running node (see `StorageEngine`).
public enum StorageError: Error, Equatable, CustomStringConvertible {
    case open(path: String, reason: String)
    case read(reason: String)
    case write(reason: String)
    case incompatibleFormat(path: String, found: String)

    public var description: String {
        switch self {
        case .open(let path, let reason):
            reason.contains("lock file")
                ? "cannot open the data directory's store at \(path): another process holds its lock (is a second meridian-server using this --data-dir?): \(reason)"
                : "cannot open the data directory's store at \(path): \(reason)"
        case .read(let reason): "disk read failed: \(reason)"
        case .write(let reason): "disk write failed: \(reason)"
        case .incompatibleFormat(let path, let found): "the store at \(path) has format '\(found)'; this build reads format '\(RocksDBStore.formatMarker)'"
        }
    }
}

/// A store in memory with injectable write failures: for tests of the engine above it.
public final class InMemoryStore: DurableStore, @unchecked Sendable {
    private let lock = Mutex()
    private var records: [[UInt8]: [UInt8]] = [:]
    private var logs: [[UInt8]: [UInt8]] = [:]
    private var failWrites: String?
    /// Batches applied, and how many of them were synced.
    public private(set) var appliedBatches = 0
    public private(set) var syncedBatches = 0

    /// How long a synced batch takes, as a disk's fsync would (microseconds).
    private let syncLatencyMicroseconds: UInt32
    /// How long a point read takes (microseconds).
    private let readLatencyMicroseconds: UInt32
    /// Point reads served.
    public var reads: Int { lock.withLock { readCount } }
    private var readCount = 0

    public init(syncLatencyMicroseconds: UInt32 = 0, readLatencyMicroseconds: UInt32 = 0) {
        self.syncLatencyMicroseconds = syncLatencyMicroseconds
        self.readLatencyMicroseconds = readLatencyMicroseconds
    }

    /// Makes every later write fail with `reason` (nil: succeed again).
    public func failWrites(_ reason: String?) { lock.withLock { failWrites = reason } }

    public func read(key: [UInt8]) throws(StorageError) -> [UInt8]? {
        if readLatencyMicroseconds > 0 { usleep(readLatencyMicroseconds) }
        return lock.withLock {
            readCount += 1
            return records[key]
        }
    }

    public func apply(_ batch: StoreBatch, sync: Bool) throws(StorageError) {
        let failure: String? = lock.withLock {
            if let failWrites { return failWrites }
            if batch.clearAll { records.removeAll() }
            for put in batch.puts { records[put.key] = put.record }
            for key in batch.deletes { records[key] = nil }
            for put in batch.logPuts { logs[put.key] = put.value }
            for range in batch.logDeletes {
                for key in logs.keys where !key.lexicographicallyPrecedes(range.start) && key.lexicographicallyPrecedes(range.end) {
                    logs[key] = nil
                }
            }
            appliedBatches += 1
            if sync { syncedBatches += 1 }
            return nil
        }
        if let failure { throw .write(reason: failure) }
        if sync && syncLatencyMicroseconds > 0 { usleep(syncLatencyMicroseconds) }
    }

    public func scan(after key: [UInt8]?, limit: Int) throws(StorageError) -> [(key: [UInt8], record: [UInt8])] {
        lock.withLock {
            let keys = records.keys.filter { key == nil || key!.lexicographicallyPrecedes($0) }
                .sorted { $0.lexicographicallyPrecedes($1) }
            return keys.prefix(limit).map { ($0, records[$0]!) }
        }
    }

    public func scanLog(from start: [UInt8], to end: [UInt8], limit: Int) throws(StorageError) -> [(key: [UInt8], value: [UInt8])] {
        lock.withLock {
            logs.keys.filter { !$0.lexicographicallyPrecedes(start) && $0.lexicographicallyPrecedes(end) }
                .sorted { $0.lexicographicallyPrecedes($1) }.prefix(limit).map { ($0, logs[$0]!) }
        }
    }

    public func lastLogKey(from start: [UInt8], to end: [UInt8]) throws(StorageError) -> [UInt8]? {
        lock.withLock {
            logs.keys.filter { !$0.lexicographicallyPrecedes(start) && $0.lexicographicallyPrecedes(end) }
                .max { $0.lexicographicallyPrecedes($1) }
        }
    }

    public var estimatedRecordCount: Int { lock.withLock { records.count } }

    public func close() {}
}
