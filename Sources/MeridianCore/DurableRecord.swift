/// The state of one key as the storage engine keeps it on disk: the whole LWW register (value
/// or tombstone, both stamps, the expiry), so that replication can be rebuilt from disk.
///
/// Encoding, version 1, little-endian, `DurableRecord.headerBytes` of header:
///
/// | offset | bytes | field                                          |
/// |-------:|------:|------------------------------------------------|
/// | 0      | 1     | format version (1)                             |
/// | 1      | 1     | flags: bit 0 = tombstone, bit 1 = counter, bit 2 = dot, bit 3 = expiry dot |
/// | 2      | 1     | encoding hint (OBJECT ENCODING)                |
/// | 3      | 1     | reserved, 0                                    |
/// | 4      | 8     | value stamp: HLC timestamp                     |
/// | 12     | 4     | value stamp: origin data center, node (2 + 2)  |
/// | 16     | 8     | expiry, Unix ms (0 = none)                     |
/// | 24     | 8     | expiry stamp: HLC timestamp                    |
/// | 32     | 4     | expiry stamp: origin data center, node (2 + 2) |
/// | 36     | 4     | value length n                                 |
/// | 40     | n     | value                                          |
/// | 40 + n | 4 + c | only with flag bit 1: counter length c, counter |
/// | …      | 12    | only with flag bit 2: dot origin (2 + 2), dot sequence (8) |
/// | …      | 12    | only with flag bit 3: expiry dot, likewise      |
/// | end    | 4     | CRC-32C of every byte before it                 |
///
/// The counter (a key of the `INCR` family in a replicated namespace, see `PNCounter`) is:
/// base (8), reset stamp (8 + 4), contribution count (2), then per origin: origin (4), p (8),
/// n (8), observed (8).
///
/// A record that fails any check decodes to a `DurableRecordError`, never to a wrong value.
public struct DurableRecord: Sendable, Equatable {
    /// The value, or nil for a tombstone.
    public var value: [UInt8]?
    public var valueStamp: LWWStamp
    /// Absolute expiry in Unix milliseconds; `Entry.noExpiry` for none.
    public var expiryUnixMs: Int64
    public var expiryStamp: LWWStamp
    public var encoding: EncodingHint
    /// The counter state of an `INCR`-family key in a replicated namespace (nil otherwise).
    public var counter: PNCounter?
    /// The dot of the write that produced the value field (nil: not replicated, or unknown).
    public var dot: Dot?
    /// The dot of the write that produced the expiry field (nil: unknown).
    public var expiryDot: Dot?

    /// The only format version this build writes and reads.
    public static let formatVersion: UInt8 = 1
    /// Bytes before the value.
    public static let headerBytes = 40
    /// Bytes after the value (the checksum).
    public static let trailerBytes = 4

    public init(
        value: [UInt8]?, valueStamp: LWWStamp, expiryUnixMs: Int64, expiryStamp: LWWStamp, encoding: EncodingHint,
        counter: PNCounter? = nil, dot: Dot? = nil, expiryDot: Dot? = nil
    ) {
        self.counter = counter
        self.dot = dot
        self.expiryDot = expiryDot
        self.value = value
        self.valueStamp = valueStamp
        self.expiryUnixMs = expiryUnixMs
        self.expiryStamp = expiryStamp
        self.encoding = encoding
    }

    /// The record of a live entry.
    public init(_ entry: Entry) {
        self.init(
            value: entry.value, valueStamp: entry.valueStamp, expiryUnixMs: entry.expiryUnixMs,
            expiryStamp: entry.expiryStamp, encoding: entry.encoding, counter: entry.counter, dot: entry.dot,
            expiryDot: entry.expiryDot)
    }

    /// A tombstone: the key was deleted by a write stamped `stamp`.
    public static func tombstone(stamp: LWWStamp, counter: PNCounter? = nil) -> DurableRecord {
        DurableRecord(value: nil, valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp, encoding: .byContent, counter: counter)
    }

    public var isTombstone: Bool { value == nil }

    /// When the record was last written: its newest stamp's wall-clock time (Unix ms), the
    /// counter's reset included.
    public var lastWrittenUnixMs: Int64 {
        Int64(max(valueStamp.timestamp.physicalMs, expiryStamp.timestamp.physicalMs, counter?.resetStamp.timestamp.physicalMs ?? 0))
    }

