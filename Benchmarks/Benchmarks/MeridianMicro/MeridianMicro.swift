// Micro benchmarks of the request path's pure parts: decoding a pipelined batch, keyspace
// lookups and writes, and glob matching. Run from Benchmarks/: `swift package benchmark`.
// They complement the side-by-side comparison with redis-server (redis-side-by-side.sh),
// which measures the whole server.
import Benchmark
import MeridianCore
import MeridianRESP
import NIOCore

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.throughput, .wallClock, .mallocCountTotal], maxDuration: .seconds(2))

    // 16 pipelined `GET key:000000012345` commands, decoded into argument slices.
    let command = "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n"
    let batch = ByteBuffer(string: String(repeating: command, count: 16))
    Benchmark("RESP decode, 16 pipelined GETs") { benchmark in
        var decoder = RESPCommandDecoder()
        var arguments: [ByteBuffer] = []
        arguments.reserveCapacity(4)
        for _ in benchmark.scaledIterations {
            var buffer = batch
            var decoded = 0
            while (try? decoder.decode(&buffer, into: &arguments)) == true {
                decoded += 1
                arguments.removeAll(keepingCapacity: true)
            }
            blackHole(decoded)
        }
    }

    // Lookups in a keyspace shard of 100,000 keys, hits only.
    let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))
    let keyCount = 100_000
    let keys = (0..<keyCount).map { ByteBuffer(string: "key:" + String(repeating: "0", count: 12 - String($0).count) + String($0)) }
    // One keyspace, owned by a box so the write benchmark mutates it in place instead of
    // copying 100k slots on its first write of every run.
    final class ShardBox: @unchecked Sendable { var keyspace = Keyspace(evictableNamespaces: [true]) }
    let shard = ShardBox()
    for key in keys {
        shard.keyspace.insert(Key(borrowing: key), entry: Entry(
            value: Array(repeating: 120, count: 100), valueStamp: stamp, expiryUnixMs: Entry.noExpiry,
            expiryStamp: stamp, lastAccessUnixMs: 0, namespaceIndex: 0))
    }
    Benchmark("Keyspace lookup, 100k keys") { benchmark in
        var generator = SplitMix64(seed: 1)
        for _ in benchmark.scaledIterations {
            let key = keys[Int.random(in: 0..<keyCount, using: &generator)]
            blackHole(shard.keyspace.slot(of: Key(borrowing: key)))
        }
    }

    Benchmark("Keyspace overwrite value, 100k keys") { benchmark in
        var generator = SplitMix64(seed: 2)
        for _ in benchmark.scaledIterations {
            let key = keys[Int.random(in: 0..<keyCount, using: &generator)]
            // A fresh value per write, as SET allocates one.
            let value = [UInt8](repeating: 121, count: 100)
            if let slot = shard.keyspace.slot(of: Key(borrowing: key)) { shard.keyspace.setValue(at: slot, value, stamp: stamp) }
        }
    }

    // A glob with several stars against 200-byte keys that almost match.
    let pattern = try! GlobPattern("a*a*a*a*a*a*a*a*b")
    let subject = [UInt8](repeating: UInt8(ascii: "a"), count: 200)
    Benchmark("Glob match, 9 tokens x 200 bytes") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(pattern.matches(subject))
        }
    }
}
