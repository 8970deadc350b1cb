import Logging
import MeridianCore
import Synchronization

/// The write-behind log between the in-memory keyspace and the durable store, and the one
/// thread that writes to disk.
///
/// **Writes.** Event loops `enqueue` the new state of a key while they still hold the key's
/// shard lock, so states reach the queue in the order they had in memory. The queue keeps one
/// state per key (a later state replaces an earlier one: a hot key costs one disk write per
/// flush, not one per command). Each enqueue gets a sequence number.
///
/// **Flushes (group commit).** The writer thread takes everything queued as one batch, applies
/// it atomically and syncs the WAL, then publishes `durableSequence` = the last sequence in the
/// batch and runs the callbacks waiting for it. It starts a flush as soon as a `write-through`
/// state is queued; writes that arrive while a sync runs share the next one, so throughput
/// grows with the number of writers instead of being one fsync per write. `write-back` states
/// are flushed by half their namespace's window after they were queued, leaving the other half
/// for the sync itself; a flush that ends later than a state's window is counted and logged.
/// Every flush is synced, so the bound holds for power loss as well as for a killed process.
///
/// **Failure.** A failed write or sync is fatal: `onFatalError` runs (the server logs and
/// exits) and the writer stops for good. Nothing is retried and no waiter is ever released, so
/// no write that may not be on disk is acknowledged.
///
/// **Reads** (`read`) see the newest state: the queue first, then the batch being written,
/// then the store. A state leaves the in-flight batch only after the store holds it.
/// `ReadToken` lets a caller that installs what it read into memory check, under the shard
/// lock, that nothing changed the key since (see `isCurrent`).
///
/// Lock order: a shard lock, then this engine's lock; never the reverse.
public final class StorageEngine: @unchecked Sendable {
    /// What is queued for a key.
    public enum State: Sendable, Equatable {
        /// An encoded `DurableRecord` (a value or a tombstone).
        case record([UInt8])
        /// A record not encoded yet: the writer thread encodes it (checksum included) when it
        /// flushes, so a key rewritten many times within a flush is encoded once, off the
        /// event loop. Its value array is shared with memory, not copied.
        case register(DurableRecord)
        /// No record at all (an expired key, or a delete without peers that need a tombstone).
        case absent
    }

    /// When a state must be on disk.
    public enum Urgency: Sendable, Equatable {
        /// `write-through`: flushed at once; its writer waits for `durableSequence`.
        case sync
        /// `write-back`: on disk within `windowMs` of the enqueue.
        case within(windowMs: Int64)
        /// Housekeeping (records of expired keys): whenever the next flush happens, within a second.
        case lazy
    }

    /// What `read` saw, for `isCurrent`.
    public struct ReadToken: Sendable, Equatable {
        fileprivate var completedFlushes: UInt64
        fileprivate var clears: UInt64
        /// The sequence of the queued state that was read; 0 when it came from the store.
        fileprivate var sequence: UInt64
    }

    /// A counters snapshot for INFO persistence.
    public struct Statistics: Sendable {
        public var pendingKeys = 0
        public var pendingBytes = 0
        public var flushes: UInt64 = 0
        public var flushedStates: UInt64 = 0
        public var flushedBytes: UInt64 = 0
        public var syncLatency = LatencyHistogram()
        public var lastSyncUnixMs: Int64 = 0
        public var lastSyncMicroseconds: UInt64 = 0
        /// Flushes that ended after the window of a write-back state they carried.
        public var lateFlushes: UInt64 = 0
        public var failure: String?
    }

