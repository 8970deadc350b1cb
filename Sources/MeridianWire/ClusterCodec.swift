import MeridianCluster
import MeridianCore

/// The byte form of the messages between the nodes of one data center (docs/CLUSTER.md,
/// "Messages"): the payload of a `cluster` peer frame. The first byte is the message kind (the
/// table's number); integers are little-endian, byte strings carry a 32-bit length. Decoding
/// never reads past the payload, refuses unknown kinds and out-of-range fields, and requires the
/// payload to end where the message does.
public enum ClusterCodec {
    /// The message kinds, as numbered in docs/CLUSTER.md.
    enum Kind: UInt8 {
        case swimPing = 20, swimAck, swimPingRequest, replicate, replicateAck, read, readReply, movedEpoch
        case antiEntropyDigests, antiEntropyEntries, moveRequest, moveChunk, antiEntropyStamps, command, commandReply
        case placementFetch, placement, placementChange, placementChangeReply, placementLog
    }

    /// A refusal's sentence, and the partitions one switch may name.
    static let reasonBytesMax = 1_024

    /// Updates a SWIM message may carry, and digests/leaves an anti-entropy message may name.
    static let updatesMax = 64
    static let treeNodesMax = PartitionDigest.leafCount
    /// A record's bytes: a value at its limit, the fixed fields, and room for a counter's
    /// contributions (28 bytes each) and the dots.
    static let recordBytesMax = Limits.valueBytesMax + 64 * 1024

