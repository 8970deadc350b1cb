/// Maps keys to partitions the way Redis Cluster maps them to slots: CRC16 (XMODEM) of the key,
/// or of its `{hash tag}` when it has a non-empty one, modulo 16,384 gives the key's **slot**;
/// the cluster's `partitionCount` partitions (a power of two up to 16,384) are contiguous slot
/// ranges, partition = slot / (16,384 / partitionCount). Keys that share a hash tag share a slot
/// and so a partition, which is what multi-key operations rely on; and a partition's keys are
/// one slot range, which is what `CLUSTER SLOTS`-style introspection reports (docs/CLUSTER.md).
public struct Partitioner: Sendable {
    /// Redis Cluster's slot count.
    public static let slotCount = 16_384

    /// The cluster's fixed partition count.
    public let partitionCount: Int
    /// Slots per partition.
    public let slotsPerPartition: Int

    public init(partitionCount: Int) {
        precondition(Self.isValidPartitionCount(partitionCount), "a power of two from 1 to 16384 partitions")
        self.partitionCount = partitionCount
        self.slotsPerPartition = Self.slotCount / partitionCount
    }

    /// Whether `count` can be a cluster's partition count: a power of two that divides the slots.
    public static func isValidPartitionCount(_ count: Int) -> Bool {
        count > 0 && count <= slotCount && count & (count - 1) == 0
    }

    /// The slot of a key (0..<16384), as Redis Cluster computes it.
    @inlinable
    public static func slot(of key: UnsafeRawBufferPointer) -> Int {
        Int(crc16(hashedPart(of: key))) & (slotCount - 1)
    }

    /// The partition of a key.
    @inlinable
    public func partition(of key: UnsafeRawBufferPointer) -> Int {
        Self.slot(of: key) / slotsPerPartition
    }

    /// The slots of a partition, first through last.
    public func slots(of partition: Int) -> ClosedRange<Int> {
        precondition(partition >= 0 && partition < partitionCount)
        return (partition * slotsPerPartition)...((partition + 1) * slotsPerPartition - 1)
    }

    /// The bytes that decide the partition: the content of the first `{...}` if it is
    /// non-empty, otherwise the whole key (Redis Cluster's rule).
    @inlinable
    public static func hashedPart(of key: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key }
        var close = open + 1
        while close < key.count && key[close] != UInt8(ascii: "}") { close += 1 }
        if close == key.count || close == open + 1 { return key }
        return UnsafeRawBufferPointer(rebasing: key[(open + 1)..<close])
    }

    /// CRC16-CCITT (XMODEM), table driven.
    @inlinable
    public static func crc16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ crc16Table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    @usableFromInline
    static let crc16Table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
