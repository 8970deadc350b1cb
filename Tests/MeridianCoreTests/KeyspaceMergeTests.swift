// The receiving side of replication in the keyspace (docs/REPLICATION.md): `mergeRemote` keeps
// the value and the expiry as two LWW fields, keeps tombstones so older writes cannot come
// back, tells concurrent writes from overwrites, and merges counters so every increment
// counts. The property test applies random histories of writes from three data centers in
// random orders, with duplicates, and requires byte-identical states everywhere.
import MeridianCore
import Testing

@Suite struct KeyspaceMergeTests {
    static let east = ReplicaID(datacenter: 0, node: 0)
    static let west = ReplicaID(datacenter: 1, node: 0)
    static let south = ReplicaID(datacenter: 2, node: 0)

    static func stamp(_ ms: UInt64, _ origin: ReplicaID) -> LWWStamp {
        LWWStamp(timestamp: HLCTimestamp(physicalMs: ms, logical: 0), origin: origin)
    }

    static func record(_ value: String?, at ms: UInt64, _ origin: ReplicaID, expiry: Int64 = 0, expiryAt: UInt64? = nil) -> DurableRecord {
        let stamp = stamp(ms, origin)
        guard let value else { return .tombstone(stamp: stamp) }
        return DurableRecord(
            value: Array(value.utf8), valueStamp: stamp, expiryUnixMs: expiry,
            expiryStamp: expiryAt.map { Self.stamp($0, origin) } ?? stamp, encoding: .byContent)
    }

    static func keyspace() -> Keyspace { Keyspace(evictableNamespaces: [false], loggedNamespaces: [true]) }

    static func value(_ keyspace: Keyspace, _ key: String) -> String? {
        keyspace.slot(ofBytes: Array(key.utf8)).map { String(decoding: keyspace.entry(at: $0).value, as: UTF8.self) }
    }

    @discardableResult
    static func merge(_ keyspace: inout Keyspace, _ key: String, _ record: DurableRecord, dot: Dot? = nil, previous: Dot? = nil) -> Keyspace.RemoteMerge {
        // As the origin ships it: the write's dot on the fields it wrote.
        var record = record
        if let dot {
            record.dot = dot
            record.expiryDot = dot
        }
        return keyspace.mergeRemote(key: Array(key.utf8), record: record, dot: dot, previousDot: previous, namespaceIndex: 0, nowUnixMs: 1_000)
    }

    @Test func newerValueWinsAndOlderIsIgnored() {
        var keyspace = Self.keyspace()
        Self.merge(&keyspace, "k", Self.record("new", at: 20, Self.west))
        #expect(keyspace.takeKeyChanges().count == 1)
        Self.merge(&keyspace, "k", Self.record("old", at: 10, Self.east))
        #expect(Self.value(keyspace, "k") == "new")
        #expect(keyspace.takeKeyChanges().isEmpty, "a losing merge is no change for the disk")
        // Equal physical time: the origin breaks the tie, the same way everywhere.
        Self.merge(&keyspace, "k", Self.record("tie", at: 20, Self.south))
        #expect(Self.value(keyspace, "k") == "tie")
    }

    @Test func expiryIsItsOwnField() {
        var keyspace = Self.keyspace()
        Self.merge(&keyspace, "k", Self.record("v", at: 10, Self.east))
        // EXPIRE elsewhere, later: the value stays, the TTL arrives.
        var expire = Self.record("v", at: 10, Self.east, expiry: 90_000, expiryAt: 30)
        expire.valueStamp = Self.stamp(10, Self.east)
        Self.merge(&keyspace, "k", expire)
        // A concurrent SET stamped between them wins the value but not the expiry.
        Self.merge(&keyspace, "k", Self.record("set", at: 20, Self.west))
        let entry = keyspace.entry(at: keyspace.slot(ofBytes: Array("k".utf8))!)
        #expect(String(decoding: entry.value, as: UTF8.self) == "set")
        #expect(entry.expiryUnixMs == 90_000)
    }

