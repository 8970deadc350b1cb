#if canImport(Glibc)
import Glibc
#endif
import Logging
import MeridianCore
import MeridianStorage
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// What installing a state read from disk did.
enum InstallOutcome: Equatable {
    /// The key is in memory now.
    case installed
    /// The key was in memory already (memory is newer than any disk state).
    case alreadyInMemory
    /// There is no live key: no record, a tombstone, an expired record, a record of a
    /// namespace that is no longer durable, or a corrupt record.
    case absent
    /// The key changed after the read: read again.
    case stale
}

extension Database {
    /// Installs what a disk read returned for `key` into memory, unless the key changed since
    /// the read (`StorageEngine.isCurrent`, checked under the shard lock so no write can slip
    /// in between) or memory already holds it.
    func install(
        key: [UInt8], record: [UInt8]?, token: StorageEngine.ReadToken, nowUnixMs: Int64,
        progress: WarmUpProgress, logger: Logger
    ) -> InstallOutcome {
        guard let storage else { return .absent }
        let shard = shards[shardIndex(ofBytes: key)]
        let decoded = decodeForInstall(key: key, record: record, progress: progress, logger: logger)
        shard.lock.lock()
        defer {
            shard.publishUsedBytes()
            shard.lock.unlock()
        }
        guard storage.isCurrent(key: key, token: token) else { return .stale }
        return installLocked(key: key, decoded: decoded, into: shard, storage: storage, nowUnixMs: nowUnixMs, progress: progress)
    }

    /// Installs a chunk of scanned records (all read with `token`), taking each shard's lock
    /// and the engine's lock once per shard rather than once per record. Returns the keys
    /// that changed since the scan (to be read again).
    func installChunk(
        _ records: [(key: [UInt8], record: [UInt8])], token: StorageEngine.ReadToken, nowUnixMs: Int64,
        progress: WarmUpProgress, logger: Logger
    ) -> (installed: Int, stale: [[UInt8]]) {
        guard let storage else { return (0, []) }
        // Decoding (checksums, copies) happens before any lock is taken.
        var byShard = [[(key: [UInt8], decoded: DecodedRecord)]](repeating: [], count: Self.shardCount)
        for (key, record) in records {
            byShard[shardIndex(ofBytes: key)].append((key, decodeForInstall(key: key, record: record, progress: progress, logger: logger)))
        }
        var installed = 0
        var stale: [[UInt8]] = []
        for (index, group) in byShard.enumerated() where !group.isEmpty {
            let shard = shards[index]
            shard.lock.lock()
            let current = storage.areCurrent(keys: group.map(\.key), token: token)
            for (position, item) in group.enumerated() {
                guard current[position] else {
                    stale.append(item.key)
                    continue
                }
                if installLocked(key: item.key, decoded: item.decoded, into: shard, storage: storage, nowUnixMs: nowUnixMs, progress: progress) == .installed {
                    installed += 1
                }
            }
            shard.publishUsedBytes()
            shard.lock.unlock()
        }
        return (installed, stale)
    }

    /// A stored record decoded for installing, or why it cannot be.
    enum DecodedRecord {
        case none
        case corrupt
        case record(DurableRecord, namespace: Int)
    }

    private func decodeForInstall(key: [UInt8], record: [UInt8]?, progress: WarmUpProgress, logger: Logger) -> DecodedRecord {
        guard let record else { return .none }
        do {
            let decoded = try DurableRecord(decoding: record)
            return .record(decoded, namespace: key.withUnsafeBytes { namespaces.index(of: $0) })
        } catch {
            progress.corruptRecords.add(1, ordering: .relaxed)
            logger.error("corrupt record on disk; the key is treated as absent", metadata: [
                "key": "\(String(decoding: key.prefix(64), as: UTF8.self))", "error": "\(error)",
            ])
            return .corrupt
        }
    }

