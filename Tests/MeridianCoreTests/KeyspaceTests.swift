// Proves the keyspace shard's bookkeeping: accounted bytes follow every insert, change and
// removal; lazy expiry never returns an expired key; active expiry sampling removes expired
// keys only; eviction candidates come only from evictable namespaces; slots are reused and
// never move while their key lives (what SCAN relies on). Randomised sequences are checked
// against a plain dictionary model.
import MeridianCore
import NIOCore
import Testing

@Suite struct KeyspaceTests {
    static let origin = ReplicaID(datacenter: 0, node: 0)
    static func stamp(_ ms: UInt64) -> LWWStamp { LWWStamp(timestamp: HLCTimestamp(physicalMs: ms, logical: 0), origin: origin) }

    static func entry(_ value: String, expiry: Int64 = Entry.noExpiry, namespace: Int = 0, access: Int64 = 0) -> Entry {
        Entry(value: Array(value.utf8), valueStamp: stamp(1), expiryUnixMs: expiry, expiryStamp: stamp(1), lastAccessUnixMs: access, namespaceIndex: namespace)
    }

    @Test func insertFindRemoveAndAccounting() {
        var keyspace = Keyspace(evictableNamespaces: [true])
        let slot = keyspace.insert(Key("alpha"), entry: Self.entry("12345"))
        #expect(keyspace.count == 1)
        #expect(keyspace.usedBytes == Keyspace.accountedBytes(keyCount: 5, valueCount: 5))
        #expect(keyspace.slot(of: Key("alpha")) == slot)
        keyspace.setValue(at: slot, Array("1234567890".utf8), stamp: Self.stamp(2))
        #expect(keyspace.usedBytes == Keyspace.accountedBytes(keyCount: 5, valueCount: 10))
        #expect(keyspace.namespaceCounters[0].bytes == keyspace.usedBytes)
        keyspace.remove(slot: slot)
        #expect(keyspace.count == 0)
        #expect(keyspace.usedBytes == 0)
        #expect(keyspace.namespaceCounters[0] == NamespaceCounters())
    }

    @Test func lazyExpiryHidesAndReapsExpiredKeys() {
        var keyspace = Keyspace(evictableNamespaces: [true])
        keyspace.insert(Key("k"), entry: Self.entry("v", expiry: 1_000))
        #expect(keyspace.liveSlot(of: Key("k"), nowUnixMs: 999) != nil)
        #expect(keyspace.liveSlot(of: Key("k"), nowUnixMs: 1_000) == nil, "a key expires at its expiry instant")
        #expect(keyspace.count == 0)
        #expect(keyspace.namespaceCounters[0].expiredKeys == 1)
        #expect(keyspace.usedBytes == 0)
    }