    @Test func tombstonesKeepOlderWritesOut() {
        var keyspace = Self.keyspace()
        Self.merge(&keyspace, "k", Self.record("v", at: 10, Self.east))
        Self.merge(&keyspace, "k", Self.record(nil, at: 20, Self.west), dot: Dot(origin: Self.west, sequence: 1))
        #expect(Self.value(keyspace, "k") == nil)
        #expect(keyspace.tombstones[Array("k".utf8)]?.stamp == Self.stamp(20, Self.west))
        // A write older than the delete, arriving late from a third data center, stays out.
        Self.merge(&keyspace, "k", Self.record("late", at: 15, Self.south))
        #expect(Self.value(keyspace, "k") == nil)
        // A newer one brings the key back and clears the tombstone.
        Self.merge(&keyspace, "k", Self.record("again", at: 30, Self.south))
        #expect(Self.value(keyspace, "k") == "again")
        #expect(keyspace.tombstones.isEmpty)
        // A tombstone that loses does not touch the winner's TTL.
        Self.merge(&keyspace, "k", Self.record(nil, at: 25, Self.west))
        #expect(Self.value(keyspace, "k") == "again")
    }

    @Test func tombstonesGoOnlyWhenCovered() {
        var keyspace = Self.keyspace()
        Self.merge(&keyspace, "a", Self.record(nil, at: 20, Self.west), dot: Dot(origin: Self.west, sequence: 5))
        Self.merge(&keyspace, "b", Self.record(nil, at: 20, Self.west), dot: Dot(origin: Self.west, sequence: 9))
        let everywhere = VersionVector([(Self.west, 7)])
        let dropped = keyspace.dropTombstones { $0.dot.map { everywhere.covers($0) } ?? true }
        #expect(dropped == [Array("a".utf8)])
        #expect(keyspace.tombstones.keys.map { String(decoding: $0, as: UTF8.self) } == ["b"])
        // A dead state keeps the expiry field of a later EXPIRE from elsewhere: it stays until
        // that write is past the horizon too (or a write concurrent with it could arrive here
        // after the state went, and the data centers would disagree on the expiry).
        var expire = Self.record("x", at: 10, Self.south, expiry: 9_000, expiryAt: 30)
        expire.dot = Dot(origin: Self.south, sequence: 1)
        expire.expiryDot = Dot(origin: Self.south, sequence: 4)
        Self.merge(&keyspace, "c", Self.record(nil, at: 20, Self.west), dot: Dot(origin: Self.west, sequence: 2))
        _ = keyspace.mergeRemote(key: Array("c".utf8), record: expire, dot: nil, previousDot: nil, namespaceIndex: 0, nowUnixMs: 1_000)
        let dead = try! #require(keyspace.tombstones[Array("c".utf8)])
        #expect(dead.record.value == nil && dead.record.expiryUnixMs == 9_000)
        #expect(!dead.isCovered(by: VersionVector([(Self.west, 7), (Self.south, 3)])))
        #expect(dead.isCovered(by: VersionVector([(Self.west, 7), (Self.south, 4)])))
    }

    @Test func concurrentWritesAreToldFromOverwrites() {
        var keyspace = Self.keyspace()
        let first = Dot(origin: Self.east, sequence: 1)
        #expect(Self.merge(&keyspace, "k", Self.record("a", at: 10, Self.east), dot: first).relation == .overwrite)
        // West overwrote exactly what this data center holds: no conflict.
        let second = Dot(origin: Self.west, sequence: 1)
        #expect(Self.merge(&keyspace, "k", Self.record("b", at: 20, Self.west), dot: second, previous: first).relation == .overwrite)
        // South wrote over the first state too, unaware of west's: concurrent, and it loses.
        let third = Dot(origin: Self.south, sequence: 1)
        let conflict = Self.merge(&keyspace, "k", Self.record("c", at: 15, Self.south), dot: third, previous: first)
        #expect(conflict.relation == .concurrent)
        #expect(conflict.loserStamp == Self.stamp(15, Self.south) && conflict.winnerStamp == Self.stamp(20, Self.west))
        #expect(conflict.loserValue == Array("c".utf8))
        #expect(Self.value(keyspace, "k") == "b")
        // The same delta again is recognised as a duplicate.
        #expect(Self.merge(&keyspace, "k", Self.record("b", at: 20, Self.west), dot: second, previous: first).relation == .duplicate)
    }

