import MeridianCluster
import MeridianCore

/// The byte form of a data center's `Placement`: the value of the placement key in the data
/// center's placement log, changed only by compare-and-set on these exact bytes
/// (docs/CLUSTER.md, "The server wiring"). So the encoding is canonical: one placement, one
/// byte string.
///
/// Version 1, integers little-endian:
///
/// | bytes | field |
/// |---:|---|
/// | 1 | format version (1) |
/// | 4 | partition count |
/// | 4 | replication factor |
/// | 8 | epoch |
/// | 8 | change epoch (0: no change running) |
/// | 4 | next member id |
/// | 4 | member count m, then per member: id (4), state (1: joining 0, active 1, leaving 2), name (4 + n) |
/// | ⌈P/8⌉ | switched partitions, one bit each, partition p at byte p/8, bit p%8 |
public enum PlacementCodec {
    static let formatVersion: UInt8 = 1
    /// Members a placement may list, and bytes a member's name may take.
    public static let membersMax = 1_024
    public static let nameBytesMax = 255

    public static func encode(_ placement: Placement) -> [UInt8] {
        var writer = WireWriter()
        writer.u8(formatVersion)
        writer.u32(UInt32(placement.partitionCount))
        writer.u32(UInt32(placement.replicationFactor))
        writer.u64(placement.epoch)
        writer.u64(placement.changeEpoch)
        writer.u32(UInt32(placement.nextMemberID))
        writer.u32(UInt32(placement.members.count))
        for member in placement.members {
            writer.u32(UInt32(member.id))
            writer.u8(member.state.rawValue)
            writer.blob(Array(member.name.utf8))
        }
        var bits = [UInt8](repeating: 0, count: (placement.partitionCount + 7) / 8)
        for (partition, done) in placement.switched.enumerated() where done { bits[partition / 8] |= 1 << (partition % 8) }
        writer.bytes += bits
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Placement {
        var reader = WireReader(bytes)
        let version = try reader.uint8()
        guard version == formatVersion else { throw .malformed("placement format version \(version)") }
        let partitionCount = Int(try reader.uint32())
        guard Partitioner.isValidPartitionCount(partitionCount) else { throw .malformed("placement of \(partitionCount) partitions") }
        let replicationFactor = Int(try reader.uint32())
        guard replicationFactor >= 1, replicationFactor <= membersMax else { throw .malformed("replication factor \(replicationFactor)") }
        let epoch = try reader.uint64()
        let changeEpoch = try reader.uint64()
        let nextMemberID = Int(try reader.uint32())
        let count = try reader.count()
        guard count >= 1, count <= membersMax else { throw .malformed("placement of \(count) members") }
        var members: [Placement.Member] = []
        for _ in 0..<count {
            let id = Int(try reader.uint32())
            let byte = try reader.uint8()
            guard let state = Placement.MemberState(rawValue: byte) else { throw .malformed("member state \(byte)") }
            let length = Int(try reader.uint32())
            guard length <= nameBytesMax else { throw .malformed("member name of \(length) bytes") }
            guard let name = String(validating: try reader.bytes(length), as: UTF8.self) else { throw .malformed("member name not UTF-8") }
            members.append(Placement.Member(id: id, name: name, state: state))
        }
        let bits = try reader.bytes((partitionCount + 7) / 8)
        guard reader.isAtEnd else { throw .malformed("\(bytes.count - reader.offset) bytes after a placement") }
        let switched = (0..<partitionCount).map { bits[$0 / 8] & (1 << ($0 % 8)) != 0 }
        // Bits past the last partition must be clear: one placement, one byte string.
        guard partitionCount % 8 == 0 || bits[bits.count - 1] >> (partitionCount % 8) == 0 else {
            throw .malformed("switched bits past the last partition")
        }
        guard let placement = Placement(
            partitionCount: partitionCount, replicationFactor: replicationFactor, epoch: epoch, members: members,
            switched: switched, changeEpoch: changeEpoch, nextMemberID: nextMemberID)
        else { throw .malformed("placement fields that no placement can have") }
        return placement
    }
}
