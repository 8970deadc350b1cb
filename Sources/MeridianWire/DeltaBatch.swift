import MeridianCore

/// Consecutive deltas of one origin, as a `BATCH` frame's payload (docs/REPLICATION.md).
///
/// Payload layout (little-endian): origin (2 + 2 bytes), first sequence (8), delta count (4),
/// raw length (4), CRC-32C (4) of the 20 header bytes before it followed by the raw bytes,
/// then the raw bytes compressed with zstd. The checksum is computed before compression and
/// checked after decompression, so a fault in either codec is caught, not only a fault on the
/// wire; it covers the header too, so a batch cannot be misattributed to another origin.
///
/// Raw delta layout: key length (2), key, previous dot flag (1) [+ origin (4) + sequence (8)],
/// state kind (1: register, 2: counter), state length (4), state bytes (a `DurableRecord`, or
/// the counter encoding of `encodeCounter`).
public struct DeltaBatch: Equatable, Sendable {
    public var origin: ReplicaID
    public var deltas: [Delta]

    /// Most raw bytes in one batch: batches are cut at `batch_bytes_max` (≤ 1 MiB), but one
    /// delta whose value is near the 1 MiB value limit travels alone, so a batch may exceed
    /// 1 MiB by one key and its headers.
    public static let rawBytesMax = (1 << 20) + 4096
    static let headerBytes = 4 + 8 + 4 + 4 + 4
    static let countersContributionsMax = 4096

    /// A batch; every delta's dot must be of `origin`, consecutive, in order.
    public init(origin: ReplicaID, deltas: [Delta]) {
        precondition(!deltas.isEmpty, "a batch carries at least one delta")
        for (index, delta) in deltas.enumerated() {
            precondition(delta.dot.origin == origin && delta.dot.sequence == deltas[0].dot.sequence + UInt64(index),
                         "a batch's dots are its origin's, consecutive")
        }
        self.origin = origin
        self.deltas = deltas
    }

    /// Raw bytes `delta` takes in a batch, exactly (the outbound log cuts batches with it).
    public static func rawBytes(of delta: Delta) -> Int {
        2 + delta.key.count + 1 + (delta.previousDot == nil ? 0 : 12) + 1 + 4 + bodyBytes(of: delta.state)
    }

    /// Bytes of a state's body on the wire (batches and snapshot chunks encode it alike).
    static func bodyBytes(of state: Delta.State) -> Int {
        switch state {
        case .register(let record): return record.encodedByteCount
        case .counter(let counter): return 22 + 28 * counter.contributions.count
        }
    }

    public var firstSequence: UInt64 { deltas[0].dot.sequence }
    public var lastSequence: UInt64 { deltas[deltas.count - 1].dot.sequence }

    // MARK: Encoding

    /// The raw (uncompressed) bytes of the deltas.
    public func rawBytes() -> [UInt8] {
        var raw: [UInt8] = []
        for delta in deltas {
            precondition(delta.key.count <= Limits.keyBytesMax)
            Self.append(UInt16(delta.key.count), to: &raw)
            raw.append(contentsOf: delta.key)
            if let previous = delta.previousDot {
                raw.append(1)
                Self.append(previous.origin, to: &raw)
                Self.append(previous.sequence, to: &raw)
            } else {
                raw.append(0)
            }
            let state: [UInt8]
            switch delta.state {
            case .register(let record):
                raw.append(1)
                state = record.encoded()
            case .counter(let counter):
                raw.append(2)
                state = Self.encodeCounter(counter)
            }
            Self.append(UInt32(state.count), to: &raw)
            raw.append(contentsOf: state)
        }
        return raw
    }

    /// The `BATCH` payload: header and compressed raw bytes.
    public func encoded(level: Int32 = Zstd.levelDefault) -> (payload: [UInt8], rawBytes: Int) {
        let raw = rawBytes()
        precondition(raw.count <= Self.rawBytesMax, "batch over \(Self.rawBytesMax) raw bytes: cut it earlier")
        var payload: [UInt8] = []
        Self.append(origin, to: &payload)
        Self.append(firstSequence, to: &payload)
        Self.append(UInt32(deltas.count), to: &payload)
        Self.append(UInt32(raw.count), to: &payload)
        Self.append(Self.checksum(header: payload, raw: raw), to: &payload)
        payload.append(contentsOf: Zstd.compress(raw, level: level))
        return (payload, raw.count)
    }

