import MeridianCore

/// A node's role in the cluster, as it introduces itself.
public enum PeerRole: UInt8, Sendable, Equatable {
    case full = 1
    case witness = 2
}

/// `HELLO` and `WELCOME` (docs/REPLICATION.md, "Messages"): who a node is and what it has.
/// The listener refuses a `HELLO` whose cluster, version or node it does not expect.
public struct Handshake: Equatable, Sendable {
    public var cluster: String
    public var protocolVersion: UInt8
    public var node: String
    public var datacenter: String
    public var role: PeerRole
    /// What the sender has applied, per origin.
    public var versionVector: VersionVector

    /// Names are bounded so a hostile peer cannot make a node allocate much.
    public static let nameBytesMax = 255
    /// Origins in a version vector (data centers × nodes) a handshake may carry.
    public static let originsMax = 4096

    public init(cluster: String, protocolVersion: UInt8 = Frame.protocolVersion, node: String, datacenter: String, role: PeerRole, versionVector: VersionVector) {
        self.cluster = cluster
        self.protocolVersion = protocolVersion
        self.node = node
        self.datacenter = datacenter
        self.role = role
        self.versionVector = versionVector
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [protocolVersion, role.rawValue]
        for name in [cluster, node, datacenter] { WireBytes.appendName(name, to: &bytes) }
        WireBytes.append(versionVector, to: &bytes)
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        protocolVersion = try reader.uint8()
        guard let role = PeerRole(rawValue: try reader.uint8()) else { throw .malformed("unknown role") }
        self.role = role
        cluster = try WireBytes.name(&reader)
        node = try WireBytes.name(&reader)
        datacenter = try WireBytes.name(&reader)
        versionVector = try WireBytes.versionVector(&reader, originsMax: Self.originsMax)
        guard reader.isAtEnd else { throw .malformed("bytes after the handshake") }
    }
}

/// `ACK`: the receiver's whole version vector and its HLC (for lag).
public struct Acknowledgement: Equatable, Sendable {
    public var versionVector: VersionVector
    public var clock: HLCTimestamp

    public init(versionVector: VersionVector, clock: HLCTimestamp) {
        self.versionVector = versionVector
        self.clock = clock
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        DeltaBatch.append(clock.rawValue, to: &bytes)
        WireBytes.append(versionVector, to: &bytes)
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = WireReader(bytes)
        clock = HLCTimestamp(rawValue: try reader.uint64())
        versionVector = try WireBytes.versionVector(&reader, originsMax: Handshake.originsMax)
        guard reader.isAtEnd else { throw .malformed("bytes after the acknowledgement") }
    }
}

/// Shared encodings of names and version vectors.
enum WireBytes {
    static func appendName(_ name: String, to bytes: inout [UInt8]) {
        let utf8 = Array(name.utf8)
        precondition(utf8.count <= Handshake.nameBytesMax, "name too long for the wire")
        bytes.append(UInt8(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    static func name(_ reader: inout WireReader) throws(WireError) -> String {
        let length = Int(try reader.uint8())
        let bytes = try reader.bytes(length)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .malformed("a name that is not UTF-8") }
        return text
    }

    static func append(_ vector: VersionVector, to bytes: inout [UInt8]) {
        DeltaBatch.append(UInt16(vector.entries.count), to: &bytes)
        for entry in vector.entries {
            DeltaBatch.append(entry.origin, to: &bytes)
            DeltaBatch.append(entry.sequence, to: &bytes)
        }
    }

    static func versionVector(_ reader: inout WireReader, originsMax: Int) throws(WireError) -> VersionVector {
        let count = Int(try reader.uint16())
        guard count <= originsMax else { throw .malformed("version vector of \(count) origins") }
        var pairs: [(ReplicaID, UInt64)] = []
        var previous: ReplicaID?
        for _ in 0..<count {
            let origin = try reader.replica()
            let sequence = try reader.uint64()
            if let previous, !(previous < origin) { throw .malformed("version vector origins out of order") }
            guard sequence > 0 else { throw .malformed("version vector entry with sequence 0") }
            previous = origin
            pairs.append((origin, sequence))
        }
        return VersionVector(pairs)
    }
}
