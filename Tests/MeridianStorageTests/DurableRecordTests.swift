// Proves that a stored record round-trips every field of the LWW register (values,
// tombstones, both stamps, the expiry) and that every kind of damage decodes to a typed
// error rather than to a wrong value or a crash: truncation at every length, a flipped bit
// at every position, and fields that no writer produces.
import MeridianCore
import Testing

@Suite struct DurableRecordTests {
    static let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: 0x0123_4567_89AB_CDEF), origin: ReplicaID(datacenter: 3, node: 7))
    static let expiryStamp = LWWStamp(timestamp: HLCTimestamp(rawValue: 42), origin: ReplicaID(datacenter: 65535, node: 1))

    @Test func valueRoundTrips() throws {
        for value in [[], Array("v".utf8), [UInt8](repeating: 0xFF, count: 1000), Array(0...255).map(UInt8.init)] {
            let record = DurableRecord(value: value, valueStamp: Self.stamp, expiryUnixMs: 1_700_000_000_123, expiryStamp: Self.expiryStamp, encoding: .raw)
            let decoded = try DurableRecord(decoding: record.encoded())
            #expect(decoded == record)
            #expect(!decoded.isTombstone)
        }
    }

    @Test func tombstoneRoundTrips() throws {
        let record = DurableRecord.tombstone(stamp: Self.stamp)
        let decoded = try DurableRecord(decoding: record.encoded())
        #expect(decoded.isTombstone)
        #expect(decoded.valueStamp == Self.stamp)
        #expect(decoded.entry(namespaceIndex: 0, lastAccessUnixMs: 0) == nil)
    }

    @Test func counterStateRoundTripsAndDamageIsRefused() throws {
        var counter = PNCounter()
        counter.add(7, origin: ReplicaID(datacenter: 0, node: 0))
        counter.add(-2, origin: ReplicaID(datacenter: 1, node: 0))
        counter.reset(to: 40, stamp: Self.stamp)
        counter.add(1, origin: ReplicaID(datacenter: 2, node: 3))
        for record in [
            DurableRecord(value: Array("41".utf8), valueStamp: Self.stamp, expiryUnixMs: 5, expiryStamp: Self.expiryStamp, encoding: .byContent, counter: counter),
            DurableRecord.tombstone(stamp: Self.stamp, counter: counter),
            DurableRecord(
                value: Array("v".utf8), valueStamp: Self.stamp, expiryUnixMs: 0, expiryStamp: Self.stamp, encoding: .raw,
                dot: Dot(origin: ReplicaID(datacenter: 1, node: 2), sequence: 1 << 40),
                expiryDot: Dot(origin: ReplicaID(datacenter: 3, node: 0), sequence: 7)),
        ] {
            let bytes = record.encoded()
            #expect(try DurableRecord(decoding: bytes) == record)
            for length in 0..<bytes.count {
                #expect(throws: DurableRecordError.self) { try DurableRecord(decoding: Array(bytes.prefix(length))) }
            }
            for position in 0..<bytes.count {
                var damaged = bytes
                damaged[position] ^= 0x10
                #expect(throws: DurableRecordError.self) { try DurableRecord(decoding: damaged) }
            }
        }
    }

    @Test func emptyValueIsNotATombstone() throws {
        let record = DurableRecord(value: [], valueStamp: Self.stamp, expiryUnixMs: 0, expiryStamp: .zero, encoding: .byContent)
        #expect(try DurableRecord(decoding: record.encoded()).value == [])
    }

    @Test func entryRoundTrip() throws {
        var entry = Entry(value: Array("hello".utf8), valueStamp: Self.stamp, expiryUnixMs: 99, expiryStamp: Self.expiryStamp, lastAccessUnixMs: 5, namespaceIndex: 2)
        entry.encoding = .notInteger
        let back = try DurableRecord(decoding: DurableRecord(entry).encoded()).entry(namespaceIndex: 2, lastAccessUnixMs: 5)!
        #expect(back.value == entry.value && back.valueStamp == entry.valueStamp && back.expiryUnixMs == 99)
        #expect(back.expiryStamp == entry.expiryStamp && back.encoding == .notInteger && back.namespaceIndex == 2)
    }

    @Test func expiryIsHonoured() {
        let record = DurableRecord(value: [1], valueStamp: Self.stamp, expiryUnixMs: 1000, expiryStamp: Self.stamp, encoding: .byContent)
        #expect(!record.isExpired(atUnixMs: 999))
        #expect(record.isExpired(atUnixMs: 1000))
        let persistent = DurableRecord(value: [1], valueStamp: Self.stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: .zero, encoding: .byContent)
        #expect(!persistent.isExpired(atUnixMs: .max))
    }

    @Test func everyTruncationIsAnError() {
        let bytes = DurableRecord(value: Array("some value".utf8), valueStamp: Self.stamp, expiryUnixMs: 0, expiryStamp: .zero, encoding: .byContent).encoded()
        for length in 0..<bytes.count {
            #expect(throws: DurableRecordError.self) { try DurableRecord(decoding: Array(bytes.prefix(length))) }
        }
    }

    @Test func everyFlippedBitIsAnError() {
        let bytes = DurableRecord(value: Array("value".utf8), valueStamp: Self.stamp, expiryUnixMs: 7, expiryStamp: Self.stamp, encoding: .byContent).encoded()
        for position in 0..<bytes.count {
            for bit in 0..<8 {
                var damaged = bytes
                damaged[position] ^= UInt8(1 << bit)
                #expect(throws: DurableRecordError.self) { try DurableRecord(decoding: damaged) }
            }
        }
    }

    @Test func specificErrorsNameTheProblem() {
        let good = DurableRecord(value: [1, 2], valueStamp: Self.stamp, expiryUnixMs: 0, expiryStamp: .zero, encoding: .byContent).encoded()
        #expect(throws: DurableRecordError.truncated(byteCount: 3)) { try DurableRecord(decoding: [1, 0, 0]) }
        var version = good
        version[0] = 9
        #expect(throws: DurableRecordError.unknownVersion(9)) { try DurableRecord(decoding: version) }
        // A record rebuilt with a valid checksum but a lying length.
        var lying = Array(good.prefix(good.count - 4))
        lying[36] = 200
        let crc = CRC32C.checksum(lying)
        lying += [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
        #expect(throws: DurableRecordError.lengthMismatch(declared: 200, byteCount: good.count)) { try DurableRecord(decoding: lying) }
        #expect(DurableRecordError.checksumMismatch(stored: 1, computed: 2).description.contains("checksum"))
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}
