import MeridianCore

/// One key's state in a snapshot: what a data center holds for it, with the dot of the write
/// that produced it (nil when unknown), so the receiver can keep telling conflicts apart.
public struct SnapshotState: Equatable, Sendable {
    public var key: [UInt8]
    public var dot: Dot?
    public var state: Delta.State

    public init(key: [UInt8], dot: Dot?, state: Delta.State) {
        self.key = key
        self.dot = dot
        self.state = state
    }
}

/// A `SNAPSHOT_CHUNK` payload (docs/REPLICATION.md, "The outbound log"): key states without
/// sequence numbers, which merge like deltas.
///
/// Layout (little-endian): state count (4), raw length (4), CRC-32C (4) of the 8 bytes before
/// it followed by the raw bytes, then the raw bytes compressed with zstd. Raw state layout:
/// key length (2), key, dot flag (1) [+ origin (4) + sequence (8)], kind (1: register,
/// 2: counter), state length (4), state bytes (as in `DeltaBatch`).
public struct SnapshotChunk: Equatable, Sendable {
    public var states: [SnapshotState]

    public init(states: [SnapshotState]) {
        self.states = states
    }

    /// Raw bytes a state takes in a chunk, exactly (chunks are cut under `DeltaBatch.rawBytesMax`).
    public static func rawBytes(of state: SnapshotState) -> Int {
        2 + state.key.count + 1 + (state.dot == nil ? 0 : 12) + 1 + 4 + DeltaBatch.bodyBytes(of: state.state)
    }

    public func encoded(level: Int32 = Zstd.levelDefault) -> (payload: [UInt8], rawBytes: Int) {
        var raw: [UInt8] = []
        for state in states {
            DeltaBatch.append(UInt16(state.key.count), to: &raw)
            raw.append(contentsOf: state.key)
            if let dot = state.dot {
                raw.append(1)
                DeltaBatch.append(dot.origin, to: &raw)
                DeltaBatch.append(dot.sequence, to: &raw)
            } else {
                raw.append(0)
            }
            let bytes: [UInt8]
            switch state.state {
            case .register(let record):
                raw.append(1)
                bytes = record.encoded()
            case .counter(let counter):
                raw.append(2)
                bytes = DeltaBatch.encodeCounter(counter)
            }
            DeltaBatch.append(UInt32(bytes.count), to: &raw)
            raw.append(contentsOf: bytes)
        }
        precondition(raw.count <= DeltaBatch.rawBytesMax, "snapshot chunk over \(DeltaBatch.rawBytesMax) raw bytes: cut it earlier")
        var payload: [UInt8] = []
        DeltaBatch.append(UInt32(states.count), to: &payload)
        DeltaBatch.append(UInt32(raw.count), to: &payload)
        let seed = payload.withUnsafeBytes { CRC32C.checksum($0) }
        DeltaBatch.append(raw.withUnsafeBytes { CRC32C.checksum($0, seed: seed) }, to: &payload)
        payload.append(contentsOf: Zstd.compress(raw, level: level))
        return (payload, raw.count)
    }

    public init(decoding payload: [UInt8]) throws(WireError) {
        var reader = WireReader(payload)
        let count = Int(try reader.uint32())
        let rawLength = Int(try reader.uint32())
        let checksum = try reader.uint32()
        guard rawLength <= DeltaBatch.rawBytesMax else { throw .tooLarge(declared: rawLength, limit: DeltaBatch.rawBytesMax) }
        let raw = try Zstd.decompress(reader.rest(), maxBytes: rawLength)
        guard raw.count == rawLength else { throw .malformed("raw length \(raw.count), declared \(rawLength)") }
        let seed = payload.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<8])) }
        guard raw.withUnsafeBytes({ CRC32C.checksum($0, seed: seed) }) == checksum else { throw .checksumMismatch }
        var body = WireReader(raw)
        var states: [SnapshotState] = []
        states.reserveCapacity(min(count, 65536))
        for _ in 0..<count {
            let keyLength = Int(try body.uint16())
            guard keyLength >= 1 && keyLength <= Limits.keyBytesMax else { throw .malformed("key of \(keyLength) bytes") }
            let key = try body.bytes(keyLength)
            var dot: Dot?
            switch try body.uint8() {
            case 0: dot = nil
            case 1:
                let origin = try body.replica()
                let sequence = try body.uint64()
                guard sequence > 0 else { throw .malformed("dot with sequence 0") }
                dot = Dot(origin: origin, sequence: sequence)
            case let flag: throw .malformed("dot flag \(flag)")
            }
            let kind = try body.uint8()
            let bytes = try body.bytes(Int(try body.uint32()))
            switch kind {
            case 1:
                do {
                    states.append(SnapshotState(key: key, dot: dot, state: .register(try DurableRecord(decoding: bytes))))
                } catch {
                    throw .malformed("register: \(error)")
                }
            case 2: states.append(SnapshotState(key: key, dot: dot, state: .counter(try DeltaBatch.decodeCounter(bytes))))
            default: throw .malformed("state kind \(kind)")
            }
        }
        guard body.isAtEnd else { throw .malformed("bytes after the last state") }
        self.states = states
    }
}

/// `SNAPSHOT_BEGIN` and `SNAPSHOT_END`: the origin whose stream the snapshot stands in for,
/// and the sequence it covers up to.
public struct SnapshotMarker: Equatable, Sendable {
    public var origin: ReplicaID
    public var through: UInt64

    public init(origin: ReplicaID, through: UInt64) {
        self.origin = origin
        self.through = through
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        DeltaBatch.append(origin, to: &bytes)
        DeltaBatch.append(through, to: &bytes)
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        origin = try reader.replica()
        through = try reader.uint64()
        guard reader.isAtEnd else { throw .malformed("bytes after the snapshot marker") }
    }
}