    /// A flush starts early once this many bytes or states are queued. A flush's time grows
    /// with its size (each state is a memtable insert), so under a heavy write-back load
    /// smaller, more frequent flushes keep every state well inside its window; measured in
    /// docs/PERFORMANCE.md (`write_back_late_flushes`).
    public static let flushBytesThreshold = 1 << 20
    public static let flushStatesThreshold = 1024
    /// Above this many queued bytes or states, writers wait for the flush (see
    /// `isBacklogged`). Without it, a writer thread that falls behind (a bulk load arriving
    /// faster than the disk takes it) would let batches grow until one flush takes longer
    /// than the write-back window, breaking its promise; with it, a flush carries at most a
    /// few thousand states (about 20 ms here, docs/PERFORMANCE.md) and the load slows to
    /// the disk's pace instead.
    public static let pendingBytesMax = 4 << 20
    public static let pendingStatesMax = 4096
    /// Housekeeping states wait at most this long.
    static let lazyWindowMs: Int64 = 1000
    /// Bounds of the group-commit gathering wait (see `runWriter`).
    static let gatherNsMin: UInt64 = 50_000
    static let gatherNsMax: UInt64 = 1_000_000

    private struct Pending {
        var sequence: UInt64
        var state: State
        /// When the writer must start the flush carrying this state.
        var flushByNs: UInt64
        /// When the state must be on disk (write-back only; `.max` otherwise).
        var durableByNs: UInt64
        var bytes: Int
    }

    /// A key of the queue. Hashing `[UInt8]` as a sequence feeds the hasher one byte at a
    /// time; this feeds it the bytes in one call.
    private struct QueueKey: Hashable {
        let bytes: [UInt8]

        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    private let store: DurableStore
    private let logger: Logger
    private let onFatalError: @Sendable (String) -> Void
    private let mutex = Mutex()

    // Guarded by `mutex`.
    private var pending: [QueueKey: Pending] = [:]
    /// Log appends and trims queued for the next flush (never collapsed: each is its own key).
    /// Log values are encoded by the writer thread, not by the command that queues them.
    private var pendingLog: [(key: [UInt8], encode: @Sendable () -> [UInt8])] = []
    private var pendingLogDeletes: [(start: [UInt8], end: [UInt8])] = []
    private var pendingBytes = 0
    private var pendingFlushByNs: UInt64 = .max
    private var pendingClear = false
    private var inFlight: [QueueKey: Pending] = [:]
    private var inFlightClear = false
    private var lastSequence: UInt64 = 0
    private var completedFlushes: UInt64 = 0
    private var clears: UInt64 = 0
    private var waiters: [(sequence: UInt64, callback: @Sendable () -> Void)] = []
    private var stopping = false
    private var stopped = false
    /// Group commit: how many write-through states the last flush carried (their writers are
    /// likely to come back with the next ones), how many are queued now, whether the writer
    /// is waiting for more, and until when.
    private var syncStatesInLastFlush = 0
    private var pendingSyncStates = 0
    private var gathering = false
    private var gatherUntilNs: UInt64 = 0
    private var lastSyncNs: UInt64 = 0
    private var statistics = Statistics()

    /// The last sequence handed out (any urgency).
    public let enqueuedSequence = Atomic<UInt64>(0)
    /// The last sequence of a `write-through` state (or a clear).
    public let enqueuedSyncSequence = Atomic<UInt64>(0)
    /// Every state up to this sequence is synced.
    public let durableSequence = Atomic<UInt64>(0)
    /// Queued bytes and states (not yet flushed), for backpressure.
    private let queuedBytes = Atomic<Int>(0)
    private let queuedStates = Atomic<Int>(0)

    /// Starts the writer thread over `store`.
    public init(store: DurableStore, logger: Logger, onFatalError: @escaping @Sendable (String) -> Void) {
        self.store = store
        self.logger = logger
        self.onFatalError = onFatalError
        startThread(name: "meridian-storage-writer") { [self] in runWriter() }
    }

    // MARK: Writes