    public static func encode(_ message: ClusterMessage) -> [UInt8] {
        var writer = WireWriter()
        switch message {
        case .swim(.ping(let sequence, let onBehalfOf, let updates)):
            writer.u8(Kind.swimPing.rawValue); writer.u64(sequence)
            writer.flag(onBehalfOf != nil); writer.u32(UInt32(onBehalfOf ?? 0)); writer.updates(updates)
        case .swim(.ack(let sequence, let target, let incarnation, let updates)):
            writer.u8(Kind.swimAck.rawValue); writer.u64(sequence); writer.u32(UInt32(target)); writer.u64(incarnation)
            writer.updates(updates)
        case .swim(.pingRequest(let sequence, let target, let updates)):
            writer.u8(Kind.swimPingRequest.rawValue); writer.u64(sequence); writer.u32(UInt32(target)); writer.updates(updates)
        case .replicate(let epoch, let request, let partition, let key, let state, let hinted):
            writer.u8(Kind.replicate.rawValue); writer.u64(epoch); writer.u64(request); writer.u32(UInt32(partition))
            writer.blob(key); writer.state(state); writer.flag(hinted)
        case .replicateAck(let request):
            writer.u8(Kind.replicateAck.rawValue); writer.u64(request)
        case .read(let epoch, let request, let partition, let key):
            writer.u8(Kind.read.rawValue); writer.u64(epoch); writer.u64(request); writer.u32(UInt32(partition)); writer.blob(key)
        case .readReply(let request, let state):
            writer.u8(Kind.readReply.rawValue); writer.u64(request); writer.flag(state != nil)
            if let state { writer.state(state) }
        case .movedEpoch(let request, let epoch):
            writer.u8(Kind.movedEpoch.rawValue); writer.u64(request); writer.u64(epoch)
        case .antiEntropyDigests(let partition, let level, let nodes, let digests):
            writer.u8(Kind.antiEntropyDigests.rawValue); writer.u32(UInt32(partition)); writer.u8(UInt8(level))
            writer.u32(UInt32(nodes.count))
            for (node, digest) in zip(nodes, digests) { writer.u32(UInt32(node)); writer.u64(digest.high); writer.u64(digest.low) }
        case .antiEntropyEntries(let partition, let entries, let wanted):
            writer.u8(Kind.antiEntropyEntries.rawValue); writer.u32(UInt32(partition))
            writer.entries(entries)
            writer.u32(UInt32(wanted.count))
            for key in wanted { writer.blob(key) }
        case .antiEntropyStamps(let partition, let leaves, let stamps):
            writer.u8(Kind.antiEntropyStamps.rawValue); writer.u32(UInt32(partition))
            writer.u32(UInt32(leaves.count))
            for leaf in leaves { writer.u32(UInt32(leaf)) }
            writer.u32(UInt32(stamps.count))
            for entry in stamps {
                writer.blob(entry.key); writer.stamp(entry.valueStamp); writer.stamp(entry.expiryStamp); writer.flag(entry.hasCounter)
                writer.u64(entry.digest.high); writer.u64(entry.digest.low)
            }
        case .moveRequest(let partition, let changeEpoch, let stream, let after):
            writer.u8(Kind.moveRequest.rawValue); writer.u32(UInt32(partition)); writer.u64(changeEpoch); writer.u64(stream)
            writer.optionalBlob(after)
        case .moveChunk(let partition, let changeEpoch, let stream, let after, let entries, let last):
            writer.u8(Kind.moveChunk.rawValue); writer.u32(UInt32(partition)); writer.u64(changeEpoch); writer.u64(stream)
            writer.optionalBlob(after); writer.entries(entries); writer.flag(last)
        case .command(let request, let epoch, let partition, let protocolVersion, let passedOn, let commands):
            writer.u8(Kind.command.rawValue); writer.u64(request); writer.u64(epoch); writer.u32(UInt32(partition))
            writer.u8(protocolVersion)
            writer.u8(passedOn ? 1 : 0)
            writer.u32(UInt32(commands.count))
            for arguments in commands {
                writer.u32(UInt32(arguments.count))
                for argument in arguments { writer.blob(argument) }
            }
        case .commandReply(let request, .executed(let reply)):
            writer.u8(Kind.commandReply.rawValue); writer.u64(request); writer.u8(0); writer.blob(reply)
        case .commandReply(let request, .movedEpoch(let epoch)):
            writer.u8(Kind.commandReply.rawValue); writer.u64(request); writer.u8(1); writer.u64(epoch)
        case .commandReply(let request, .replyTooLarge):
            writer.u8(Kind.commandReply.rawValue); writer.u64(request); writer.u8(2)
        case .placementFetch(let epoch):
            writer.u8(Kind.placementFetch.rawValue); writer.u64(epoch)
        case .placement(let placement):
            writer.u8(Kind.placement.rawValue); writer.blob(PlacementCodec.encode(placement))
        case .placementChange(let request, .add(let name)):
            writer.u8(Kind.placementChange.rawValue); writer.u64(request); writer.u8(0); writer.blob(Array(name.utf8))
        case .placementChange(let request, .remove(let name)):
            writer.u8(Kind.placementChange.rawValue); writer.u64(request); writer.u8(1); writer.blob(Array(name.utf8))
        case .placementChange(let request, .switching(let partitions, let changeEpoch)):
            writer.u8(Kind.placementChange.rawValue); writer.u64(request); writer.u8(2); writer.u64(changeEpoch)
            writer.u32(UInt32(partitions.count))
            for partition in partitions { writer.u32(UInt32(partition)) }
        case .placementChangeReply(let request, .committed(let epoch)):
            writer.u8(Kind.placementChangeReply.rawValue); writer.u64(request); writer.u8(0); writer.u64(epoch)
        case .placementChangeReply(let request, .refused(let reason)):
            writer.u8(Kind.placementChangeReply.rawValue); writer.u64(request); writer.u8(1)
            // Cut on a character's boundary: the receiver checks the bytes are UTF-8.
            var text = Substring(reason)
            while text.utf8.count > reasonBytesMax { text = text.dropLast() }
            writer.blob(Array(text.utf8))
        case .placementLog(let bytes):
            writer.u8(Kind.placementLog.rawValue); writer.blob(bytes)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> ClusterMessage {
        var reader = WireReader(bytes)
        let byte = try reader.uint8()
        guard let kind = Kind(rawValue: byte) else { throw .malformed("unknown cluster message kind \(byte)") }
        let message: ClusterMessage
        switch kind {
        case .swimPing:
            let sequence = try reader.uint64()
            let relayed = try reader.flag()
            let onBehalfOf = Int(try reader.uint32())
            message = .swim(.ping(sequence: sequence, onBehalfOf: relayed ? onBehalfOf : nil, updates: try reader.updates()))
        case .swimAck:
            message = .swim(.ack(
                sequence: try reader.uint64(), target: Int(try reader.uint32()), incarnation: try reader.uint64(),
                updates: try reader.updates()))
        case .swimPingRequest:
            message = .swim(.pingRequest(sequence: try reader.uint64(), target: Int(try reader.uint32()), updates: try reader.updates()))
        case .replicate:
            message = .replicate(
                epoch: try reader.uint64(), request: try reader.uint64(), partition: Int(try reader.uint32()),
                key: try reader.key(), state: try reader.state(), hinted: try reader.flag())
        case .replicateAck:
            message = .replicateAck(request: try reader.uint64())
        case .read:
            message = .read(epoch: try reader.uint64(), request: try reader.uint64(), partition: Int(try reader.uint32()), key: try reader.key())
        case .readReply:
            let request = try reader.uint64()
            message = .readReply(request: request, state: try reader.flag() ? try reader.state() : nil)
        case .movedEpoch:
            message = .movedEpoch(request: try reader.uint64(), epoch: try reader.uint64())
        case .antiEntropyDigests:
            let partition = Int(try reader.uint32())
            let level = Int(try reader.uint8())
            guard level <= PartitionDigest.leafLevel else { throw .malformed("tree level \(level)") }
            let count = try reader.count()
            guard count <= treeNodesMax else { throw .malformed("\(count) tree nodes") }
            var nodes: [Int] = []
            var digests: [Digest128] = []
            for _ in 0..<count {
                nodes.append(Int(try reader.uint32()))
                digests.append(Digest128(high: try reader.uint64(), low: try reader.uint64()))
            }
            message = .antiEntropyDigests(partition: partition, level: level, nodes: nodes, digests: digests)
        case .antiEntropyEntries:
            let partition = Int(try reader.uint32())
            let entries = try reader.entries()
            var wanted: [[UInt8]] = []
            for _ in 0..<(try reader.count()) { wanted.append(try reader.key()) }
            message = .antiEntropyEntries(partition: partition, entries: entries, wanted: wanted)
        case .antiEntropyStamps:
            let partition = Int(try reader.uint32())
            let count = try reader.count()
            guard count <= treeNodesMax else { throw .malformed("\(count) leaves") }
            var leaves: [Int] = []
            for _ in 0..<count { leaves.append(Int(try reader.uint32())) }
            var stamps: [KeyStamps] = []
            for _ in 0..<(try reader.count()) {
                let key = try reader.key()
                stamps.append(KeyStamps(
                    key: key, valueStamp: try reader.stamp(), expiryStamp: try reader.stamp(), hasCounter: try reader.flag(),
                    digest: Digest128(high: try reader.uint64(), low: try reader.uint64())))
            }
            message = .antiEntropyStamps(partition: partition, leaves: leaves, stamps: stamps)
        case .moveRequest:
            message = .moveRequest(
                partition: Int(try reader.uint32()), changeEpoch: try reader.uint64(), stream: try reader.uint64(),
                after: try reader.optionalKey())
        case .moveChunk:
            message = .moveChunk(
                partition: Int(try reader.uint32()), changeEpoch: try reader.uint64(), stream: try reader.uint64(),
                after: try reader.optionalKey(), entries: try reader.entries(), last: try reader.flag())
        case .command:
            let request = try reader.uint64()
            let epoch = try reader.uint64()
            let partition = Int(try reader.uint32())
            let protocolVersion = try reader.uint8()
            guard protocolVersion == 2 || protocolVersion == 3 else { throw .malformed("RESP version \(protocolVersion)") }
            let passedOn = try reader.uint8()
            guard passedOn <= 1 else { throw .malformed("passed-on flag \(passedOn)") }
            let count = try reader.count()
            guard count >= 1 else { throw .malformed("a forwarded command with no command") }
            var commands: [[[UInt8]]] = []
            for _ in 0..<count {
                // Each argument takes at least its 4-byte length: `count` bounds them by the payload.
                let argumentCount = try reader.count()
                guard argumentCount >= 1 else { throw .malformed("a forwarded command with no arguments") }
                var arguments: [[UInt8]] = []
                for _ in 0..<argumentCount { arguments.append(try reader.blob()) }
                commands.append(arguments)
            }
            message = .command(
                request: request, epoch: epoch, partition: partition, protocolVersion: protocolVersion, passedOn: passedOn == 1, commands: commands)
        case .commandReply:
            let request = try reader.uint64()
            switch try reader.uint8() {
            case 0: message = .commandReply(request: request, outcome: .executed(reply: try reader.blob()))
            case 1: message = .commandReply(request: request, outcome: .movedEpoch(try reader.uint64()))
            case 2: message = .commandReply(request: request, outcome: .replyTooLarge)
            case let other: throw .malformed("command outcome \(other)")
            }
        case .placementFetch:
            message = .placementFetch(epoch: try reader.uint64())
        case .placement:
            message = .placement(try PlacementCodec.decode(try reader.blob()))
        case .placementChange:
            let request = try reader.uint64()
            switch try reader.uint8() {
            case 0: message = .placementChange(request: request, change: .add(name: try reader.memberName()))
            case 1: message = .placementChange(request: request, change: .remove(name: try reader.memberName()))
            case 2:
                let changeEpoch = try reader.uint64()
                let count = try reader.count()
                guard count >= 1, count <= Partitioner.slotCount else { throw .malformed("a switch of \(count) partitions") }
                var partitions: [Int] = []
                for _ in 0..<count { partitions.append(Int(try reader.uint32())) }
                message = .placementChange(request: request, change: .switching(partitions: partitions, changeEpoch: changeEpoch))
            case let other: throw .malformed("placement change \(other)")
            }
        case .placementChangeReply:
            let request = try reader.uint64()
            switch try reader.uint8() {
            case 0: message = .placementChangeReply(request: request, outcome: .committed(epoch: try reader.uint64()))
            case 1:
                let reason = try reader.blob()
                guard reason.count <= reasonBytesMax, let text = String(validating: reason, as: UTF8.self) else {
                    throw .malformed("a refusal's reason")
                }
                message = .placementChangeReply(request: request, outcome: .refused(text))
            case let other: throw .malformed("placement change outcome \(other)")
            }
        case .placementLog:
            message = .placementLog(try reader.blob())
        }
        guard reader.isAtEnd else { throw .malformed("\(bytes.count - reader.offset) bytes after a cluster message") }
        return message
    }
}

/// The cluster messages' values in byte form.
extension WireWriter {
    mutating func updates(_ updates: [MemberUpdate]) {
        u32(UInt32(updates.count))
        for update in updates { u32(UInt32(update.member)); u64(update.incarnation); u8(update.liveness.rawValue) }
    }

    mutating func stamp(_ stamp: LWWStamp) {
        u64(stamp.timestamp.rawValue); u16(stamp.origin.datacenter); u16(stamp.origin.node)
    }

    /// A key's state: its `DurableRecord` encoding (the disk's bytes, with their checksum).
    mutating func state(_ state: ReplicaState) {
        blob(state.encoded())
    }

    mutating func entries(_ entries: [ReplicaEntry]) {
        u32(UInt32(entries.count))
        for entry in entries { blob(entry.key); state(entry.state) }
    }

    mutating func optionalBlob(_ value: [UInt8]?) {
        flag(value != nil)
        if let value { blob(value) }
    }
}

extension WireReader {
    mutating func updates() throws(WireError) -> [MemberUpdate] {
        let count = try count()
        guard count <= ClusterCodec.updatesMax else { throw .malformed("\(count) membership updates") }
        var updates: [MemberUpdate] = []
        for _ in 0..<count {
            let member = Int(try uint32())
            let incarnation = try uint64()
            let byte = try uint8()
            guard let liveness = MemberLiveness(rawValue: byte) else { throw .malformed("liveness \(byte)") }
            updates.append(MemberUpdate(member: member, incarnation: incarnation, liveness: liveness))
        }
        return updates
    }

    mutating func stamp() throws(WireError) -> LWWStamp {
        LWWStamp(timestamp: HLCTimestamp(rawValue: try uint64()), origin: try replica())
    }

    /// A key: at most `Limits.keyBytesMax` bytes.
    mutating func key() throws(WireError) -> [UInt8] {
        let length = Int(try uint32())
        guard length <= Limits.keyBytesMax else { throw .malformed("key of \(length) bytes") }
        return try bytes(length)
    }

    /// A node's name in a placement change (as the placement bounds it).
    mutating func memberName() throws(WireError) -> String {
        let bytes = try blob()
        guard !bytes.isEmpty, bytes.count <= PlacementCodec.nameBytesMax, let name = String(validating: bytes, as: UTF8.self) else {
            throw .malformed("a member name")
        }
        return name
    }

    mutating func optionalKey() throws(WireError) -> [UInt8]? {
        try flag() ? try key() : nil
    }

    /// A key's state: a `DurableRecord` that decodes whole (checksum included), with a value of
    /// at most `Limits.valueBytesMax` bytes.
    mutating func state() throws(WireError) -> ReplicaState {
        let length = Int(try uint32())
        guard length <= ClusterCodec.recordBytesMax else { throw .malformed("record of \(length) bytes") }
        let bytes = try bytes(length)
        let record: DurableRecord
        do {
            record = try DurableRecord(decoding: bytes)
        } catch {
            throw .malformed("record: \(error)")
        }
        guard (record.value?.count ?? 0) <= Limits.valueBytesMax else { throw .malformed("value of \(record.value!.count) bytes") }
        return record
    }

    mutating func entries() throws(WireError) -> [ReplicaEntry] {
        var entries: [ReplicaEntry] = []
        for _ in 0..<(try count()) {
            let key = try key()
            entries.append(ReplicaEntry(key: key, state: try state()))
        }
        return entries
    }
}