    /// A delete, and a write after a delete, ship the dot of the write they replaced (the
    /// entry is gone, or just came back, by the time the change is drained), so the peer that
    /// holds that write sees an overwrite, not a conflict (found by the audit export's test:
    /// every DEL counted as a conflict).
    @Test func deletesAndRevivalsNameTheWriteTheyReplaced() {
        var origin = Keyspace(evictableNamespaces: [false], loggedNamespaces: [true], replicatedNamespaces: [true])
        var peer = Self.keyspace()
        var sequence: UInt64 = 0
        // Applies one local change at `origin` as the server's drain does, and ships it to `peer`.
        func ship(_ change: (inout Keyspace) -> Void, at ms: UInt64) -> Keyspace.RemoteMerge? {
            change(&origin)
            var last: Keyspace.RemoteMerge?
            for logged in origin.takeKeyChanges() {
                guard let delta = origin.localDelta(key: logged.key, kind: logged.kind, replacedDot: logged.replacedDot,
                                                    deleteStamp: { Self.stamp(ms, Self.east) }) else { continue }
                sequence += 1
                let dot = Dot(origin: Self.east, sequence: sequence)
                let record = origin.recordLocalDot(dot, of: delta, key: logged.key)
                last = peer.mergeRemote(key: logged.key, record: record, dot: dot, previousDot: delta.previousDot, namespaceIndex: 0, nowUnixMs: 1_000)
            }
            return last
        }
        func set(_ value: String, at ms: UInt64) -> (inout Keyspace) -> Void {
            { keyspace in
                let entry = Entry(value: Array(value.utf8), valueStamp: Self.stamp(ms, Self.east), expiryUnixMs: 0,
                                  expiryStamp: Self.stamp(ms, Self.east), lastAccessUnixMs: 0, namespaceIndex: 0)
                if let slot = keyspace.slot(ofBytes: Array("k".utf8)) {
                    keyspace.setValue(at: slot, entry.value, stamp: entry.valueStamp)
                } else {
                    _ = Array("k".utf8).withUnsafeBytes { keyspace.insert(bytes: $0, entry: entry) }
                }
            }
        }
        let delete: (inout Keyspace) -> Void = { keyspace in
            if let slot = keyspace.slot(ofBytes: Array("k".utf8)) { keyspace.remove(slot: slot) }
        }
        #expect(ship(set("a", at: 10), at: 10)?.relation == .overwrite)
        #expect(ship(set("b", at: 20), at: 20)?.relation == .overwrite)
        #expect(ship(delete, at: 30)?.relation == .overwrite)
        #expect(Self.value(peer, "k") == nil)
        #expect(ship(set("c", at: 40), at: 40)?.relation == .overwrite)
        #expect(Self.value(peer, "k") == "c")
    }