    /// The length of `encoded()`, without encoding.
    public var encodedByteCount: Int {
        Self.headerBytes + (value?.count ?? 0) + Self.trailerBytes
            + (counter.map { 4 + 22 + 28 * $0.contributions.count } ?? 0)
            + (dot == nil ? 0 : 12) + (expiryDot == nil ? 0 : 12)
    }

    private static func larger(_ a: Dot?, _ b: Dot?) -> Dot? {
        guard let a else { return b }
        guard let b else { return a }
        return max(a, b)
    }

    /// This state merged with another replica's, field by field: the value field (value and
    /// encoding) by the larger value stamp, the expiry field by the larger expiry stamp, the
    /// counters by `PNCounter.merge`; a value that shows its counter is the counter's decimal
    /// text, as the keyspace keeps it. Commutative, associative and idempotent, byte for byte:
    /// every tie is broken by the bytes alone.
    public func merged(with other: DurableRecord) -> DurableRecord {
        var result = self
        if other.valueStamp > valueStamp {
            result.value = other.value
            result.valueStamp = other.valueStamp
            result.encoding = other.encoding
            result.dot = other.dot
        } else if other.valueStamp == valueStamp {
            // One stamp, one write, one value — but a counter's increments keep the stamp and
            // move the dot (and the decimal text): the larger of each, so the merge stays
            // order-independent byte for byte. (A value against a tombstone under one stamp
            // cannot happen; the value is kept, whichever side holds it.)
            result.dot = Self.larger(dot, other.dot)
            switch (value, other.value) {
            case (nil, let theirs?): result.value = theirs
            case (let mine?, let theirs?) where mine.lexicographicallyPrecedes(theirs): result.value = theirs
            default: break
            }
            result.encoding = EncodingHint(rawValue: max(encoding.rawValue, other.encoding.rawValue)) ?? encoding
        }
        if other.expiryStamp > expiryStamp {
            result.expiryUnixMs = other.expiryUnixMs
            result.expiryStamp = other.expiryStamp
            result.expiryDot = other.expiryDot
        } else if other.expiryStamp == expiryStamp {
            result.expiryDot = Self.larger(expiryDot, other.expiryDot)
            result.expiryUnixMs = max(expiryUnixMs, other.expiryUnixMs)
        }
        if var counter = counter, let theirs = other.counter {
            counter.merge(theirs)
            result.counter = counter
        } else if counter == nil {
            result.counter = other.counter
        }
        // Increments under one stamp make the texts of two replicas differ while their merged
        // counter is the same: the text follows the counter (`Entry.showsCounter`).
        if let counter = result.counter, result.value != nil, counter.resetStamp >= result.valueStamp {
            result.value = PNCounter.decimalBytes(counter.value)
            result.encoding = .byContent
        }
        return result
    }

    /// Whether the record's key is expired at `nowUnixMs`.
    public func isExpired(atUnixMs nowUnixMs: Int64) -> Bool {
        expiryUnixMs != Entry.noExpiry && expiryUnixMs <= nowUnixMs
    }

    /// The entry to install in memory (nil for a tombstone).
    public func entry(namespaceIndex: Int, lastAccessUnixMs: Int64) -> Entry? {
        guard let value else { return nil }
        var entry = Entry(
            value: value, valueStamp: valueStamp, expiryUnixMs: expiryUnixMs, expiryStamp: expiryStamp,
            lastAccessUnixMs: lastAccessUnixMs, namespaceIndex: namespaceIndex)
        entry.encoding = encoding
        entry.counter = counter
        entry.dot = dot
        entry.expiryDot = expiryDot
        return entry
    }

    // MARK: Encoding

