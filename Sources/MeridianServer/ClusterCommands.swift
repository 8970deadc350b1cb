import MeridianCluster
import MeridianCore
import MeridianRESP
import NIOCore

/// CLUSTER introspection (docs/CLUSTER.md, "Routing"): what a cluster-aware client asks to learn
/// which node serves which Redis slots. It reports this node's data center only — every data
/// center holds every key (multi-master), so another data center's nodes are not this one's
/// replicas — from the placement of the DC's configured nodes. This version serves one node per
/// data center, so the node reports every slot as its own; the answers come from the same
/// `Placement` that will place partitions once a data center has several nodes.
extension CommandExecutor {
    private static let clusterKEYSLOT: [UInt8] = Array("KEYSLOT".utf8)
    private static let clusterSLOTS: [UInt8] = Array("SLOTS".utf8)
    private static let clusterSHARDS: [UInt8] = Array("SHARDS".utf8)
    private static let clusterNODES: [UInt8] = Array("NODES".utf8)
    private static let clusterMYID: [UInt8] = Array("MYID".utf8)
    private static let clusterINFO: [UInt8] = Array("INFO".utf8)
    private static let clusterHELP: [UInt8] = Array("HELP".utf8)
    private static let clusterDIGEST: [UInt8] = Array("DIGEST".utf8)
    private static let clusterADDNODE: [UInt8] = Array("ADDNODE".utf8)
    private static let clusterREMOVENODE: [UInt8] = Array("REMOVENODE".utf8)