    /// Queues `state` as the new state of `key`. Call with the key's shard lock held.
    /// Returns the state's sequence.
    @discardableResult
    public func enqueue(key: [UInt8], state: State, urgency: Urgency, nowNs: UInt64 = monotonicNowNs()) -> UInt64 {
        let bytes = key.count + Self.byteCount(state) + 64
        let flushByNs: UInt64
        let durableByNs: UInt64
        switch urgency {
        case .sync:
            flushByNs = nowNs
            durableByNs = .max
        case .within(let windowMs):
            flushByNs = nowNs + UInt64(windowMs) * 500_000
            durableByNs = nowNs + UInt64(windowMs) * 1_000_000
        case .lazy:
            flushByNs = nowNs + UInt64(Self.lazyWindowMs) * 1_000_000
            durableByNs = .max
        }
        mutex.lock()
        lastSequence += 1
        let sequence = lastSequence
        var entry = Pending(sequence: sequence, state: state, flushByNs: flushByNs, durableByNs: durableByNs, bytes: bytes)
        let queueKey = QueueKey(bytes: key)
        if let previous = pending[queueKey] {
            // The earlier state was acknowledged under its own deadline; the new one keeps it.
            entry.flushByNs = min(entry.flushByNs, previous.flushByNs)
            entry.durableByNs = min(entry.durableByNs, previous.durableByNs)
            pendingBytes -= previous.bytes
        }
        pending[queueKey] = entry
        pendingBytes += bytes
        var wake = entry.flushByNs < pendingFlushByNs || pendingBytes >= Self.flushBytesThreshold
            || pending.count == Self.flushStatesThreshold
        pendingFlushByNs = min(pendingFlushByNs, entry.flushByNs)
        if urgency == .sync {
            pendingSyncStates += 1
            if gathering && pendingSyncStates >= syncStatesInLastFlush { wake = true }
        }
        enqueuedSequence.store(sequence, ordering: .releasing)
        if urgency == .sync { enqueuedSyncSequence.store(sequence, ordering: .releasing) }
        queuedBytes.store(pendingBytes, ordering: .relaxed)
        queuedStates.store(pending.count, ordering: .relaxed)
        mutex.unlock()
        if wake { mutex.broadcast() }
        return sequence
    }

    /// Queues an append to a log (`key` carries the log's prefix byte), flushed with the states
    /// queued around it, in the same atomic batch, under `urgency`. `encode` makes the value (of
    /// about `valueBytes` bytes) on the writer thread, as registers are, so the command that
    /// queues it pays no encoding or checksum. Returns its sequence.
    @discardableResult
    public func appendLog(
        key: [UInt8], valueBytes: Int, urgency: Urgency, nowNs: UInt64 = monotonicNowNs(),
        encode: @escaping @Sendable () -> [UInt8]
    ) -> UInt64 {
        let bytes = key.count + valueBytes + 32
        let flushByNs: UInt64
        switch urgency {
        case .sync: flushByNs = nowNs
        case .within(let windowMs): flushByNs = nowNs + UInt64(windowMs) * 500_000
        case .lazy: flushByNs = nowNs + UInt64(Self.lazyWindowMs) * 1_000_000
        }
        mutex.lock()
        lastSequence += 1
        let sequence = lastSequence
        pendingLog.append((key, encode))
        pendingBytes += bytes
        let wake = flushByNs < pendingFlushByNs || pendingBytes >= Self.flushBytesThreshold
        pendingFlushByNs = min(pendingFlushByNs, flushByNs)
        enqueuedSequence.store(sequence, ordering: .releasing)
        queuedBytes.store(pendingBytes, ordering: .relaxed)
        mutex.unlock()
        if wake { mutex.broadcast() }
        return sequence
    }

    /// Queues the removal of one log entry, lazily: a range of that key alone (`key` to `key`
    /// + 0), which the store writes as a point delete — many single-key range tombstones would
    /// slow RocksDB's reads and flushes.
    public func deleteLog(key: [UInt8], nowNs: UInt64 = monotonicNowNs()) {
        trimLog(from: key, to: key + [0], nowNs: nowNs)
    }

