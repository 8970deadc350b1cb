import CRocksDB

/// The durable store on RocksDB. This file holds every RocksDB call of the project.
///
/// Layout: one column family (RocksDB's default) and a one-byte prefix per kind of key:
/// `r` + user key for records, `m` + name for the store's own metadata, and append-only logs
/// whose keys carry their own prefix byte (`a`: the audit log, docs/AUDIT.md). A column family per
/// namespace was the alternative; it was not taken because a key's namespace is a function
/// of the configuration's prefixes, which may change between restarts: keyed by the user key
/// alone, a record is reclassified at load time by the namespaces then in force.
///
/// Durability: every batch goes through the write-ahead log; a synced batch returns only after
/// the WAL is fsynced (`WriteOptions.sync`). The WAL is never disabled.
public final class RocksDBStore: DurableStore, @unchecked Sendable {
    /// The format marker stored under `m` + "format"; a store with another marker is refused.
    public static let formatMarker = "meridian-records-v1"
    /// Block cache for reads that miss memory (fault-ins and warm-up).
    static let blockCacheBytes = 64 << 20
    /// Read-ahead of log scans (the audit export).
    static let logReadaheadBytes = 2 << 20
    static let writeBufferBytes = 16 << 20
    static let recordPrefix: UInt8 = UInt8(ascii: "r")
    static let metadataPrefix: UInt8 = UInt8(ascii: "m")

    public let path: String
    private let database: OpaquePointer
    private let options: OpaquePointer
    private let tableOptions: OpaquePointer
    private let cache: OpaquePointer
    private let syncedWrite: OpaquePointer
    private let unsyncedWrite: OpaquePointer
    private let readOptions: OpaquePointer

    /// Opens (creating if needed) the store in directory `path`.
    public init(path: String) throws(StorageError) {
        self.path = path
        options = rocksdb_options_create()
        rocksdb_options_set_create_if_missing(options, 1)
        rocksdb_options_increase_parallelism(options, 2)
        // Memtables of 16 MiB (RocksDB's default is 64 MiB, two of them): the audit log appends
        // every change, and a stream of large writes would otherwise hold up to 128 MiB here.
        rocksdb_options_set_write_buffer_size(options, Self.writeBufferBytes)
        // Point reads of absent keys (a miss on an evicted namespace) should not touch disk.
        tableOptions = rocksdb_block_based_options_create()
        rocksdb_block_based_options_set_filter_policy(tableOptions, rocksdb_filterpolicy_create_bloom_full(10))
        cache = rocksdb_cache_create_lru(Self.blockCacheBytes)
        rocksdb_block_based_options_set_block_cache(tableOptions, cache)
        rocksdb_options_set_block_based_table_factory(options, tableOptions)
        syncedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(syncedWrite, 1)
        unsyncedWrite = rocksdb_writeoptions_create()
        readOptions = rocksdb_readoptions_create()

        var error: UnsafeMutablePointer<CChar>?
        let opened = rocksdb_open(options, path, &error)
        if let message = Self.take(error) {
            Self.destroyOptions(options, tableOptions, cache, syncedWrite, unsyncedWrite, readOptions)
            throw .open(path: path, reason: message)
        }
        database = opened!

        // A new store gets the marker; an existing one must carry ours.
        let markerKey = [Self.metadataPrefix] + Array("format".utf8)
        do throws(StorageError) {
            if let found = try rawGet(markerKey) {
                let text = String(decoding: found, as: UTF8.self)
                guard text == Self.formatMarker else { throw .incompatibleFormat(path: path, found: text) }
            } else {
                try rawWrite(puts: [(markerKey, Array(Self.formatMarker.utf8))], sync: true)
            }
        } catch {
            rocksdb_close(database)
            Self.destroyOptions(options, tableOptions, cache, syncedWrite, unsyncedWrite, readOptions)
            throw error
        }
    }

    public func read(key: [UInt8]) throws(StorageError) -> [UInt8]? {
        try rawGet(Self.recordKey(key))
    }