    /// The part of installing that needs the shard's lock (held) and a current read.
    private func installLocked(
        key: [UInt8], decoded: DecodedRecord, into shard: Shard, storage: StorageEngine, nowUnixMs: Int64,
        progress: WarmUpProgress
    ) -> InstallOutcome {
        if shard.keyspace.slot(ofBytes: key) != nil { return .alreadyInMemory }
        guard case .record(let record, let namespace) = decoded else { return .absent }
        guard durableUrgency[namespace] != nil else {
            // The namespace is memory-only now: its old records are not data any more.
            storage.enqueue(key: key, state: .absent, urgency: .lazy)
            progress.droppedRecords.add(1, ordering: .relaxed)
            return .absent
        }
        // The clock restarts from nothing: it moves past every stamp read back, so a write to a
        // key after a restart is stamped above the state it overwrites (a key's record is read
        // before any command touches the key).
        observe(max(record.valueStamp.timestamp, record.expiryStamp.timestamp))
        // A replicated key's dead state (deleted, or expired) comes back as its tombstone, so a
        // late write from another data center still merges with it (docs/REPLICATION.md).
        let replicated = keepsReplicaStates[namespace]
        if record.isTombstone {
            if replicated { shard.keyspace.restoreDeadState(key: key, record: record) }
            if !keepsTombstones { storage.enqueue(key: key, state: .absent, urgency: .lazy) }
            return .absent
        }
        if record.isExpired(atUnixMs: nowUnixMs) {
            // Expired while the node was down (or since): gone, and its record too.
            if replicated { shard.keyspace.restoreDeadState(key: key, record: record) }
            storage.enqueue(key: key, state: .absent, urgency: .lazy)
            progress.expiredRecords.add(1, ordering: .relaxed)
            return .absent
        }
        guard let entry = record.entry(namespaceIndex: namespace, lastAccessUnixMs: nowUnixMs) else { return .absent }
        _ = key.withUnsafeBytes { shard.keyspace.insert(bytes: $0, entry: entry, logged: false) }
        return .installed
    }

    /// The shard index of a key given as bytes.
    func shardIndex(ofBytes key: [UInt8]) -> Int {
        key.withUnsafeBytes { Partitioner.slot(of: $0) } & (Self.shardCount - 1)
    }

    /// Reads `key` through the storage engine and installs it, reading again while the key
    /// changes under the read. Blocks on disk: run it off the event loops.
    func loadKey(_ key: [UInt8], progress: WarmUpProgress, logger: Logger) throws(StorageError) -> InstallOutcome {
        guard let storage else { return .absent }
        for _ in 0..<Self.loadAttemptsMax {
            let read = try storage.read(key: key)
            let outcome = install(
                key: key, record: read.record, token: read.token, nowUnixMs: SystemClock.nowUnixMs(),
                progress: progress, logger: logger)
            if outcome != .stale { return outcome }
        }
        return .stale
    }

    /// Reads of one key before giving up on installing it (each retry means a flush or a
    /// write raced the read; a handful is already rare).
    static let loadAttemptsMax = 64
}

/// Loads keys that a command needs from disk, on a small thread pool; concurrent misses on
/// one key share one read.
public final class DiskReader: Sendable {
    /// Threads doing blocking disk reads (warm-up takes one of them while it runs).
    public static let threadCount = 3

    private let database: Database
    private let progress: WarmUpProgress
    private let logger: Logger
    private let pool: NIOThreadPool
    /// The audit export's thread: exports read much and long, so they take their own thread
    /// and key loads never wait behind them (exports wait for each other instead). It runs at
    /// a lower scheduling priority (`exportNice`): an export takes the CPU clients leave.
    private let exportPool: NIOThreadPool
    /// The export thread's nice value: at 10 the kernel gives it about a tenth of what a
    /// client event loop gets when both want the CPU, and all of an idle machine.
    public static let exportNice: Int32 = 10
    /// Keys being read, with everyone waiting for them.
    private let inFlight = NIOLockedValueBox<[[UInt8]: [EventLoopPromise<Void>]]>([:])
    /// Reads started, and requests that joined a read already running.
    public let reads = Atomic<Int>(0)
    public let sharedReads = Atomic<Int>(0)

    public init(database: Database, progress: WarmUpProgress, logger: Logger) {
        self.database = database
        self.progress = progress
        self.logger = logger
        self.pool = NIOThreadPool(numberOfThreads: Self.threadCount)
        pool.start()
        self.exportPool = NIOThreadPool(numberOfThreads: 1)
        exportPool.start()
    }