    /// CLUSTER ADDNODE <node> | REMOVENODE <node> (docs/CLUSTER.md, "Rebalancing"): commits the
    /// change through the data center's placement log and answers `OK` once it is committed —
    /// the partitions move after that (INFO cluster's `cluster_change` says while). nil for the
    /// other subcommands.
    mutating func clusterPlacementChange(_ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome? {
        guard a.count >= 2 else { return nil }
        let adds = Self.matches(a[1], Self.clusterADDNODE)
        guard adds || Self.matches(a[1], Self.clusterREMOVENODE) else { return nil }
        guard a.count == 3 else {
            error("ERR wrong number of arguments for 'cluster|\(adds ? "addnode" : "removenode")' command", into: &out)
            return .keepOpen
        }
        guard let engine = server.cluster else {
            error("ERR this node is its data center's only node: its data center has no placement to change", into: &out)
            return .keepOpen
        }
        // Checked here: a name no placement can hold would make the voter's decoder refuse the
        // message, and close the link it came on.
        guard let name = a[2].getString(at: a[2].readerIndex, length: a[2].readableBytes), !name.isEmpty,
              engine.nodeNames.contains(name) else {
            error("ERR '\(String(decoding: a[2].readableBytesView.prefix(64), as: UTF8.self))' is not a node of this data center in the configuration (every node's configuration lists the nodes it may add, as spares)", into: &out)
            return .keepOpen
        }
        let change: PlacementChange = adds ? .add(name: name) : .remove(name: name)
        return .replyLater(DeferredReply { reply in
            engine.changePlacement(change) { outcome in
                var buffer = ByteBufferAllocator().buffer(capacity: 128)
                switch outcome {
                case .committed: buffer.writeSimpleString("OK")
                case .refused(let reason): buffer.writeErrorReply("ERR \(reason)")
                }
                reply(buffer, nil)
            }
        })
    }

    /// CLUSTER KEYSLOT | SLOTS | SHARDS | NODES | MYID | INFO | HELP
    mutating func cluster(_ a: [ByteBuffer], into out: inout ByteBuffer) {
        let sub = a[1]
        func arity(_ expected: Int, _ name: String) -> Bool {
            if a.count == expected { return true }
            error("ERR wrong number of arguments for 'cluster|\(name)' command", into: &out)
            return false
        }
        if Self.matches(sub, Self.clusterKEYSLOT) {
            guard arity(3, "keyslot") else { return }
            out.writeIntegerReply(a[2].withUnsafeReadableBytes { Partitioner.slot(of: $0) })
            return
        }
        if Self.matches(sub, Self.clusterHELP) {
            Self.writeHelp([
                "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ADDNODE <node>", "    Add a spare node of this data center to its placement; its partitions move to it while it serves.",
                "DIGEST <partition>", "    Return the Merkle root of this node's replica of <partition> (32 hex digits; nil if it holds nothing of it).",
                "INFO", "    Return information about this node's data center as a cluster.",
                "KEYSLOT <key>", "    Return the hash slot for <key>.",
                "MYID", "    Return this node's id.",
                "NODES", "    Return this data center's nodes and their slots.",
                "REMOVENODE <node>", "    Remove a node from this data center's placement; its partitions move to the others.",
                "SHARDS", "    Return this data center's slot ranges with their nodes.",
                "SLOTS", "    Return this data center's slot ranges with their nodes' addresses.",
                "HELP", "    Print this help.",
            ], into: &out)
            return
        }
        if Self.matches(sub, Self.clusterDIGEST) {
            guard arity(3, "digest") else { return }
            guard server.cluster != nil else {
                error("ERR this node is its data center's only node: it keeps no partition trees", into: &out)
                return
            }
            guard let text = a[2].getString(at: a[2].readerIndex, length: a[2].readableBytes), let partition = Int(text),
                  (0..<server.configuration.cluster.partitions).contains(partition) else {
                error("ERR the partition must be an integer from 0 to \(server.configuration.cluster.partitions - 1)", into: &out)
                return
            }
            // This node's own replica, never forwarded: what anti-entropy compares.
            let store = ShardedReplicaStore(database: database)
            let tree = store.digest(of: partition)
            if tree.root == .zero && !store.heldPartitions.contains(partition) {
                out.writeNull(resp)
            } else {
                func hex(_ value: UInt64) -> String {
                    let digits = String(value, radix: 16)
                    return String(repeating: "0", count: 16 - digits.count) + digits
                }
                out.writeBulkString(hex(tree.root.high) + hex(tree.root.low))
            }
            return
        }
        let view = ClusterView(server: server)
        if Self.matches(sub, Self.clusterMYID) {
            guard arity(2, "myid") else { return }
            out.writeBulkString(view.id(named: server.nodeName))
        } else if Self.matches(sub, Self.clusterSLOTS) {
            guard arity(2, "slots") else { return }
            out.writeArrayHeader(view.ranges.count)
            for range in view.ranges {
                out.writeArrayHeader(2 + range.owners.count)
                out.writeIntegerReply(range.slots.lowerBound)
                out.writeIntegerReply(range.slots.upperBound)
                for owner in range.owners {
                    let address = view.address(of: owner)
                    out.writeArrayHeader(3)
                    out.writeBulkString(address.host)
                    out.writeIntegerReply(address.port)
                    out.writeBulkString(view.id(of: owner))
                }
            }
        } else if Self.matches(sub, Self.clusterSHARDS) {
            guard arity(2, "shards") else { return }
            // A shard is one owner set with every slot range it serves.
            var shards: [(owners: [Int], ranges: [ClosedRange<Int>])] = []
            for range in view.ranges {
                if let index = shards.firstIndex(where: { $0.owners == range.owners }) {
                    shards[index].ranges.append(range.slots)
                } else {
                    shards.append((range.owners, [range.slots]))
                }
            }
            out.writeArrayHeader(shards.count)
            for shard in shards {
                out.writeMapHeader(2, resp)
                out.writeBulkString("slots")
                out.writeArrayHeader(2 * shard.ranges.count)
                for slots in shard.ranges {
                    out.writeIntegerReply(slots.lowerBound)
                    out.writeIntegerReply(slots.upperBound)
                }
                out.writeBulkString("nodes")
                out.writeArrayHeader(shard.owners.count)
                for (index, owner) in shard.owners.enumerated() {
                    let address = view.address(of: owner)
                    out.writeMapHeader(7, resp)
                    out.writeBulkString("id"); out.writeBulkString(view.id(of: owner))
                    out.writeBulkString("port"); out.writeIntegerReply(address.port)
                    out.writeBulkString("ip"); out.writeBulkString(address.host)
                    out.writeBulkString("endpoint"); out.writeBulkString(address.host)
                    out.writeBulkString("role"); out.writeBulkString(index == 0 ? "master" : "replica")
                    out.writeBulkString("replication-offset"); out.writeIntegerReply(0)
                    out.writeBulkString("health"); out.writeBulkString("online")
                }
            }
        } else if Self.matches(sub, Self.clusterNODES) {
            guard arity(2, "nodes") else { return }
            var text = ""
            for member in view.placement.members {
                let address = view.address(of: member.id)
                let slots = view.ranges.filter { $0.owners.first == member.id }
                    .map { $0.slots.lowerBound == $0.slots.upperBound ? "\($0.slots.lowerBound)" : "\($0.slots.lowerBound)-\($0.slots.upperBound)" }
                let flags = member.id == view.me ? "myself,master" : "master"
                text += "\(view.id(of: member.id)) \(address.host):\(address.port)@\(view.peerPort(of: member.id)) \(flags) - 0 0 \(view.placement.epoch) connected"
                text += slots.isEmpty ? "\n" : " " + slots.joined(separator: " ") + "\n"
            }
            out.writeVerbatimText(text, resp)
        } else if Self.matches(sub, Self.clusterINFO) {
            guard arity(2, "info") else { return }
            let assigned = view.ranges.reduce(0) { $0 + $1.slots.count }
            let lines = [
                "cluster_state:ok",
                "cluster_slots_assigned:\(assigned)",
                "cluster_slots_ok:\(assigned)",
                "cluster_slots_pfail:0",
                "cluster_slots_fail:0",
                "cluster_known_nodes:\(view.placement.members.count)",
                "cluster_size:\(Set(view.ranges.compactMap(\.owners.first)).count)",
                "cluster_current_epoch:\(view.placement.epoch)",
                "cluster_my_epoch:\(view.placement.epoch)",
                "meridian_datacenter:\(server.datacenterName)",
                "meridian_partitions:\(view.placement.partitionCount)",
                "meridian_replication_factor:\(view.placement.replicationFactor)",
            ]
            out.writeVerbatimText(lines.joined(separator: "\r\n") + "\r\n", resp)
        } else {
            unknownSubcommand(sub, of: "CLUSTER", into: &out)
        }
    }
}

/// This node's data center as CLUSTER commands describe it: its current placement (the
/// configuration's, in a data center of one node) with each member's configured addresses,
/// found by name (the configuration is the address book; ids are the placement's).
struct ClusterView {
    let placement: Placement
    let ranges: [SlotRange]
    /// This node's member id (-1 when the placement does not name it).
    let me: Int
    private let nodesByName: [String: NodeConfig]
    private let ownAddress: HostPort
    private let prefix: String