    public func apply(_ batch: StoreBatch, sync: Bool) throws(StorageError) {
        let writeBatch = rocksdb_writebatch_create()
        defer { rocksdb_writebatch_destroy(writeBatch) }
        if batch.clearAll {
            // Every record key starts with `r`; `s` is the first key past them.
            let begin: [UInt8] = [Self.recordPrefix]
            let end: [UInt8] = [Self.recordPrefix + 1]
            begin.withUnsafeBufferPointer { b in
                end.withUnsafeBufferPointer { e in
                    b.withMemoryRebound(to: CChar.self) { b in
                        e.withMemoryRebound(to: CChar.self) { e in
                            rocksdb_writebatch_delete_range(writeBatch, b.baseAddress, 1, e.baseAddress, 1)
                        }
                    }
                }
            }
        }
        // The stored key is the prefix byte followed by the user key, passed as two parts so
        // that no combined copy is made.
        withUnsafePointer(to: Self.recordPrefix) { prefix in
            let prefixPointer = UnsafeRawPointer(prefix).assumingMemoryBound(to: CChar.self)
            for put in batch.puts {
                put.key.withUnsafeBytes { k in
                    put.record.withUnsafeBytes { v in
                        let keyParts: [UnsafePointer<CChar>?] = [prefixPointer, k.baseAddress?.assumingMemoryBound(to: CChar.self)]
                        let keySizes: [Int] = [1, k.count]
                        var valuePointer: UnsafePointer<CChar>? = v.baseAddress?.assumingMemoryBound(to: CChar.self)
                        var valueSize = v.count
                        rocksdb_writebatch_putv(writeBatch, 2, keyParts, keySizes, 1, &valuePointer, &valueSize)
                    }
                }
            }
            for deleted in batch.deletes {
                deleted.withUnsafeBytes { k in
                    let keyParts: [UnsafePointer<CChar>?] = [prefixPointer, k.baseAddress?.assumingMemoryBound(to: CChar.self)]
                    let keySizes: [Int] = [1, k.count]
                    rocksdb_writebatch_deletev(writeBatch, 2, keyParts, keySizes)
                }
            }
        }
        for put in batch.logPuts {
            precondition(put.key.first.map { $0 != Self.recordPrefix && $0 != Self.metadataPrefix } ?? false, "a log key has its own prefix")
            put.key.withUnsafeBytes { k in
                put.value.withUnsafeBytes { v in
                    rocksdb_writebatch_put(writeBatch, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count,
                                           v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
                }
            }
        }
        for range in batch.logDeletes {
            // A range of one key (`StorageEngine.deleteLog`) is a point delete.
            if range.end.count == range.start.count + 1, range.end.last == 0, range.end.starts(with: range.start) {
                range.start.withUnsafeBytes { k in
                    rocksdb_writebatch_delete(writeBatch, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count)
                }
                continue
            }
            range.start.withUnsafeBytes { b in
                range.end.withUnsafeBytes { e in
                    rocksdb_writebatch_delete_range(writeBatch, b.baseAddress?.assumingMemoryBound(to: CChar.self), b.count,
                                                    e.baseAddress?.assumingMemoryBound(to: CChar.self), e.count)
                }
            }
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(database, sync ? syncedWrite : unsyncedWrite, writeBatch, &error)
        if let message = Self.take(error) { throw .write(reason: message) }
    }

    public func scanLog(from start: [UInt8], to end: [UInt8], limit: Int) throws(StorageError) -> [(key: [UInt8], value: [UInt8])] {
        // A log scan reads once what nothing reads again: it must not push the records that
        // misses read out of the block cache; and it reads sequentially, so read ahead.
        let scanOptions = rocksdb_readoptions_create()!
        defer { rocksdb_readoptions_destroy(scanOptions) }
        rocksdb_readoptions_set_fill_cache(scanOptions, 0)
        rocksdb_readoptions_set_readahead_size(scanOptions, Self.logReadaheadBytes)
        let iterator = rocksdb_create_iterator(database, scanOptions)!
        defer { rocksdb_iter_destroy(iterator) }
        start.withUnsafeBytes { rocksdb_iter_seek(iterator, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        var results: [(key: [UInt8], value: [UInt8])] = []
        while rocksdb_iter_valid(iterator) != 0 && results.count < limit {
            var keyLength = 0
            let keyPointer = rocksdb_iter_key(iterator, &keyLength)!
            let key = Array(UnsafeRawBufferPointer(start: keyPointer, count: keyLength))
            guard key.lexicographicallyPrecedes(end) else { break }
            var valueLength = 0
            let valuePointer = rocksdb_iter_value(iterator, &valueLength)
            results.append((key, valueLength == 0 ? [] : Array(UnsafeRawBufferPointer(start: valuePointer, count: valueLength))))
            rocksdb_iter_next(iterator)
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        if let message = Self.take(error) { throw .read(reason: message) }
        return results
    }

    public func lastLogKey(from start: [UInt8], to end: [UInt8]) throws(StorageError) -> [UInt8]? {
        let iterator = rocksdb_create_iterator(database, readOptions)!
        defer { rocksdb_iter_destroy(iterator) }
        // The last key at or before `end`, then one back if it is `end` itself (exclusive).
        end.withUnsafeBytes { rocksdb_iter_seek_for_prev(iterator, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        var found: [UInt8]?
        while rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0
            let keyPointer = rocksdb_iter_key(iterator, &keyLength)!
            let key = Array(UnsafeRawBufferPointer(start: keyPointer, count: keyLength))
            if key.lexicographicallyPrecedes(end) {
                if !key.lexicographicallyPrecedes(start) { found = key }
                break
            }
            rocksdb_iter_prev(iterator)
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        if let message = Self.take(error) { throw .read(reason: message) }
        return found
    }

    public func scan(after key: [UInt8]?, limit: Int) throws(StorageError) -> [(key: [UInt8], record: [UInt8])] {
        let iterator = rocksdb_create_iterator(database, readOptions)!
        defer { rocksdb_iter_destroy(iterator) }
        let start = key.map(Self.recordKey) ?? [Self.recordPrefix]
        start.withUnsafeBytes { rocksdb_iter_seek(iterator, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        var results: [(key: [UInt8], record: [UInt8])] = []
        while rocksdb_iter_valid(iterator) != 0 && results.count < limit {
            var keyLength = 0
            let keyPointer = rocksdb_iter_key(iterator, &keyLength)!
            let storedKey = UnsafeRawBufferPointer(start: keyPointer, count: keyLength)
            guard keyLength > 0, storedKey[0] == Self.recordPrefix else { break }
            let userKey = Array(storedKey.dropFirst())
            if let key, userKey == key {
                rocksdb_iter_next(iterator)
                continue
            }
            var valueLength = 0
            let valuePointer = rocksdb_iter_value(iterator, &valueLength)
            let value = valueLength == 0 ? [] : Array(UnsafeRawBufferPointer(start: valuePointer, count: valueLength))
            results.append((userKey, value))
            rocksdb_iter_next(iterator)
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        if let message = Self.take(error) { throw .read(reason: message) }
        return results
    }

    public var estimatedRecordCount: Int {
        guard let text = rocksdb_property_value(database, "rocksdb.estimate-num-keys") else { return 0 }
        defer { rocksdb_free(text) }
        // The marker is one of the keys.
        return max(0, (Int(String(cString: text)) ?? 0) - 1)
    }

    public func close() {
        // Writing the memtable out now spares the next start replaying the WAL into it
        // (about 1.3 s per million 100-byte records here). A failure only costs that replay.
        let flushOptions = rocksdb_flushoptions_create()
        rocksdb_flushoptions_set_wait(flushOptions, 1)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush(database, flushOptions, &error)
        _ = Self.take(error)
        rocksdb_flushoptions_destroy(flushOptions)
        rocksdb_close(database)
        Self.destroyOptions(options, tableOptions, cache, syncedWrite, unsyncedWrite, readOptions)
    }

    /// The engine's name for INFO (RocksDB's C API has no version call).
    public static let engineName = "rocksdb"

    // MARK: Private

    private static func recordKey(_ key: [UInt8]) -> [UInt8] {
        var stored = [UInt8]()
        stored.reserveCapacity(key.count + 1)
        stored.append(recordPrefix)
        stored.append(contentsOf: key)
        return stored
    }

    private func rawGet(_ key: [UInt8]) throws(StorageError) -> [UInt8]? {
        var error: UnsafeMutablePointer<CChar>?
        var length = 0
        let value = key.withUnsafeBytes {
            rocksdb_get(database, readOptions, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count, &length, &error)
        }
        if let message = Self.take(error) { throw .read(reason: message) }
        guard let value else { return nil }
        defer { rocksdb_free(value) }
        return Array(UnsafeRawBufferPointer(start: value, count: length))
    }

    private func rawWrite(puts: [([UInt8], [UInt8])], sync: Bool) throws(StorageError) {
        let writeBatch = rocksdb_writebatch_create()
        defer { rocksdb_writebatch_destroy(writeBatch) }
        for (key, value) in puts {
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    rocksdb_writebatch_put(
                        writeBatch, k.baseAddress!.assumingMemoryBound(to: CChar.self), k.count,
                        v.baseAddress!.assumingMemoryBound(to: CChar.self), v.count)
                }
            }
        }
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(database, sync ? syncedWrite : unsyncedWrite, writeBatch, &error)
        if let message = Self.take(error) { throw .write(reason: message) }
    }

    /// Converts and frees a RocksDB error string.
    private static func take(_ error: UnsafeMutablePointer<CChar>?) -> String? {
        guard let error else { return nil }
        defer { rocksdb_free(error) }
        return String(cString: error)
    }

    private static func destroyOptions(
        _ options: OpaquePointer, _ table: OpaquePointer, _ cache: OpaquePointer,
        _ synced: OpaquePointer, _ unsynced: OpaquePointer, _ read: OpaquePointer
    ) {
        rocksdb_readoptions_destroy(read)
        rocksdb_writeoptions_destroy(unsynced)
        rocksdb_writeoptions_destroy(synced)
        rocksdb_options_destroy(options)
        rocksdb_block_based_options_destroy(table)
        rocksdb_cache_destroy(cache)
    }
}