    /// Loads `keys` into memory (or confirms they exist nowhere); the future completes on `loop`.
    public func load(_ keys: [[UInt8]], on loop: EventLoop) -> EventLoopFuture<Void> {
        var futures: [EventLoopFuture<Void>] = []
        var started: [[UInt8]] = []
        inFlight.withLockedValue { inFlight in
            for key in keys {
                let promise = loop.makePromise(of: Void.self)
                futures.append(promise.futureResult)
                if inFlight[key] != nil {
                    inFlight[key]!.append(promise)
                } else {
                    inFlight[key] = [promise]
                    started.append(key)
                }
            }
        }
        sharedReads.add(keys.count - started.count, ordering: .relaxed)
        reads.add(started.count, ordering: .relaxed)
        for key in started {
            pool.submit { [self] _ in
                let result: Result<Void, Error>
                do {
                    if try database.loadKey(key, progress: progress, logger: logger) == .stale {
                        logger.warning("a key kept changing while it loaded from disk; the command runs on memory's state")
                    }
                    result = .success(())
                } catch {
                    logger.error("disk read failed", metadata: ["error": "\(error)"])
                    result = .failure(error)
                }
                let waiting = inFlight.withLockedValue { $0.removeValue(forKey: key) } ?? []
                for promise in waiting { promise.completeWith(result) }
            }
        }
        return EventLoopFuture.andAllSucceed(futures, on: loop)
    }

    /// Runs `work` on one of the reader threads.
    func submit(_ work: @escaping @Sendable () -> Void) {
        pool.submit { _ in work() }
    }

    /// Runs `work` on the audit export thread.
    func submitExport(_ work: @escaping @Sendable () -> Void) {
        exportPool.submit { state in
            // Cancelled: the node is shutting down and its connections are gone.
            guard case .active = state else { return }
            Self.lowerThisThreadsPriority()
            work()
        }
    }

    /// Sets the calling thread's nice value to `exportNice`: on Linux the nice value is per
    /// thread and `setpriority(PRIO_PROCESS, 0, _)` sets the caller's (one cheap call per
    /// chunk, as the pool does not say when its thread starts).
    private static func lowerThisThreadsPriority() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, exportNice)
        #endif
    }

    /// Stops the reader threads (after the connections are gone).
    public func shutdown() {
        try? exportPool.syncShutdownGracefully()
        try? pool.syncShutdownGracefully()
    }
}

/// Progress of reloading the durable namespaces at start, for INFO persistence and the log.
public final class WarmUpProgress: Sendable {
    public let loading = Atomic<Bool>(false)
    public let estimatedRecords = Atomic<Int>(0)
    public let scannedRecords = Atomic<Int>(0)
    public let installedKeys = Atomic<Int>(0)
    public let expiredRecords = Atomic<Int>(0)
    public let droppedRecords = Atomic<Int>(0)
    public let corruptRecords = Atomic<Int>(0)
    public let startedUnixMs = Atomic<Int64>(0)
    public let finishedUnixMs = Atomic<Int64>(0)
    /// Set when warm-up stopped early because memory reached its share of `maxmemory`.
    public let stoppedForMemory = Atomic<Bool>(false)

    public init() {}
}

/// Reloads the durable namespaces into memory after a start, while the node already serves:
/// until it is done every shard counts as holding keys on disk only, so misses ask the disk.
public enum WarmUp {
    /// Records per scan step.
    static let chunkRecords = 1024
    /// Warm-up stops loading once memory reaches this share of `maxmemory`, leaving room for
    /// writes; the rest stays on disk and loads on a miss.
    static let memoryShareMax = 0.9
    /// Progress is logged at most this often.
    static let logIntervalMs: Int64 = 2000

    /// Starts warm-up on one of `reader`'s threads.
    public static func start(database: Database, progress: WarmUpProgress, reader: DiskReader, logger: Logger) {
        guard let storage = database.storage else { return }
        for shard in database.shards { shard.mayHaveDiskOnlyKeys.store(true, ordering: .relaxed) }
        database.diskOnlyKeysPossible.store(true, ordering: .relaxed)
        progress.loading.store(true, ordering: .relaxed)
        progress.startedUnixMs.store(SystemClock.nowUnixMs(), ordering: .relaxed)
        progress.estimatedRecords.store(storage.estimatedRecordCount, ordering: .relaxed)
        reader.submit {
            run(database: database, storage: storage, progress: progress, logger: logger)
        }
    }