    /// Queues the removal of the log entries from `start` (inclusive) to `end` (exclusive),
    /// lazily (retention).
    public func trimLog(from start: [UInt8], to end: [UInt8], nowNs: UInt64 = monotonicNowNs()) {
        mutex.lock()
        lastSequence += 1
        pendingLogDeletes.append((start, end))
        pendingFlushByNs = min(pendingFlushByNs, nowNs + UInt64(Self.lazyWindowMs) * 1_000_000)
        enqueuedSequence.store(lastSequence, ordering: .releasing)
        mutex.unlock()
        mutex.broadcast()
    }

    /// Queues the removal of every record (FLUSHALL), synced like a `write-through` write.
    /// Call with every shard lock held. Returns its sequence.
    @discardableResult
    public func enqueueClear() -> UInt64 {
        mutex.lock()
        lastSequence += 1
        let sequence = lastSequence
        // Queued states are older than the clear: they are superseded, not written.
        pending.removeAll()
        pendingBytes = 0
        pendingClear = true
        clears += 1
        pendingFlushByNs = 0
        enqueuedSequence.store(sequence, ordering: .releasing)
        enqueuedSyncSequence.store(sequence, ordering: .releasing)
        queuedBytes.store(0, ordering: .relaxed)
        queuedStates.store(0, ordering: .relaxed)
        mutex.unlock()
        mutex.broadcast()
        return sequence
    }

    /// Makes everything queued due now (SAVE, BGSAVE, shutdown). Returns the sequence that
    /// covers it.
    @discardableResult
    public func flushNow() -> UInt64 {
        mutex.lock()
        let sequence = lastSequence
        if !pending.isEmpty || !pendingLog.isEmpty || !pendingLogDeletes.isEmpty { pendingFlushByNs = 0 }
        mutex.unlock()
        mutex.broadcast()
        return sequence
    }

    /// Whether so much is queued that writers should wait for the next flush.
    public var isBacklogged: Bool {
        queuedBytes.load(ordering: .relaxed) >= Self.pendingBytesMax
            || queuedStates.load(ordering: .relaxed) >= Self.pendingStatesMax
    }

    /// Runs `callback` (on the writer thread) once every state up to `sequence` is synced.
    /// Returns false, without keeping the callback, when that is already so.
    public func whenDurable(_ sequence: UInt64, _ callback: @escaping @Sendable () -> Void) -> Bool {
        if durableSequence.load(ordering: .acquiring) >= sequence { return false }
        mutex.lock()
        defer { mutex.unlock() }
        if durableSequence.load(ordering: .acquiring) >= sequence { return false }
        waiters.append((sequence, callback))
        return true
    }

    // MARK: Reads

    /// The newest state of `key`: queued, being written, or stored. Blocks on the store: call
    /// it off the event loops.
    public func read(key: [UInt8]) throws(StorageError) -> (record: [UInt8]?, token: ReadToken) {
        let queueKey = QueueKey(bytes: key)
        mutex.lock()
        var token = ReadToken(completedFlushes: completedFlushes, clears: clears, sequence: 0)
        if let queued = pending[queueKey] ?? (pendingClear ? nil : inFlight[queueKey]) {
            token.sequence = queued.sequence
            mutex.unlock()
            return (Self.record(of: queued.state), token)
        }
        if pendingClear || inFlightClear {
            // Everything not queued after the clear is gone.
            mutex.unlock()
            return (nil, token)
        }
        mutex.unlock()
        return (try store.read(key: key), token)
    }

    /// Up to `limit` stored records after `key`, for warm-up, with the token that `isCurrent`
    /// checks each of them against. Returns nil while a clear is queued (try again later).
    public func scanStored(after key: [UInt8]?, limit: Int) throws(StorageError) -> (records: [(key: [UInt8], record: [UInt8])], token: ReadToken)? {
        mutex.lock()
        let token = ReadToken(completedFlushes: completedFlushes, clears: clears, sequence: 0)
        let clearing = pendingClear || inFlightClear
        mutex.unlock()
        if clearing { return nil }
        return (try store.scan(after: key, limit: limit), token)
    }

