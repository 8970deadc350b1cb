import MeridianCore
import NIOCore

/// The message types of the peer protocol (docs/REPLICATION.md, "Messages").
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 1
    case welcome = 2
    case refuse = 3
    case batch = 4
    case ack = 5
    case snapshotBegin = 6
    case snapshotChunk = 7
    case snapshotEnd = 8
    case ping = 9
    case pong = 10
    /// One message of the strong protocol (`PaxosCodec`; docs/CONSISTENCY.md, "Messages").
    case strong = 11
    /// One message between the nodes of a data center (`ClusterCodec`; docs/CLUSTER.md,
    /// "Messages"). Not yet sent by the server: a node answers it as an unexpected frame.
    case cluster = 12
}

/// One message between peers: a type and its payload.
public struct Frame: Equatable, Sendable {
    public var type: MessageType
    public var payload: [UInt8]

    public init(type: MessageType, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }

    /// `MRDN`.
    public static let magic: [UInt8] = Array("MRDN".utf8)
    /// 2: partitions are contiguous slot ranges (docs/CLUSTER.md). A version-1 node numbers
    /// partitions by CRC16 modulo the count, so the two must not exchange strong messages: the
    /// handshake refuses a mismatch (nodes of one cluster upgrade together).
    public static let protocolVersion: UInt8 = 2
    public static let headerBytes = 16
    /// Largest payload a peer may send: a 1 MiB raw batch compresses to less, and snapshot
    /// chunks are cut to fit. Larger frames are refused before their bytes are buffered.
    public static let payloadBytesMax = 2 << 20

    /// Appends the frame's bytes (header, then payload) to `buffer`.
    public func write(into buffer: inout ByteBuffer) {
        precondition(payload.count <= Self.payloadBytesMax, "frame payload over the limit")
        buffer.writeBytes(Self.magic)
        buffer.writeInteger(Self.protocolVersion)
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(UInt16(0), endianness: .little)
        buffer.writeInteger(UInt32(payload.count), endianness: .little)
        buffer.writeInteger(CRC32C.checksum(payload), endianness: .little)
        buffer.writeBytes(payload)
    }
}

/// Why bytes from a peer were refused. Any of them closes the link (with a log line naming
/// the peer); nothing from a refused frame is applied.
public enum WireError: Error, Equatable, CustomStringConvertible {
    case badMagic
    case unsupportedVersion(UInt8)
    case unknownMessageType(UInt8)
    case tooLarge(declared: Int, limit: Int)
    case checksumMismatch
    case compression(String)
    case malformed(String)

    public var description: String {
        switch self {
        case .badMagic: "not a Meridian peer frame (bad magic)"
        case .unsupportedVersion(let version): "peer protocol version \(version) is not supported (this node speaks \(Frame.protocolVersion))"
        case .unknownMessageType(let type): "unknown message type \(type)"
        case .tooLarge(let declared, let limit): "frame of \(declared) bytes exceeds the \(limit)-byte limit"
        case .checksumMismatch: "frame checksum mismatch"
        case .compression(let reason): "compressed payload refused: \(reason)"
        case .malformed(let reason): "malformed payload: \(reason)"
        }
    }
}

/// Cuts frames out of a byte stream. Resumable: bytes may arrive in any split; it returns nil
/// until a whole frame is there, and checks the header before it waits for the payload.
public struct FrameDecoder: Sendable {
    public init() {}

    /// The next whole frame in `buffer` (consumed), nil when more bytes are needed.
    public mutating func decode(_ buffer: inout ByteBuffer) throws(WireError) -> Frame? {
        guard buffer.readableBytes >= Frame.headerBytes else {
            // Check what has arrived of the magic already, so garbage fails fast.
            let prefix = buffer.readableBytesView.prefix(4)
            if !prefix.elementsEqual(Frame.magic.prefix(prefix.count)) { throw .badMagic }
            return nil
        }
        let start = buffer.readerIndex
        guard buffer.readableBytesView.prefix(4).elementsEqual(Frame.magic) else { throw .badMagic }
        let version = buffer.getInteger(at: start + 4, as: UInt8.self)!
        guard version == Frame.protocolVersion else { throw .unsupportedVersion(version) }
        let rawType = buffer.getInteger(at: start + 5, as: UInt8.self)!
        guard let type = MessageType(rawValue: rawType) else { throw .unknownMessageType(rawType) }
        let length = Int(buffer.getInteger(at: start + 8, endianness: .little, as: UInt32.self)!)
        guard length <= Frame.payloadBytesMax else { throw .tooLarge(declared: length, limit: Frame.payloadBytesMax) }
        guard buffer.readableBytes >= Frame.headerBytes + length else { return nil }
        let checksum = buffer.getInteger(at: start + 12, endianness: .little, as: UInt32.self)!
        let payload = buffer.getBytes(at: start + Frame.headerBytes, length: length)!
        guard CRC32C.checksum(payload) == checksum else { throw .checksumMismatch }
        buffer.moveReaderIndex(forwardBy: Frame.headerBytes + length)
        return Frame(type: type, payload: payload)
    }
}