    /// The record's bytes.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encodedByteCount)
        encode(into: &bytes)
        return bytes
    }

    /// Appends the record's bytes (`encoded()`) to `bytes`, whatever it already holds.
    public func encode(into bytes: inout [UInt8]) {
        let start = bytes.count
        let valueCount = value?.count ?? 0
        bytes.append(Self.formatVersion)
        bytes.append((isTombstone ? 1 : 0) | (counter == nil ? 0 : 2) | (dot == nil ? 0 : 4) | (expiryDot == nil ? 0 : 8))
        bytes.append(encoding.rawValue)
        bytes.append(0)
        Self.append(valueStamp, to: &bytes)
        Self.append(UInt64(bitPattern: expiryUnixMs), to: &bytes)
        Self.append(expiryStamp, to: &bytes)
        Self.append(UInt32(valueCount), to: &bytes)
        if let value { bytes.append(contentsOf: value) }
        if let counter {
            let lengthAt = bytes.count
            Self.append(UInt32(0), to: &bytes)
            Self.append(UInt64(bitPattern: counter.base), to: &bytes)
            Self.append(counter.resetStamp, to: &bytes)
            Self.append(UInt16(counter.contributions.count), to: &bytes)
            for contribution in counter.contributions {
                Self.append(UInt32(contribution.origin.datacenter) | UInt32(contribution.origin.node) << 16, to: &bytes)
                Self.append(contribution.p, to: &bytes)
                Self.append(contribution.n, to: &bytes)
                Self.append(UInt64(bitPattern: contribution.observed), to: &bytes)
            }
            let length = UInt32(bytes.count - lengthAt - 4)
            for index in 0..<4 { bytes[lengthAt + index] = UInt8(truncatingIfNeeded: length >> UInt32(8 * index)) }
        }
        for dot in [dot, expiryDot] {
            guard let dot else { continue }
            Self.append(UInt32(dot.origin.datacenter) | UInt32(dot.origin.node) << 16, to: &bytes)
            Self.append(dot.sequence, to: &bytes)
        }
        let checksum = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        Self.append(checksum, to: &bytes)
    }

    /// Decodes a record, checking its length, version, flags and checksum.
    public init(decoding bytes: UnsafeRawBufferPointer) throws(DurableRecordError) {
        guard bytes.count >= Self.headerBytes + Self.trailerBytes else {
            throw .truncated(byteCount: bytes.count)
        }
        guard bytes[0] == Self.formatVersion else { throw .unknownVersion(bytes[0]) }
        let stored = Self.readUInt32(bytes, at: bytes.count - Self.trailerBytes)
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - Self.trailerBytes)]))
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }
        let flags = bytes[1]
        guard flags & ~15 == 0 else { throw .unknownFlags(flags) }
        guard let encoding = EncodingHint(rawValue: bytes[2]) else { throw .unknownEncoding(bytes[2]) }
        let valueCount = Int(Self.readUInt32(bytes, at: 36))
        guard valueCount <= Limits.valueBytesMax else { throw .valueTooLarge(byteCount: valueCount) }
        let hasCounter = flags & 2 == 2
        var counterBytes = 0
        if hasCounter {
            guard Self.headerBytes + valueCount + 4 + Self.trailerBytes <= bytes.count else {
                throw .lengthMismatch(declared: valueCount, byteCount: bytes.count)
            }
            counterBytes = 4 + Int(Self.readUInt32(bytes, at: Self.headerBytes + valueCount))
        }
        let dotBytes = (flags & 4 == 4 ? 12 : 0) + (flags & 8 == 8 ? 12 : 0)
        guard Self.headerBytes + valueCount + counterBytes + dotBytes + Self.trailerBytes == bytes.count else {
            throw .lengthMismatch(declared: valueCount, byteCount: bytes.count)
        }
        let tombstone = flags & 1 == 1
        guard !tombstone || valueCount == 0 else { throw .tombstoneWithValue }
        self.value = tombstone ? nil : Array(UnsafeRawBufferPointer(rebasing: bytes[Self.headerBytes..<(Self.headerBytes + valueCount)]))
        self.valueStamp = Self.readStamp(bytes, at: 4)
        self.expiryUnixMs = Int64(bitPattern: Self.readUInt64(bytes, at: 16))
        self.expiryStamp = Self.readStamp(bytes, at: 24)
        self.encoding = encoding
        let counterEnd = Self.headerBytes + valueCount + counterBytes
        self.counter = hasCounter ? try Self.readCounter(bytes, from: Self.headerBytes + valueCount + 4, to: counterEnd) : nil
        var dotAt = counterEnd
        self.dot = flags & 4 == 4 ? try Self.readDot(bytes, at: &dotAt) : nil
        self.expiryDot = flags & 8 == 8 ? try Self.readDot(bytes, at: &dotAt) : nil
    }

    private static func readDot(_ bytes: UnsafeRawBufferPointer, at offset: inout Int) throws(DurableRecordError) -> Dot {
        let packed = readUInt32(bytes, at: offset)
        let sequence = readUInt64(bytes, at: offset + 4)
        offset += 12
        guard sequence > 0 else { throw .malformedDot }
        return Dot(origin: ReplicaID(datacenter: UInt16(truncatingIfNeeded: packed), node: UInt16(truncatingIfNeeded: packed >> 16)), sequence: sequence)
    }

    private static func readCounter(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) throws(DurableRecordError) -> PNCounter {
        guard end - start >= 22 else { throw .malformedCounter }
        let base = Int64(bitPattern: readUInt64(bytes, at: start))
        let stamp = readStamp(bytes, at: start + 8)
        let count = Int(bytes[start + 20]) | Int(bytes[start + 21]) << 8
        guard end - start == 22 + 28 * count else { throw .malformedCounter }
        var contributions: [PNCounter.Contribution] = []
        contributions.reserveCapacity(count)
        var offset = start + 22
        for _ in 0..<count {
            let packed = readUInt32(bytes, at: offset)
            let origin = ReplicaID(datacenter: UInt16(truncatingIfNeeded: packed), node: UInt16(truncatingIfNeeded: packed >> 16))
            if let last = contributions.last, !(last.origin < origin) { throw .malformedCounter }
            contributions.append(PNCounter.Contribution(
                origin: origin, p: readUInt64(bytes, at: offset + 4), n: readUInt64(bytes, at: offset + 12),
                observed: Int64(bitPattern: readUInt64(bytes, at: offset + 20))))
            offset += 28
        }
        return PNCounter(base: base, resetStamp: stamp, contributions: contributions)
    }

    /// Decodes a record from a byte array.
    public init(decoding bytes: [UInt8]) throws(DurableRecordError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(DurableRecordError) -> DurableRecord in try DurableRecord(decoding: raw) }
        }
        self = try result.get()
    }

    private static func append(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    private static func append(_ stamp: LWWStamp, to bytes: inout [UInt8]) {
        append(stamp.timestamp.rawValue, to: &bytes)
        append(UInt32(stamp.origin.datacenter) | UInt32(stamp.origin.node) << 16, to: &bytes)
    }

    private static func readUInt32(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in 0..<4 { value |= UInt32(bytes[offset + index]) << UInt32(8 * index) }
        return value
    }

    private static func readUInt64(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<8 { value |= UInt64(bytes[offset + index]) << UInt64(8 * index) }
        return value
    }

    private static func readStamp(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> LWWStamp {
        let origin = readUInt32(bytes, at: offset + 8)
        return LWWStamp(
            timestamp: HLCTimestamp(rawValue: readUInt64(bytes, at: offset)),
            origin: ReplicaID(datacenter: UInt16(truncatingIfNeeded: origin), node: UInt16(truncatingIfNeeded: origin >> 16)))
    }
}

/// Why a stored record could not be decoded. Each case is an operating error: the node logs
/// it with the key, counts it and treats the key as absent; it never crashes on bad bytes.
public enum DurableRecordError: Error, Equatable, CustomStringConvertible {
    case truncated(byteCount: Int)
    case unknownVersion(UInt8)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case unknownFlags(UInt8)
    case unknownEncoding(UInt8)
    case valueTooLarge(byteCount: Int)
    case lengthMismatch(declared: Int, byteCount: Int)
    case tombstoneWithValue
    case malformedCounter
    case malformedDot

    public var description: String {
        switch self {
        case .truncated(let count): "record truncated: \(count) bytes, a record has at least \(DurableRecord.headerBytes + DurableRecord.trailerBytes)"
        case .unknownVersion(let version): "record format version \(version) is not known to this build (it reads version \(DurableRecord.formatVersion))"
        case .checksumMismatch(let stored, let computed): "record checksum mismatch: stored \(String(stored, radix: 16)), computed \(String(computed, radix: 16))"
        case .unknownFlags(let flags): "record flags \(flags) are not known to this build"
        case .unknownEncoding(let encoding): "record encoding hint \(encoding) is not known to this build"
        case .valueTooLarge(let count): "record value of \(count) bytes exceeds the \(Limits.valueBytesMax)-byte limit"
        case .lengthMismatch(let declared, let count): "record declares a \(declared)-byte value but holds \(count) bytes in all"
        case .tombstoneWithValue: "record is a tombstone but carries a value"
        case .malformedCounter: "record's counter state is malformed"
        case .malformedDot: "record's dot has sequence 0"
        }
    }
}