    @Test func activeExpiryRemovesOnlyExpiredKeys() {
        var keyspace = Keyspace(evictableNamespaces: [true])
        for index in 0..<500 {
            keyspace.insert(Key("t\(index)"), entry: Self.entry("v", expiry: index < 300 ? 100 : 10_000))
        }
        for index in 0..<200 { keyspace.insert(Key("p\(index)"), entry: Self.entry("v")) }
        var generator = SplitMix64(seed: 7)
        var rounds = 0
        while keyspace.expiringCount > 200 && rounds < 1_000 {
            _ = keyspace.expireSample(nowUnixMs: 5_000, samples: 20, using: &generator)
            rounds += 1
        }
        #expect(keyspace.count == 400)
        #expect(keyspace.expiringCount == 200)
        #expect(keyspace.namespaceCounters[0].expiredKeys == 300)
        for index in 300..<500 { #expect(keyspace.slot(of: Key("t\(index)")) != nil) }
    }

    @Test func evictionCandidatesComeOnlyFromEvictableNamespaces() {
        var keyspace = Keyspace(evictableNamespaces: [true, false])
        for index in 0..<50 { keyspace.insert(Key("pinned\(index)"), entry: Self.entry("v", namespace: 1, access: 0)) }
        #expect(keyspace.evictionCandidate(samples: 5, using: &SplitMixBox.shared) == nil)
        keyspace.insert(Key("cache"), entry: Self.entry("v", namespace: 0, access: 10))
        let candidate = keyspace.evictionCandidate(samples: 5, using: &SplitMixBox.shared)
        #expect(candidate.map { keyspace.key(at: $0.slot) } == Array("cache".utf8))
        keyspace.evict(slot: candidate!.slot)
        #expect(keyspace.namespaceCounters[0].evictedKeys == 1)
        #expect(keyspace.evictableCount == 0)
    }

    @Test func slotsDoNotMoveWhileTheirKeyLives() {
        var keyspace = Keyspace(evictableNamespaces: [true])
        var slots: [String: Int] = [:]
        for index in 0..<100 { slots["k\(index)"] = keyspace.insert(Key("k\(index)"), entry: Self.entry("v")) }
        for index in stride(from: 0, to: 100, by: 3) { keyspace.remove(slot: slots.removeValue(forKey: "k\(index)")!) }
        for index in 100..<130 { slots["k\(index)"] = keyspace.insert(Key("k\(index)"), entry: Self.entry("v")) }
        for (name, slot) in slots {
            #expect(keyspace.slot(of: Key(name)) == slot)
            #expect(keyspace.key(at: slot) == Array(name.utf8))
        }
        // 34 keys were removed; the 30 new keys filled 30 of the holes instead of growing it.
        #expect(keyspace.slotCapacity == 100, "freed slots are reused before the array grows")
    }

    @Test func keysOfEveryLengthRoundTrip() {
        // Short keys live inline in the slot, long ones out of line: both must behave alike.
        var keyspace = Keyspace(evictableNamespaces: [true])
        var slots: [Int: Int] = [:]
        for length in 1...Limits.keyBytesMax {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ length) }
            slots[length] = keyspace.insert(Key(bytes), entry: Self.entry("v"))
        }
        for length in 1...Limits.keyBytesMax {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ length) }
            #expect(keyspace.slot(of: Key(bytes)) == slots[length])
            #expect(keyspace.key(at: slots[length]!) == bytes)
            var altered = bytes
            altered[length - 1] &+= 1
            #expect(keyspace.slot(of: Key(altered)) != slots[length], "a key differing in its last byte is another key")
        }
    }

    @Test func emptiedShardReleasesItsSlotsAndSparseShardsStillSample() {
        var keyspace = Keyspace(evictableNamespaces: [true])
        var slots: [Int] = []
        for index in 0..<1_000 { slots.append(keyspace.insert(Key("k\(index)"), entry: Self.entry("v"))) }
        for slot in slots.dropLast() { keyspace.remove(slot: slot) }
        var generator = SplitMix64(seed: 3)
        #expect(keyspace.randomSlot(using: &generator) == slots.last, "the one live key of a sparse shard is found")
        keyspace.remove(slot: slots.last!)
        #expect(keyspace.slotCapacity == 0)
        #expect(keyspace.randomSlot(using: &generator) == nil)
    }

    @Test func randomOperationsMatchAModel() {
        var generator = SplitMix64(seed: 99)
        var keyspace = Keyspace(evictableNamespaces: [true, false])
        var model: [String: (value: String, expiry: Int64, namespace: Int)] = [:]
        var now: Int64 = 1_000
        for _ in 0..<20_000 {
            now += Int64.random(in: 0...3, using: &generator)
            let name = "key\(Int.random(in: 0..<300, using: &generator))"
            let key = Key(name)
            // Expired entries are gone for the model too.
            if let modelled = model[name], modelled.expiry != Entry.noExpiry, modelled.expiry <= now { model[name] = nil }
            switch Int.random(in: 0..<6, using: &generator) {
            case 0, 1:
                let value = String(repeating: "x", count: Int.random(in: 0...40, using: &generator))
                let expiry: Int64 = Bool.random(using: &generator) ? now + Int64.random(in: 1...50, using: &generator) : Entry.noExpiry
                let namespace = Int.random(in: 0...1, using: &generator)
                if let slot = keyspace.liveSlot(of: key, nowUnixMs: now) {
                    keyspace.remove(slot: slot)
                }
                keyspace.insert(key, entry: Self.entry(value, expiry: expiry, namespace: namespace))
                model[name] = (value, expiry, namespace)
            case 2:
                if let slot = keyspace.liveSlot(of: key, nowUnixMs: now) {
                    keyspace.remove(slot: slot)
                    model[name] = nil
                }
            case 3:
                _ = keyspace.expireSample(nowUnixMs: now, samples: 10, using: &generator)
            case 4:
                if let slot = keyspace.liveSlot(of: key, nowUnixMs: now) {
                    let expiry: Int64 = Bool.random(using: &generator) ? now + 20 : Entry.noExpiry
                    keyspace.setExpiry(at: slot, unixMs: expiry, stamp: Self.stamp(UInt64(now)))
                    model[name]!.expiry = expiry
                }
            default:
                let slot = keyspace.liveSlot(of: key, nowUnixMs: now)
                #expect((slot != nil) == (model[name] != nil), "presence of \(name)")
                if let slot { #expect(keyspace.entry(at: slot).value == Array(model[name]!.value.utf8)) }
            }
        }
        // Reap everything expired, then compare totals.
        for index in 0..<300 { _ = keyspace.liveSlot(of: Key("key\(index)"), nowUnixMs: now) }
        model = model.filter { $0.value.expiry == Entry.noExpiry || $0.value.expiry > now }
        #expect(keyspace.count == model.count)
        let expectedBytes = model.reduce(0) { $0 + Keyspace.accountedBytes(keyCount: $1.key.utf8.count, valueCount: $1.value.value.utf8.count) }
        #expect(keyspace.usedBytes == expectedBytes)
        #expect(keyspace.namespaceCounters.reduce(0) { $0 + $1.bytes } == expectedBytes)
        #expect(keyspace.evictableCount == model.values.filter { $0.namespace == 0 }.count)
        #expect(keyspace.expiringCount == model.values.filter { $0.expiry != Entry.noExpiry }.count)
    }
}

/// A shared generator for tests that only need some randomness.
enum SplitMixBox {
    nonisolated(unsafe) static var shared = SplitMix64(seed: 12345)
}
