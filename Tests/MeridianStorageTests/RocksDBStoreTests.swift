// Proves the RocksDB backend keeps what it was given across a close and reopen: puts,
// deletes, a clear in the same batch as later puts, scans in key order from any point, and
// that a store written by something else is refused with a clear error.
import MeridianStorage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under /tmp, removed by `remove()`.
struct ScratchDirectory {
    let path: String

    init() {
        var template = Array("/tmp/meridian-storage-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template)
    }

    func remove() {
        _ = system("rm -rf '\(path)'")
    }
}

@Suite struct RocksDBStoreTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func roundTripAcrossReopen() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        do {
            let store = try RocksDBStore(path: directory.path)
            try store.apply(StoreBatch(puts: [(Self.bytes("a"), Self.bytes("1")), (Self.bytes("b"), Self.bytes("2")), (Self.bytes("c"), [])]), sync: true)
            try store.apply(StoreBatch(deletes: [Self.bytes("b")]), sync: true)
            store.close()
        }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        #expect(try store.read(key: Self.bytes("a")) == Self.bytes("1"))
        #expect(try store.read(key: Self.bytes("b")) == nil)
        #expect(try store.read(key: Self.bytes("c")) == [])
        #expect(try store.read(key: Self.bytes("zzz")) == nil)
    }

    @Test func scanIsOrderedAndResumable() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        let keys = (0..<100).map { number -> [UInt8] in
            let digits = String(number)
            return Self.bytes("k" + String(repeating: "0", count: 3 - digits.count) + digits)
        } + [[0x00], [0xFF, 0xFF]]
        try store.apply(StoreBatch(puts: keys.map { ($0, $0) }), sync: false)
        var seen: [[UInt8]] = []
        var cursor: [UInt8]?
        while true {
            let chunk = try store.scan(after: cursor, limit: 7)
            if chunk.isEmpty { break }
            for (key, record) in chunk { #expect(key == record) }
            seen += chunk.map(\.key)
            cursor = chunk.last!.key
        }
        #expect(seen == keys.sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test func logsAreAppendedTrimmedByRangeAndSurviveAClear() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        let keys = (0..<10).map { [UInt8(ascii: "a"), 0, UInt8($0)] }
        var batch = StoreBatch(puts: [(Self.bytes("record"), Self.bytes("r"))])
        batch.logPuts = keys.map { ($0, [UInt8($0[2])]) }
        try store.apply(batch, sync: true)
        #expect(try store.scanLog(from: [UInt8(ascii: "a")], to: [UInt8(ascii: "b")], limit: 100).map(\.key) == keys)
        #expect(try store.scanLog(from: keys[3], to: keys[6], limit: 100).map(\.value) == [[3], [4], [5]])
        // Records and logs do not see each other.
        #expect(try store.scan(after: nil, limit: 10).map(\.key) == [Self.bytes("record")])
        var trim = StoreBatch(clearAll: true)
        trim.logDeletes = [([UInt8(ascii: "a")], keys[4])]
        try store.apply(trim, sync: true)
        #expect(try store.scanLog(from: [UInt8(ascii: "a")], to: [UInt8(ascii: "b")], limit: 100).map(\.key) == Array(keys[4...]))
        #expect(try store.scan(after: nil, limit: 10).isEmpty, "the clear removed the record, not the log")
    }

    /// `StorageEngine.deleteLog`'s one-key range is written as a point delete: exactly that
    /// entry goes, its neighbours (a longer key starting with it included) stay.
    @Test func aOneKeyRangeRemovesThatEntryAlone() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        let keys: [[UInt8]] = [[UInt8(ascii: "h"), 1], [UInt8(ascii: "h"), 2], [UInt8(ascii: "h"), 2, 0], [UInt8(ascii: "h"), 2, 1], [UInt8(ascii: "h"), 3]]
        var batch = StoreBatch()
        batch.logPuts = keys.map { ($0, [1]) }
        try store.apply(batch, sync: true)
        var delete = StoreBatch()
        delete.logDeletes = [(keys[1], keys[1] + [0])]
        try store.apply(delete, sync: true)
        #expect(try store.scanLog(from: [UInt8(ascii: "h")], to: [UInt8(ascii: "i")], limit: 10).map(\.key) == [keys[0], keys[2], keys[3], keys[4]])
    }

    @Test func clearAllRemovesEarlierRecordsOnly() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        try store.apply(StoreBatch(puts: [(Self.bytes("old"), Self.bytes("x"))]), sync: true)
        try store.apply(StoreBatch(clearAll: true, puts: [(Self.bytes("new"), Self.bytes("y"))]), sync: true)
        #expect(try store.read(key: Self.bytes("old")) == nil)
        #expect(try store.read(key: Self.bytes("new")) == Self.bytes("y"))
        #expect(try store.scan(after: nil, limit: 10).map(\.key) == [Self.bytes("new")])
    }

    @Test func aStoreInUseIsRefusedClearly() throws {
        let directory = ScratchDirectory()
        defer { directory.remove() }
        let store = try RocksDBStore(path: directory.path)
        defer { store.close() }
        #expect {
            _ = try RocksDBStore(path: directory.path)
        } throws: { error in
            "\(error)".contains(directory.path)
        }
    }

    @Test func anUnwritableDirectoryIsAnOpenError() {
        #expect(throws: StorageError.self) { _ = try RocksDBStore(path: "/proc/meridian-cannot-exist/store") }
    }
}