    /// Log entries on disk (flushed ones only) from `start` (inclusive) to `end` (exclusive).
    /// Blocks on the store: call it off the event loops.
    public func scanLog(from start: [UInt8], to end: [UInt8], limit: Int) throws(StorageError) -> [(key: [UInt8], value: [UInt8])] {
        try store.scanLog(from: start, to: end, limit: limit)
    }

    /// The last log key on disk from `start` (inclusive) to `end` (exclusive); appends still
    /// queued are not seen.
    public func lastLogKey(from start: [UInt8], to end: [UInt8]) throws(StorageError) -> [UInt8]? {
        try store.lastLogKey(from: start, to: end)
    }

    /// Whether what a read of `key` returned with `token` is still the key's newest state:
    /// no flush completed, no clear was queued and the key's queued state is the one read.
    /// Call with the key's shard lock held, so that no write to the key can slip in between
    /// this check and installing the state in memory.
    public func isCurrent(key: [UInt8], token: ReadToken) -> Bool {
        mutex.lock()
        defer { mutex.unlock() }
        guard completedFlushes == token.completedFlushes, clears == token.clears else { return false }
        let queueKey = QueueKey(bytes: key)
        let queued = pending[queueKey] ?? (pendingClear ? nil : inFlight[queueKey])
        return (queued?.sequence ?? 0) == token.sequence
    }

    /// `isCurrent` for several keys read with one token, under one lock (warm-up installs a
    /// scanned chunk shard by shard).
    public func areCurrent(keys: [[UInt8]], token: ReadToken) -> [Bool] {
        mutex.lock()
        defer { mutex.unlock() }
        guard completedFlushes == token.completedFlushes, clears == token.clears else {
            return Array(repeating: false, count: keys.count)
        }
        return keys.map { key in
            let queueKey = QueueKey(bytes: key)
            let queued = pending[queueKey] ?? (pendingClear ? nil : inFlight[queueKey])
            return (queued?.sequence ?? 0) == token.sequence
        }
    }

    // MARK: Lifecycle

    /// Flushes and syncs everything queued, stops the writer and closes the store. Blocks.
    public func shutdown() {
        mutex.lock()
        stopping = true
        pendingFlushByNs = 0
        mutex.unlock()
        mutex.broadcast()
        mutex.lock()
        while !stopped { mutex.wait() }
        let failed = statistics.failure != nil
        mutex.unlock()
        if !failed { store.close() }
    }

    /// The counters for INFO.
    public func statisticsSnapshot() -> Statistics {
        mutex.lock()
        defer { mutex.unlock() }
        var snapshot = statistics
        snapshot.pendingKeys = pending.count + inFlight.count
        snapshot.pendingBytes = pendingBytes + inFlight.values.reduce(0) { $0 + $1.bytes }
        return snapshot
    }

    /// An estimate of the stored records.
    public var estimatedRecordCount: Int { store.estimatedRecordCount }

    // MARK: Writer thread

