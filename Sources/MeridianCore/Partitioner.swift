/// Maps keys to partitions: CRC16 (XMODEM, as Redis Cluster) of the key, or of its
/// `{hash tag}` when it has a non-empty one, modulo the cluster's partition count. Keys that
/// share a hash tag share a partition, which is what multi-key operations rely on.
public struct Partitioner: Sendable {
    /// The cluster's fixed partition count.
    public let partitionCount: Int

    public init(partitionCount: Int) {
        precondition(partitionCount > 0, "a cluster has at least one partition")
        self.partitionCount = partitionCount
    }

    /// The partition of a key.
    @inlinable
    public func partition(of key: UnsafeRawBufferPointer) -> Int {
        Int(Self.crc16(Self.hashedPart(of: key))) % partitionCount
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
