// Proves the database's node-wide mechanisms that no single keyspace shard can: active expiry
// is fair across shards (one shard full of expired keys cannot starve the others, because
// passes resume where the last one ran out of time and cap the rounds per shard), and FLUSHALL
// clears every shard. Time is a fake monotonic clock, so the runs are deterministic.
import MeridianCore
import NIOCore
import Testing

@testable import MeridianServer

@Suite struct DatabaseTests {
    static func makeDatabase() -> Database {
        Database(
            namespaces: NamespaceTable([.defaultNamespace]),
            origin: ReplicaID(datacenter: 0, node: 0), maxmemoryBytes: 0, eventLoopCount: 1)
    }

    /// Keys that land in shard `index`, as many as asked for.
    static func keys(inShard index: Int, count: Int, of database: Database) -> [ByteBuffer] {
        var found: [ByteBuffer] = []
        var candidate = 0
        while found.count < count {
            let key = ByteBuffer(string: "k\(candidate)")
            if database.shardIndex(of: key) == index { found.append(key) }
            candidate += 1
        }
        return found
    }

    static func insertExpired(_ keys: [ByteBuffer], into database: Database) {
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))
        for key in keys {
            database.withShard(of: key) { keyspace in
                _ = keyspace.insert(Key(borrowing: key), entry: Entry(
                    value: [1], valueStamp: stamp, expiryUnixMs: 5_000, expiryStamp: stamp,
                    lastAccessUnixMs: 0, namespaceIndex: 0))
            }
        }
    }

    @Test func activeExpiryReachesEveryShardWhileOneIsFlooded() {
        let database = Self.makeDatabase()
        let flooded = Self.keys(inShard: 0, count: 20_000, of: database)
        let quiet = Self.keys(inShard: 37, count: 100, of: database)
        Self.insertExpired(flooded, into: database)
        Self.insertExpired(quiet, into: database)
        var generator = SplitMix64(seed: 9)
        var fakeNs: UInt64 = 0
        var passes = 0
        // Every clock reading advances 0.6 ms: a pass gets three or four readings.
        while database.shards[37].keyspace.count > 0 && passes < 200 {
            _ = database.activeExpirePass(nowUnixMs: 10_000, monotonicNs: { fakeNs += 600_000; return fakeNs }, using: &generator)
            passes += 1
        }
        #expect(database.shards[37].keyspace.count == 0, "the quiet shard was reaped")
        #expect(database.shards[0].keyspace.count > 0, "...while the flooded one still had expired keys")
        #expect(passes < 200)
    }

    @Test func flushRemovesEveryShard() {
        let database = Self.makeDatabase()
        Self.insertExpired(Self.keys(inShard: 3, count: 10, of: database) + Self.keys(inShard: 60, count: 10, of: database), into: database)
        #expect(database.keyCount == 20)
        database.removeAll()
        #expect(database.keyCount == 0)
        #expect(database.usedBytes == 0)
    }
}