    @Test func countersCountEveryIncrementAndShowTheirValue() {
        var counterA = PNCounter()
        counterA.add(3, origin: Self.east)
        var counterB = PNCounter()
        counterB.add(10, origin: Self.west)
        var a = Self.record("3", at: 10, Self.east)
        a.counter = counterA
        a.valueStamp = .zero
        var b = Self.record("10", at: 10, Self.west)
        b.counter = counterB
        b.valueStamp = .zero
        var keyspace = Self.keyspace()
        Self.merge(&keyspace, "c", a)
        Self.merge(&keyspace, "c", b)
        #expect(Self.value(keyspace, "c") == "13")
        // A delete keeps the totals with the tombstone; a late increment is kept there, not shown.
        Self.merge(&keyspace, "c", Self.record(nil, at: 50, Self.east))
        #expect(Self.value(keyspace, "c") == nil)
        counterB.add(1, origin: Self.west)
        b.counter = counterB
        Self.merge(&keyspace, "c", b)
        #expect(Self.value(keyspace, "c") == nil)
        #expect(keyspace.tombstones[Array("c".utf8)]?.counter?.contributions.first { $0.origin == Self.west }?.p == 11)
    }

    @Test func aKeyWrittenAgainAfterADeleteKeepsItsCountersTotals() {
        var keyspace = Keyspace(evictableNamespaces: [false], loggedNamespaces: [true], replicatedNamespaces: [true])
        var counter = PNCounter()
        counter.add(100, origin: Self.east)
        var record = Self.record("100", at: 10, Self.east)
        record.counter = counter
        record.valueStamp = .zero
        Self.merge(&keyspace, "c", record)
        let slot = keyspace.slot(ofBytes: Array("c".utf8))!
        keyspace.remove(slot: slot)
        #expect(keyspace.tombstones[Array("c".utf8)]?.counter?.value == 100)
        #expect(keyspace.tombstoneBytes > 0)
        // SET c 5 here: the dead state's totals come back with the key, so a later INCR
        // resets from 5 with them observed instead of counting them again elsewhere.
        let entry = Entry(value: Array("5".utf8), valueStamp: Self.stamp(50, Self.east), expiryUnixMs: 0, expiryStamp: Self.stamp(50, Self.east), lastAccessUnixMs: 0, namespaceIndex: 0)
        let live = Array("c".utf8).withUnsafeBytes { keyspace.insert(bytes: $0, entry: entry) }
        #expect(keyspace.tombstones.isEmpty && keyspace.tombstoneBytes == 0)
        #expect(keyspace.entry(at: live).counter?.contributions.first?.p == 100)
        #expect(!keyspace.entry(at: live).showsCounter, "the plain write is newer than the counter's reset")
        guard case .value(let sum, _, _) = keyspace.counterIncrement(key: Array("c".utf8), slot: live, amount: 1, origin: Self.east, stamp: Self.stamp(60, Self.east)) else {
            Issue.record("INCR failed")
            return
        }
        #expect(sum == 6)
    }

    /// Random writes (values, deletes, expiries, counter states) from three data centers, each
    /// delivered to three replicas in its own random order with duplicates: every replica ends
    /// with the same keys, values, stamps, expiries, counters and tombstones.
    @Test(arguments: [11, 12, 13, 14, 15, 16, 17, 18] as [UInt64])
    func anyDeliveryOrderConverges(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let origins = [Self.east, Self.west, Self.south]
        var history: [(key: String, record: DurableRecord)] = []
        var counters = [String: PNCounter]()
        for step in 0..<150 {
            let origin = origins[Int.random(in: 0..<3, using: &random)]
            let key = "k\(Int.random(in: 0..<6, using: &random))"
            let ms = UInt64(step) * 50 + UInt64.random(in: 0...40, using: &random)  // one write, one stamp
            var record: DurableRecord
            switch Int.random(in: 0..<5, using: &random) {
            case 0: record = Self.record(nil, at: ms, origin)
            case 1: record = Self.record("v\(step)", at: ms, origin, expiry: 5_000_000 + Int64(step), expiryAt: ms + 1)
            case 2:
                var counter = counters[key] ?? PNCounter()
                counter.add(Int64.random(in: -3...5, using: &random), origin: origin)
                counters[key] = counter
                record = Self.record("0", at: ms, origin)
                record.counter = counter
            default: record = Self.record("v\(step)", at: ms, origin)
            }
            history.append((key, record))
        }
        var replicas = (0..<3).map { _ in Self.keyspace() }
        for index in replicas.indices {
            var order = history + history.filter { _ in Int.random(in: 0..<4, using: &random) == 0 }
            order.shuffle(using: &random)
            for (key, record) in order {
                _ = replicas[index].mergeRemote(key: Array(key.utf8), record: record, dot: nil, previousDot: nil, namespaceIndex: 0, nowUnixMs: 1_000)
            }
        }
        func state(_ keyspace: Keyspace) -> [String] {
            var lines: [String] = []
            keyspace.forEachReplicatedState { key, _, record, _ in
                lines.append("\(String(decoding: key, as: UTF8.self)) \(record)")
            }
            return lines.sorted()
        }
        let first = state(replicas[0])
        #expect(!first.isEmpty)
        for replica in replicas.dropFirst() {
            let other = state(replica)
            let differing = Set(first).symmetricDifference(other).sorted()
            #expect(differing.isEmpty, "seed \(seed): \(differing)")
        }
    }
}