    private func runWriter() {
        mutex.lock()
        while true {
            if statistics.failure != nil { break }
            if pending.isEmpty && !pendingClear && pendingLog.isEmpty && pendingLogDeletes.isEmpty {
                if stopping { break }
                mutex.wait()
                continue
            }
            let now = monotonicNowNs()
            let urgent = stopping || pendingClear || pendingBytes >= Self.flushBytesThreshold
                || pending.count >= Self.flushStatesThreshold
            let due = urgent || pendingFlushByNs <= now
            if !due {
                mutex.wait(untilMonotonicNs: pendingFlushByNs)
                continue
            }
            // Group commit: the writers the last sync released are usually on their way back
            // with their next write. Starting the sync on the first of them would leave the
            // rest for the sync after; waiting until as many write-through states are queued
            // as the last sync carried (or one sync's time at most) lets one sync carry them
            // all. One writer alone is never delayed: it is all the last sync carried.
            if !urgent && pendingSyncStates > 0 && pendingSyncStates < syncStatesInLastFlush {
                if gatherUntilNs == 0 {
                    gatherUntilNs = now + min(Self.gatherNsMax, max(Self.gatherNsMin, lastSyncNs))
                }
                if now < gatherUntilNs {
                    gathering = true
                    mutex.wait(untilMonotonicNs: gatherUntilNs)
                    gathering = false
                    continue
                }
            }
            gatherUntilNs = 0
            inFlight = pending
            inFlightClear = pendingClear
            pending = [:]
            pendingClear = false
            pendingFlushByNs = .max
            if pendingSyncStates > 0 { syncStatesInLastFlush = pendingSyncStates }
            pendingSyncStates = 0
            let batchBytes = pendingBytes
            pendingBytes = 0
            queuedBytes.store(0, ordering: .relaxed)
            queuedStates.store(0, ordering: .relaxed)
            let batchSequence = lastSequence
            var batch = StoreBatch(clearAll: inFlightClear)
            batch.logPuts = pendingLog.map { ($0.key, $0.encode()) }
            batch.logDeletes = pendingLogDeletes
            pendingLog = []
            pendingLogDeletes = []
            var durableByNs = UInt64.max
            batch.puts.reserveCapacity(inFlight.count)
            for (key, entry) in inFlight {
                switch entry.state {
                case .record(let bytes): batch.puts.append((key.bytes, bytes))
                case .register(let record): batch.puts.append((key.bytes, record.encoded()))
                case .absent: batch.deletes.append(key.bytes)
                }
                durableByNs = min(durableByNs, entry.durableByNs)
            }
            mutex.unlock()

            let started = monotonicNowNs()
            do {
                try store.apply(batch, sync: true)
            } catch {
                mutex.lock()
                statistics.failure = error.description
                mutex.unlock()
                logger.critical("disk write failed; the node stops rather than acknowledge writes that may not be on disk", metadata: ["error": "\(error)"])
                onFatalError(error.description)
                mutex.lock()
                break
            }
            let finished = monotonicNowNs()
            let microseconds = (finished - started) / 1000

            mutex.lock()
            inFlight = [:]
            inFlightClear = false
            completedFlushes += 1
            statistics.flushes += 1
            statistics.flushedStates += UInt64(batch.puts.count + batch.deletes.count)
            statistics.flushedBytes += UInt64(batchBytes)
            statistics.syncLatency.record(microseconds: microseconds)
            statistics.lastSyncMicroseconds = microseconds
            lastSyncNs = finished - started
            statistics.lastSyncUnixMs = wallClockNowMs()
            let late = finished > durableByNs
            if late { statistics.lateFlushes += 1 }
            durableSequence.store(batchSequence, ordering: .releasing)
            var ready: [@Sendable () -> Void] = []
            if !waiters.isEmpty {
                var kept: [(sequence: UInt64, callback: @Sendable () -> Void)] = []
                for waiter in waiters {
                    if waiter.sequence <= batchSequence { ready.append(waiter.callback) } else { kept.append(waiter) }
                }
                waiters = kept
            }
            mutex.unlock()
            if late {
                logger.warning("a write-back flush ended after its window", metadata: [
                    "sync_us": "\(microseconds)", "states": "\(batch.puts.count + batch.deletes.count)",
                ])
            }
            for callback in ready { callback() }
            mutex.lock()
        }
        stopped = true
        mutex.unlock()
        mutex.broadcast()
    }

    private static func byteCount(_ state: State) -> Int {
        switch state {
        case .record(let bytes): bytes.count
        case .register(let record): DurableRecord.headerBytes + (record.value?.count ?? 0) + DurableRecord.trailerBytes
        case .absent: 0
        }
    }

    private static func record(of state: State) -> [UInt8]? {
        switch state {
        case .record(let bytes): bytes
        case .register(let record): record.encoded()
        case .absent: nil
        }
    }
}