    /// Decodes a `BATCH` payload, checking every length, the raw checksum and the dots.
    public init(decoding payload: [UInt8]) throws(WireError) {
        var reader = WireReader(payload)
        let origin = try reader.replica()
        let first = try reader.uint64()
        let count = Int(try reader.uint32())
        let rawLength = Int(try reader.uint32())
        let checksum = try reader.uint32()
        guard first > 0, count > 0 else { throw .malformed("a batch without deltas or with sequence 0") }
        guard rawLength <= Self.rawBytesMax else { throw .tooLarge(declared: rawLength, limit: Self.rawBytesMax) }
        let raw = try Zstd.decompress(reader.rest(), maxBytes: rawLength)
        guard raw.count == rawLength else { throw .malformed("raw length \(raw.count), declared \(rawLength)") }
        guard Self.checksum(header: Array(payload.prefix(20)), raw: raw) == checksum else { throw .checksumMismatch }
        var deltas: [Delta] = []
        deltas.reserveCapacity(min(count, 65536))
        var body = WireReader(raw)
        for index in 0..<count {
            let keyLength = Int(try body.uint16())
            guard keyLength >= 1 && keyLength <= Limits.keyBytesMax else { throw .malformed("key of \(keyLength) bytes") }
            let key = try body.bytes(keyLength)
            var previous: Dot?
            switch try body.uint8() {
            case 0: previous = nil
            case 1:
                let previousOrigin = try body.replica()
                let sequence = try body.uint64()
                guard sequence > 0 else { throw .malformed("previous dot with sequence 0") }
                previous = Dot(origin: previousOrigin, sequence: sequence)
            case let flag: throw .malformed("previous-dot flag \(flag)")
            }
            let kind = try body.uint8()
            let stateBytes = try body.bytes(Int(try body.uint32()))
            let state: Delta.State
            switch kind {
            case 1:
                do {
                    state = .register(try DurableRecord(decoding: stateBytes))
                } catch {
                    throw .malformed("register: \(error)")
                }
            case 2: state = .counter(try Self.decodeCounter(stateBytes))
            default: throw .malformed("state kind \(kind)")
            }
            deltas.append(Delta(dot: Dot(origin: origin, sequence: first + UInt64(index)), previousDot: previous, key: key, state: state))
        }
        guard body.isAtEnd else { throw .malformed("bytes after the last delta") }
        self.origin = origin
        self.deltas = deltas
    }

    /// CRC-32C of the header's first 20 bytes, then of the raw bytes.
    static func checksum(header: [UInt8], raw: [UInt8]) -> UInt32 {
        let seed = header.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
        return raw.withUnsafeBytes { CRC32C.checksum($0, seed: seed) }
    }

    // MARK: Counters

    /// base (8), reset stamp (8 + 4), contribution count (2), per contribution origin (4),
    /// p (8), n (8), observed (8).
    static func encodeCounter(_ counter: PNCounter) -> [UInt8] {
        var bytes: [UInt8] = []
        append(UInt64(bitPattern: counter.base), to: &bytes)
        append(counter.resetStamp.timestamp.rawValue, to: &bytes)
        append(counter.resetStamp.origin, to: &bytes)
        append(UInt16(counter.contributions.count), to: &bytes)
        for contribution in counter.contributions {
            append(contribution.origin, to: &bytes)
            append(contribution.p, to: &bytes)
            append(contribution.n, to: &bytes)
            append(UInt64(bitPattern: contribution.observed), to: &bytes)
        }
        return bytes
    }

    static func decodeCounter(_ bytes: [UInt8]) throws(WireError) -> PNCounter {
        var reader = WireReader(bytes)
        let base = Int64(bitPattern: try reader.uint64())
        let stamp = LWWStamp(timestamp: HLCTimestamp(rawValue: try reader.uint64()), origin: try reader.replica())
        let count = Int(try reader.uint16())
        guard count <= countersContributionsMax else { throw .malformed("counter with \(count) origins") }
        var contributions: [PNCounter.Contribution] = []
        for _ in 0..<count {
            let origin = try reader.replica()
            if let last = contributions.last, !(last.origin < origin) { throw .malformed("counter origins out of order") }
            contributions.append(PNCounter.Contribution(
                origin: origin, p: try reader.uint64(), n: try reader.uint64(), observed: Int64(bitPattern: try reader.uint64())))
        }
        guard reader.isAtEnd else { throw .malformed("bytes after the counter") }
        return PNCounter(base: base, resetStamp: stamp, contributions: contributions)
    }

    // MARK: Bytes

    static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    static func append(_ replica: ReplicaID, to bytes: inout [UInt8]) {
        append(replica.datacenter, to: &bytes)
        append(replica.node, to: &bytes)
    }
}
