// Proves the delta-batch codec (docs/REPLICATION.md): random batches of registers,
// tombstones and counters round-trip exactly; every damaged byte of an encoded batch is
// refused with a typed error (the checksum covers the header and the raw bytes, computed
// before compression and checked after decompression); and JSON-like values compress.
import MeridianCore
import MeridianWire
import Testing

@Suite struct DeltaBatchTests {
    static let east = ReplicaID(datacenter: 0, node: 0)
    static let west = ReplicaID(datacenter: 1, node: 0)

    static func randomBatch(seed: UInt64, count: Int) -> DeltaBatch {
        var random = SplitMix64(seed: seed)
        let first = UInt64.random(in: 1...1000, using: &random)
        let deltas = (0..<count).map { index -> Delta in
            let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: random.next() >> 1), origin: Self.east)
            let state: Delta.State
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                let value = (0..<Int.random(in: 0..<300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                state = .register(DurableRecord(value: value, valueStamp: stamp, expiryUnixMs: Int64.random(in: 0...1 << 40, using: &random), expiryStamp: stamp, encoding: .byContent))
            case 1:
                state = .register(.tombstone(stamp: stamp))
            default:
                var counter = PNCounter()
                counter.add(Int64.random(in: -50...50, using: &random), origin: Self.east)
                counter.add(Int64.random(in: -50...50, using: &random), origin: Self.west)
                if Bool.random(using: &random) { counter.reset(to: 7, stamp: stamp) }
                state = .counter(counter)
            }
            let previous = Bool.random(using: &random) ? Dot(origin: Self.west, sequence: UInt64.random(in: 1...99, using: &random)) : nil
            return Delta(dot: Dot(origin: Self.east, sequence: first + UInt64(index)), previousDot: previous,
                         key: Array("key:\(index):\(random.next() % 1000)".utf8), state: state)
        }
        return DeltaBatch(origin: Self.east, deltas: deltas)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func roundTrip(seed: UInt64) throws {
        let batch = Self.randomBatch(seed: seed, count: Int(seed) * 7)
        let encoded = batch.encoded()
        let decoded = try DeltaBatch(decoding: encoded.payload)
        #expect(decoded == batch)
        #expect(decoded.firstSequence == batch.firstSequence && decoded.lastSequence == batch.lastSequence)
        // The outbound log cuts batches by these sizes: they must be exact.
        #expect(encoded.rawBytes == batch.deltas.map(DeltaBatch.rawBytes(of:)).reduce(0, +))
    }

    @Test func everyDamagedByteIsRefused() {
        let payload = Self.randomBatch(seed: 42, count: 5).encoded().payload
        for position in 0..<payload.count {
            var damaged = payload
            damaged[position] ^= 0x21
            #expect(throws: WireError.self, "byte \(position) of \(payload.count)") { try DeltaBatch(decoding: damaged) }
        }
        for length in 0..<payload.count {
            #expect(throws: WireError.self) { try DeltaBatch(decoding: Array(payload.prefix(length))) }
        }
    }

    @Test func jsonLikeValuesCompress() throws {
        var random = SplitMix64(seed: 9)
        let deltas = (1...200).map { index -> Delta in
            let json = #"{"session":"\#(random.next() % 100000)","user":{"id":\#(index),"name":"user-\#(index)","locale":"en-US","roles":["reader","writer"]},"cart":[{"sku":"A-\#(index)","qty":1},{"sku":"B-7","qty":2}],"theme":"dark","lastSeen":"2026-11-29T05:00:00Z"}"#
            let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: UInt64(index) << 16), origin: Self.east)
            return Delta(dot: Dot(origin: Self.east, sequence: UInt64(index)), previousDot: nil,
                         key: Array("session:\(index)".utf8),
                         state: .register(DurableRecord(value: Array(json.utf8), valueStamp: stamp, expiryUnixMs: 0, expiryStamp: stamp, encoding: .byContent)))
        }
        let encoded = DeltaBatch(origin: Self.east, deltas: deltas).encoded()
        #expect(encoded.payload.count * 3 < encoded.rawBytes, "\(encoded.rawBytes) raw → \(encoded.payload.count) bytes")
        #expect(try DeltaBatch(decoding: encoded.payload).deltas == deltas)
    }
}

@Suite struct SnapshotChunkTests {
    @Test func roundTripAndCorruptionRefused() throws {
        let origin = ReplicaID(datacenter: 1, node: 0)
        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 77, logical: 2), origin: origin)
        var counter = PNCounter()
        counter.add(5, origin: origin)
        let states = [
            SnapshotState(key: Array("a".utf8), dot: Dot(origin: origin, sequence: 9), state: .register(DurableRecord(
                value: Array("value".utf8), valueStamp: stamp, expiryUnixMs: 123, expiryStamp: stamp, encoding: .raw, counter: counter))),
            SnapshotState(key: Array("gone".utf8), dot: nil, state: .register(.tombstone(stamp: stamp))),
        ]
        let (payload, raw) = SnapshotChunk(states: states).encoded()
        #expect(raw == states.map(SnapshotChunk.rawBytes(of:)).reduce(0, +), "chunks are cut by exact sizes")
        #expect(try SnapshotChunk(decoding: payload).states == states)
        var corrupt = payload
        corrupt[9] ^= 0x40
        #expect(throws: WireError.self) { try SnapshotChunk(decoding: corrupt) }
        let marker = SnapshotMarker(origin: origin, through: 1 << 40)
        #expect(try SnapshotMarker(decoding: marker.encoded()) == marker)
        #expect(throws: WireError.self) { try SnapshotMarker(decoding: marker.encoded() + [0]) }
    }
}

@Suite struct ZstdStreamTests {
    @Test func streamsRoundTripAndDamageIsRefused() throws {
        var random = SplitMix64(seed: 9)
        var plain: [UInt8] = []
        for line in 0..<5_000 { plain += Array("{\"line\":\(line),\"value\":\"\(random.next() % 1000)\"}\n".utf8) }
        let compressor = ZstdCompressor()
        var compressed: [UInt8] = []
        var offset = 0
        while offset < plain.count {
            let end = min(plain.count, offset + Int(random.next() % 5000) + 1)
            compressed += compressor.compress(Array(plain[offset..<end]))
            offset = end
        }
        compressed += compressor.finish()
        #expect(compressed.count * 3 < plain.count)
        func decompress(_ bytes: [UInt8], piece: Int) throws -> [UInt8] {
            let decompressor = ZstdDecompressor()
            var out: [UInt8] = []
            var at = 0
            while at < bytes.count {
                out += try decompressor.decompress(Array(bytes[at..<min(bytes.count, at + piece)]))
                at += piece
            }
            try decompressor.finish()
            return out
        }
        #expect(try decompress(compressed, piece: 1000) == plain)
        #expect(try decompress(compressed, piece: 7) == plain)
        #expect(throws: WireError.self) { try decompress(Array(compressed.dropLast(5)), piece: 1000) }
        var damaged = compressed
        damaged[damaged.count / 2] ^= 0x20
        #expect(throws: WireError.self) { try decompress(damaged, piece: 1000) }
        // Content of exactly one and two output buffers (128 KiB each): a frame that ends as the
        // buffer fills is complete, not truncated. Two frames in a row decompress as one stream.
        for size in [1 << 17, 2 << 17] {
            let exact = [UInt8](repeating: 0x61, count: size)
            let one = ZstdCompressor()
            let frame = one.compress(exact) + one.finish()
            #expect(try decompress(frame, piece: 1 << 16) == exact)
            #expect(try decompress(frame + frame, piece: 3000) == exact + exact)
        }
    }
}
