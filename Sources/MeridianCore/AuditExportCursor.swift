/// Where an audit export stands between two `AUDIT EXPORT` calls (docs/AUDIT.md, "Export"):
/// the whole state of the export, handed to the client and back, so that the node keeps
/// nothing for it and any number of exports can run, stop or be abandoned.
public struct AuditExportCursor: Equatable, Sendable {
    /// The node whose audit log is exported (a cursor is refused by any other).
    public var node: ReplicaID
    /// The range: log positions after `since`, up to and including `until`.
    public var since: UInt64
    public var until: UInt64
    /// The last position read so far.
    public var after: UInt64
    public var digestOnly: Bool
    /// Lines per second the node paces the export to (0: as fast as it goes).
    public var linesPerSecond: UInt32
    /// Namespaces exported (all audited ones when empty).
    public var namespaces: [String]
    /// Lines written so far and the hash of the last one (the chain goes on from it).
    public var deltas: Int
    public var conflicts: Int
    public var previousHash: [UInt8]

    static let formatVersion: UInt8 = 1

    public init(node: ReplicaID, since: UInt64, until: UInt64, digestOnly: Bool, namespaces: [String], linesPerSecond: UInt32 = 0) {
        self.linesPerSecond = linesPerSecond
        self.node = node
        self.since = since
        self.until = until
        self.after = since
        self.digestOnly = digestOnly
        self.namespaces = namespaces
        self.deltas = 0
        self.conflicts = 0
        self.previousHash = AuditFormat.chainStart
    }

    /// Whether the header is still to be written.
    public var isAtStart: Bool { previousHash == AuditFormat.chainStart }

    /// The cursor as the client holds it: lowercase hex of its bytes.
    public func encoded() -> String {
        var bytes: [UInt8] = [Self.formatVersion, digestOnly ? 1 : 0]
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        append(node.datacenter)
        append(node.node)
        append(linesPerSecond)
        append(since)
        append(until)
        append(after)
        append(UInt64(deltas))
        append(UInt64(conflicts))
        bytes += previousHash
        append(UInt16(namespaces.count))
        for name in namespaces {
            append(UInt16(name.utf8.count))
            bytes += name.utf8
        }
        return AuditFormat.hex(bytes)
    }

    public enum DecodingError: Error, Equatable { case malformed }

    public init(decoding text: String) throws(DecodingError) {
        var bytes: [UInt8] = []
        var high: UInt8?
        for character in text.utf8 {
            let nibble: UInt8
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = character - UInt8(ascii: "a") + 10
            default: throw .malformed
            }
            if let first = high {
                bytes.append(first << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        guard high == nil, bytes.count >= 2 + 8 + 40 + 32 + 2, bytes[0] == Self.formatVersion, bytes[1] <= 1 else { throw .malformed }
        var offset = 2
        func read<T: FixedWidthInteger>(_: T.Type) throws(DecodingError) -> T {
            guard offset + MemoryLayout<T>.size <= bytes.count else { throw .malformed }
            var value = T.zero
            for index in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + index]) << (8 * index) }
            offset += MemoryLayout<T>.size
            return value
        }
        digestOnly = bytes[1] == 1
        node = ReplicaID(datacenter: try read(UInt16.self), node: try read(UInt16.self))
        linesPerSecond = try read(UInt32.self)
        since = try read(UInt64.self)
        until = try read(UInt64.self)
        after = try read(UInt64.self)
        let deltas = try read(UInt64.self)
        let conflicts = try read(UInt64.self)
        guard deltas <= UInt64(Int.max), conflicts <= UInt64(Int.max), since <= after, after <= until else { throw .malformed }
        self.deltas = Int(deltas)
        self.conflicts = Int(conflicts)
        guard offset + 32 <= bytes.count else { throw .malformed }
        previousHash = Array(bytes[offset..<(offset + 32)])
        offset += 32
        let count = Int(try read(UInt16.self))
        var namespaces: [String] = []
        for _ in 0..<count {
            let length = Int(try read(UInt16.self))
            guard offset + length <= bytes.count else { throw .malformed }
            guard let name = String(validating: bytes[offset..<(offset + length)], as: UTF8.self) else { throw .malformed }
            namespaces.append(name)
            offset += length
        }
        guard offset == bytes.count else { throw .malformed }
        self.namespaces = namespaces
    }
}
