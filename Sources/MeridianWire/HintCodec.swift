import MeridianCluster
import MeridianCore

/// The byte form of a hint kept on disk (docs/CLUSTER.md, "Hinted handoff"): hints of durable
/// namespaces are a log of the store (`StorageEngine.appendLog`), one entry per hint, keyed by the
/// prefix byte `h` and the hint's id (big-endian, so a scan returns them in id order), removed
/// when the core removes the hint. The value: format version, target member, partition, key and
/// the record (its `DurableRecord` bytes, checksum included); integers little-endian.
public enum HintCodec {
    /// The log's prefix byte (the store keeps records under `r`, its metadata under `m`, the
    /// audit log under `a`).
    public static let prefix = UInt8(ascii: "h")
    static let formatVersion: UInt8 = 1

    /// The log key of hint `id`.
    public static func key(id: UInt64) -> [UInt8] {
        var key: [UInt8] = [prefix]
        for shift in stride(from: 56, through: 0, by: -8) { key.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        return key
    }

    /// Where the hint log starts and ends (for a scan or a removal of all of it).
    public static let firstKey: [UInt8] = [prefix]
    public static let endKey: [UInt8] = [prefix + 1]

    public static func encode(_ hint: HintStore.Hint) -> [UInt8] {
        var writer = WireWriter()
        writer.u8(formatVersion)
        writer.u64(UInt64(hint.target))
        writer.u32(UInt32(hint.partition))
        writer.blob(hint.key)
        writer.state(hint.state)
        return writer.bytes
    }

    /// A hint from its log entry; the id is the key's.
    public static func decode(key: [UInt8], value: [UInt8]) throws(WireError) -> HintStore.Hint {
        guard key.count == 9, key[0] == prefix else { throw .malformed("a hint key of \(key.count) bytes") }
        let id = key[1...].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        var reader = WireReader(value)
        let version = try reader.uint8()
        guard version == formatVersion else { throw .malformed("hint format \(version)") }
        let target = try reader.uint64()
        guard target <= UInt64(Int32.max) else { throw .malformed("hint target \(target)") }
        let partition = Int(try reader.uint32())
        guard partition < Partitioner.slotCount else { throw .malformed("hint partition \(partition)") }
        let hint = HintStore.Hint(id: id, target: Int(target), partition: partition, key: try reader.key(), state: try reader.state())
        guard reader.isAtEnd else { throw .malformed("bytes after a hint") }
        return hint
    }
}