@Suite struct SHA256Tests {
    @Test func knownDigests() {
        #expect(SHA256.hex(SHA256.digest([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(SHA256.digest(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(SHA256.digest(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Fed in pieces of every size, the digest is the same.
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        var hasher = SHA256()
        var offset = 0
        var piece = 1
        while offset < million.count {
            let end = min(million.count, offset + piece)
            hasher.update(Array(million[offset..<end]))
            offset = end
            piece = piece % 97 + 1
        }
        #expect(SHA256.hex(hasher.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// A record encoded after other bytes is the same bytes as on its own (its checksum covers
    /// the record alone): the partition trees hash a key and its record in one buffer.
    @Test func aRecordEncodesTheSameAfterOtherBytes() throws {
        var counter = PNCounter()
        counter.add(5, origin: ReplicaID(datacenter: 1, node: 2))
        var record = DurableRecord(
            value: Array("5".utf8), valueStamp: KeyspaceMergeTests.stamp(7, KeyspaceMergeTests.east), expiryUnixMs: 9,
            expiryStamp: KeyspaceMergeTests.stamp(8, KeyspaceMergeTests.west), encoding: .raw, counter: counter)
        record.dot = Dot(origin: KeyspaceMergeTests.east, sequence: 3)
        var bytes: [UInt8] = [1, 2, 3]
        record.encode(into: &bytes)
        #expect(Array(bytes.dropFirst(3)) == record.encoded())
        #expect(try DurableRecord(decoding: Array(bytes.dropFirst(3))) == record)
    }

    /// The one-shot 128-bit form agrees with the full digest at every length around the block
    /// and padding boundaries (55, 56, 63, 64, 119, 120 …).
    @Test func digest128IsTheDigestsFirstHalf() {
        var random = SplitMix64(seed: 3)
        for count in 0...300 {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            let full = SHA256.digest(bytes)
            let half = bytes.withUnsafeBytes { SHA256.digest128(of: $0) }
            let high = full[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = full[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            #expect(half.high == high && half.low == low, "\(count) bytes")
        }
    }
}

@Suite struct CounterTextTests {
    @Test func decimalParsingFollowsRedis() {
        #expect(PNCounter.parseDecimal(Array("0".utf8)) == 0)
        #expect(PNCounter.parseDecimal(Array("-42".utf8)) == -42)
        #expect(PNCounter.parseDecimal(Array("9223372036854775807".utf8)) == Int64.max)
        #expect(PNCounter.parseDecimal(Array("-9223372036854775808".utf8)) == Int64.min)
        for bad in ["", "-", "01", "-0", "9223372036854775808", "1a", " 1", "+1"] {
            #expect(PNCounter.parseDecimal(Array(bad.utf8)) == nil, "\(bad)")
        }
        #expect(PNCounter.decimalBytes(-7) == Array("-7".utf8))
    }
}
