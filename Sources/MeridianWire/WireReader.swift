import MeridianCore

/// Reads the little-endian values of a peer message, throwing instead of reading past the end
/// (a damaged or hostile payload is an error, never a crash). Every decoder of the peer
/// protocol uses it.
struct WireReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func bytes(_ count: Int) throws(WireError) -> [UInt8] {
        guard count >= 0, bytes.count - offset >= count else { throw .malformed("truncated") }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - offset >= size else { throw .malformed("truncated") }
        var value: T = 0
        for index in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index) }
        offset += size
        return value
    }

    mutating func uint8() throws(WireError) -> UInt8 { try integer(UInt8.self) }
    mutating func uint16() throws(WireError) -> UInt16 { try integer(UInt16.self) }
    mutating func uint32() throws(WireError) -> UInt32 { try integer(UInt32.self) }
    mutating func uint64() throws(WireError) -> UInt64 { try integer(UInt64.self) }
    mutating func int64() throws(WireError) -> Int64 { Int64(bitPattern: try integer(UInt64.self)) }

    mutating func replica() throws(WireError) -> ReplicaID {
        ReplicaID(datacenter: try uint16(), node: try uint16())
    }

    mutating func flag() throws(WireError) -> Bool {
        switch try uint8() {
        case 0: return false
        case 1: return true
        case let other: throw .malformed("flag byte \(other)")
        }
    }

    /// A 32-bit count of items that each take at least one byte: never more than the bytes left.
    mutating func count() throws(WireError) -> Int {
        let count = Int(try uint32())
        guard count <= bytes.count - offset else { throw .malformed("count \(count) beyond the payload") }
        return count
    }

    /// A byte string with a 32-bit length.
    mutating func blob() throws(WireError) -> [UInt8] {
        try bytes(Int(try uint32()))
    }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }
}

/// Writes the little-endian values of a peer message: the counterpart of `WireReader`, shared
/// by every encoder of the peer protocol.
struct WireWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { integer(value) }
    mutating func u32(_ value: UInt32) { integer(value) }
    mutating func u64(_ value: UInt64) { integer(value) }
    mutating func i64(_ value: Int64) { integer(UInt64(bitPattern: value)) }
    mutating func integer<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }
    mutating func flag(_ value: Bool) { bytes.append(value ? 1 : 0) }
    /// A byte string with a 32-bit length.
    mutating func blob(_ value: [UInt8]) { u32(UInt32(value.count)); bytes.append(contentsOf: value) }
}