    init(server: ServerContext) {
        let configuration = server.configuration
        let datacenter = configuration.cluster.datacenters.first { $0.name == server.datacenterName }
        let nodes = datacenter?.nodes ?? [NodeConfig(name: server.nodeName, client: nil, peer: nil)]
        nodesByName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        placement = server.cluster?.currentPlacement ?? Placement(
            memberNames: nodes.map(\.name), partitionCount: configuration.cluster.partitions,
            replicationFactor: configuration.cluster.replicationFactor)
        me = placement.members.first { $0.name == server.nodeName }?.id ?? -1
        ranges = SlotRange.ranges(of: placement, partitioner: Partitioner(partitionCount: configuration.cluster.partitions))
        ownAddress = server.listenAddress.withLockedValue { $0 }
        prefix = "meridian/\(configuration.cluster.name)/\(server.datacenterName)/"
    }

    private func node(_ member: Int) -> NodeConfig? {
        placement.member(member).flatMap { nodesByName[$0.name] }
    }

    /// A Redis-style node id (40 hex digits), stable across restarts: from the cluster, data
    /// center and node names.
    func id(of member: Int) -> String {
        id(named: placement.member(member)?.name ?? "?")
    }

    func id(named name: String) -> String {
        String(SHA256.hex(SHA256.digest(Array((prefix + name).utf8))).prefix(40))
    }

    /// Where clients reach a member. A wildcard bind address is reported as an empty host, which
    /// clients read as "the address you used to reach me".
    func address(of member: Int) -> HostPort {
        let address = member == me ? ownAddress : node(member)?.client ?? HostPort(host: "", port: 0)
        let wildcard = address.host == "0.0.0.0" || address.host == "::" || address.host == "[::]"
        return HostPort(host: wildcard ? "" : address.host, port: address.port)
    }

    func peerPort(of member: Int) -> Int {
        node(member)?.peer?.port ?? 0
    }
}