    private static func run(database: Database, storage: StorageEngine, progress: WarmUpProgress, logger: Logger) {
        let started = SystemClock.monotonicNs()
        logger.info("loading durable namespaces from disk", metadata: ["records_estimate": "\(progress.estimatedRecords.load(ordering: .relaxed))"])
        var skippedShards = Set<Int>()
        var cursor: [UInt8]?
        var lastLogMs = SystemClock.nowUnixMs()
        scan: while true {
            let limit = database.maxmemoryBytes.load(ordering: .relaxed)
            if limit > 0 && Double(database.usedBytes) >= Double(limit) * memoryShareMax {
                progress.stoppedForMemory.store(true, ordering: .relaxed)
                logger.notice("warm-up stopped at the memory limit; the remaining keys load from disk on first use", metadata: [
                    "used_bytes": "\(database.usedBytes)", "maxmemory": "\(limit)",
                ])
                skippedShards = Set(0..<Database.shardCount)
                break
            }
            let step: (records: [(key: [UInt8], record: [UInt8])], token: StorageEngine.ReadToken)?
            do {
                step = try storage.scanStored(after: cursor, limit: chunkRecords)
            } catch {
                logger.error("warm-up scan failed; keys not loaded yet load from disk on first use", metadata: ["error": "\(error)"])
                skippedShards = Set(0..<Database.shardCount)
                break
            }
            guard let step else {
                // A FLUSHALL is being written; what it clears need not be loaded.
                usleep(1000)
                continue
            }
            if step.records.isEmpty { break }
            let now = SystemClock.nowUnixMs()
            let chunk = database.installChunk(step.records, token: step.token, nowUnixMs: now, progress: progress, logger: logger)
            progress.installedKeys.add(chunk.installed, ordering: .relaxed)
            for key in chunk.stale {
                // Changed since the scan: read it again, alone.
                switch (try? database.loadKey(key, progress: progress, logger: logger)) ?? .stale {
                case .installed: progress.installedKeys.add(1, ordering: .relaxed)
                case .stale:
                    // Could not settle it: its shard keeps asking the disk on a miss.
                    skippedShards.insert(database.shardIndex(ofBytes: key))
                case .absent, .alreadyInMemory: break
                }
            }
            progress.scannedRecords.add(step.records.count, ordering: .relaxed)
            cursor = step.records.last!.key
            if now - lastLogMs >= logIntervalMs {
                lastLogMs = now
                logger.info("loading durable namespaces", metadata: [
                    "scanned": "\(progress.scannedRecords.load(ordering: .relaxed))",
                    "estimate": "\(progress.estimatedRecords.load(ordering: .relaxed))",
                ])
                continue scan
            }
        }
        // Shards where every record was settled and nothing was evicted now answer misses
        // from memory alone.
        var anyDiskOnly = false
        for (index, shard) in database.shards.enumerated() {
            shard.lock.lock()
            let diskOnly = shard.evictedDurableKeys || skippedShards.contains(index)
            shard.mayHaveDiskOnlyKeys.store(diskOnly, ordering: .relaxed)
            shard.lock.unlock()
            anyDiskOnly = anyDiskOnly || diskOnly
        }
        if !anyDiskOnly {
            // An eviction sets its shard's flag before the global one: clearing the global
            // flag first and then looking at the shards cannot lose it.
            database.diskOnlyKeysPossible.store(false, ordering: .sequentiallyConsistent)
            if database.shards.contains(where: { $0.mayHaveDiskOnlyKeys.load(ordering: .sequentiallyConsistent) }) {
                database.diskOnlyKeysPossible.store(true, ordering: .sequentiallyConsistent)
            }
        }
        progress.finishedUnixMs.store(SystemClock.nowUnixMs(), ordering: .relaxed)
        progress.loading.store(false, ordering: .relaxed)
        logger.info("durable namespaces loaded", metadata: [
            "keys": "\(progress.installedKeys.load(ordering: .relaxed))",
            "scanned": "\(progress.scannedRecords.load(ordering: .relaxed))",
            "expired_dropped": "\(progress.expiredRecords.load(ordering: .relaxed))",
            "corrupt": "\(progress.corruptRecords.load(ordering: .relaxed))",
            "ms": "\((SystemClock.monotonicNs() - started) / 1_000_000)",
        ])
    }
}

#if canImport(Glibc)
import Glibc
#endif
