// Measures the quality of Meridian's sampled LRU against exact LRU, the way the server
// evicts (`Database.evictUntilWithinLimit`): keys spread over 64 shards, each eviction draws
// 5 evictable keys, each from a random shard, and drops the least recently used of them. A
// skewed (Zipf-like) workload runs through both caches of the same capacity, once with many
// keys per shard and once with few; the test asserts the approximation's hit ratio stays within
// 5 points of exact LRU and prints both ratios (recorded in docs/PERFORMANCE.md).
import MeridianCore
import Testing

/// Exact LRU over integer keys: a dictionary plus an intrusive doubly linked list.
struct ExactLRU {
    let capacity: Int
    private var nodes: [Int: (prev: Int?, next: Int?)] = [:]
    private var head: Int?  // most recent
    private var tail: Int?  // least recent

    init(capacity: Int) { self.capacity = capacity }

    /// Accesses a key; returns whether it was cached.
    mutating func access(_ key: Int) -> Bool {
        if nodes[key] != nil {
            unlink(key)
            pushFront(key)
            return true
        }
        pushFront(key)
        if nodes.count > capacity, let victim = tail {
            unlink(victim)
            nodes[victim] = nil
        }
        return false
    }

    private mutating func unlink(_ key: Int) {
        let node = nodes[key]!
        if let prev = node.prev { nodes[prev]!.next = node.next } else { head = node.next }
        if let next = node.next { nodes[next]!.prev = node.prev } else { tail = node.prev }
        nodes[key] = (nil, nil)
    }

    private mutating func pushFront(_ key: Int) {
        nodes[key] = (nil, head)
        if let head { nodes[head]!.prev = key }
        head = key
        if tail == nil { tail = key }
    }
}

@Suite struct LRUApproximationTests {
    static func hitRatios(samples: Int, capacity: Int, seed: UInt64) -> (approximate: Double, exact: Double) {
        let universe = capacity * 5, accesses = capacity * 50
        let shardCount = 64
        var generator = SplitMix64(seed: seed)
        var shards = (0..<shardCount).map { _ in Keyspace(evictableNamespaces: [true]) }
        var exact = ExactLRU(capacity: capacity)
        var cached = 0
        var approximateHits = 0, exactHits = 0
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1, logical: 0), origin: ReplicaID(datacenter: 0, node: 0))
        for tick in 0..<accesses {
            // Skewed popularity: low ids are hot.
            let u = Double.random(in: 0..<1, using: &generator)
            let id = Int(Double(universe) * u * u * u)
            if exact.access(id) { exactHits += 1 }
            let key = Key("k\(id)")
            let shard = id % shardCount
            if let slot = shards[shard].liveSlot(of: key, nowUnixMs: 0) {
                approximateHits += 1
                shards[shard].touch(slot: slot, nowUnixMs: Int64(tick))
                continue
            }
            shards[shard].insert(key, entry: Entry(
                value: [], valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp,
                lastAccessUnixMs: Int64(tick), namespaceIndex: 0))
            cached += 1
            while cached > capacity {
                var best: (shard: Int, slot: Int, access: Int64)?
                var drawn = 0
                while drawn < samples {
                    let shard = Int.random(in: 0..<shardCount, using: &generator)
                    guard let candidate = shards[shard].evictionCandidate(samples: 1, using: &generator) else { continue }
                    drawn += 1
                    if best == nil || candidate.lastAccessUnixMs < best!.access {
                        best = (shard, candidate.slot, candidate.lastAccessUnixMs)
                    }
                }
                shards[best!.shard].evict(slot: best!.slot)
                cached -= 1
            }
        }
        return (Double(approximateHits) / Double(accesses), Double(exactHits) / Double(accesses))
    }

    @Test(arguments: [(5, 4_000), (10, 4_000), (5, 300)])
    func sampledLRUStaysCloseToExactLRU(samples: Int, capacity: Int) {
        do {
            let ratios = Self.hitRatios(samples: samples, capacity: capacity, seed: 11)
            print("LRU quality: samples=\(samples) capacity=\(capacity) approximate_hit_ratio=\(ratios.approximate) exact_hit_ratio=\(ratios.exact)")
            #expect(ratios.approximate > ratios.exact - 0.05)
            #expect(ratios.approximate <= ratios.exact + 0.02, "an approximation should not beat exact LRU by much")
        }
    }
}
