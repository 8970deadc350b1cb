import MeridianCore
import Yams

/// A configuration file that cannot be used. `description` names the offending field by its
/// path (`namespaces[2].durability`) and says what was expected.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Dotted path of the field, e.g. `cluster.datacenters[0].nodes[1].client`.
    public let field: String
    /// What is wrong with it.
    public let problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { field.isEmpty ? problem : "\(field): \(problem)" }
}

/// Reads the YAML configuration contract of `DESIGN.md` into `MeridianConfiguration`.
///
/// The loader is strict: an unknown field is refused rather than ignored, so a typo such as
/// `evicton: none` cannot silently leave a namespace evictable.
public enum ConfigurationLoader {
    /// Longest `default_ttl` accepted (100 years): far beyond any cache's need, far below
    /// where adding it to the clock could overflow.
    public static let defaultTTLMsMax: Int64 = 100 * 365 * 86_400_000

    /// Parses and validates configuration text.
    public static func parse(yaml text: String) throws(ConfigurationError) -> MeridianConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError(field: "", problem: "not valid YAML: \(error)")
        }
        guard let root, let top = root.mapping else {
            throw ConfigurationError(field: "", problem: "expected a mapping with `cluster`, `namespaces` and `limits`")
        }
        try checkKeys(top, allowed: ["cluster", "namespaces", "limits", "replication", "strong"], at: "")

        guard let clusterNode = top["cluster"] else {
            throw ConfigurationError(field: "cluster", problem: "missing")
        }
        let cluster = try parseCluster(clusterNode)
        let namespaces = try parseNamespaces(top["namespaces"])
        var maxmemory = 0
        if let limits = top["limits"] {
            guard let mapping = limits.mapping else { throw ConfigurationError(field: "limits", problem: "expected a mapping") }
            try checkKeys(mapping, allowed: ["maxmemory"], at: "limits")
            if let value = mapping["maxmemory"] {
                let text = try scalar(value, at: "limits.maxmemory")
                guard let bytes = Units.parseBytes(text) else {
                    throw ConfigurationError(field: "limits.maxmemory", problem: "expected a size such as 256mb or 1gb, got '\(text)'")
                }
                maxmemory = bytes
            }
        }
        let replication = try parseReplication(top["replication"])
        let strong = try parseStrong(top["strong"])
        if let index = cluster.datacenters.firstIndex(where: { $0.nodes.count > 1 }) {
            // What a data center of several nodes does not serve yet (docs/CLUSTER.md). The
            // field names the user's list entry; the default namespace the loader adds (when no
            // namespace has the empty prefix) comes first and has none.
            let added = namespaces.count - (top["namespaces"]?.sequence?.count ?? 0)
            func field(_ namespace: Int, _ name: String) -> String {
                namespace < added ? "namespaces" : "namespaces[\(namespace - added)].\(name)"
            }
            let dcName = cluster.datacenters[index].name
            if let namespace = namespaces.firstIndex(where: { $0.consistency == .strong || !$0.strongKeys.isEmpty }) {
                throw ConfigurationError(
                    field: field(namespace, "consistency"),
                    problem: "strong keys are not served yet by a data center of several nodes ('\(dcName)')")
            }
            if maxmemory > 0, let namespace = namespaces.firstIndex(where: { $0.eviction == .lru }) {
                throw ConfigurationError(
                    field: field(namespace, "eviction"),
                    problem: "eviction is not served yet by a data center of several nodes ('\(dcName)'): replicas would evict different keys and anti-entropy would bring them back; with limits.maxmemory, declare every namespace (the default one too, prefix \"\") with `eviction: none`")
            }
        }
        return MeridianConfiguration(cluster: cluster, namespaces: namespaces, maxmemoryBytes: maxmemory, replication: replication, strong: strong)
    }

    private static func parseStrong(_ node: Node?) throws(ConfigurationError) -> StrongConfig {
        var config = StrongConfig()
        guard let node else { return config }
        guard let mapping = node.mapping else { throw ConfigurationError(field: "strong", problem: "expected a mapping") }
        try checkKeys(mapping, allowed: ["lease", "max_drift", "timeout"], at: "strong")
        func duration(_ name: String, _ range: ClosedRange<Int64>) throws(ConfigurationError) -> Int64? {
            guard let value = mapping[name] else { return nil }
            let text = try scalar(value, at: "strong.\(name)")
            guard let parsed = Units.parseDurationMs(text), range.contains(parsed) else {
                throw ConfigurationError(field: "strong.\(name)", problem: "expected a duration from \(range.lowerBound)ms to \(range.upperBound)ms (such as 500ms or 2s), got '\(text)'")
            }
            return parsed
        }
        if let lease = try duration("lease", StrongConfig.leaseMsRange) { config.leaseMs = lease }
        if let timeout = try duration("timeout", StrongConfig.timeoutMsRange) { config.timeoutMs = timeout }
        if let value = mapping["max_drift"] {
            let text = try scalar(value, at: "strong.max_drift")
            let number = text.hasSuffix("%") ? Double(text.dropLast()).map { $0 / 100 } : nil
            guard let drift = number, StrongConfig.maxDriftRange.contains(drift) else {
                throw ConfigurationError(field: "strong.max_drift", problem: "expected a percentage from 0% to 5% (such as 0.1%), got '\(text)'")
            }
            config.maxDrift = drift
        }
        return config
    }

    private static func parseReplication(_ node: Node?) throws(ConfigurationError) -> ReplicationConfig {
        var config = ReplicationConfig()
        guard let node else { return config }
        guard let mapping = node.mapping else { throw ConfigurationError(field: "replication", problem: "expected a mapping") }
        try checkKeys(mapping, allowed: ["batch_bytes_max", "batch_delay", "zstd_level", "log_bytes_max", "max_clock_offset", "reconnect_backoff"], at: "replication")
        func bytes(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
            guard let value = mapping[name] else { return nil }
            let text = try scalar(value, at: "replication.\(name)")
            guard let parsed = Units.parseBytes(text), range.contains(parsed) else {
                throw ConfigurationError(field: "replication.\(name)", problem: "expected a size from \(range.lowerBound) to \(range.upperBound) bytes (such as 1mb), got '\(text)'")
            }
            return parsed
        }
        func duration(_ text: String, _ field: String, _ range: ClosedRange<Int64>) throws(ConfigurationError) -> Int64 {
            guard let parsed = Units.parseDurationMs(text), range.contains(parsed) else {
                throw ConfigurationError(field: field, problem: "expected a duration from \(range.lowerBound)ms to \(range.upperBound)ms (such as 2ms or 5s), got '\(text)'")
            }
            return parsed
        }
        if let value = try bytes("batch_bytes_max", ReplicationConfig.batchBytesRange) { config.batchBytesMax = value }
        if let value = try bytes("log_bytes_max", ReplicationConfig.logBytesRange) { config.logBytesMax = value }
        if let node = mapping["batch_delay"] {
            config.batchDelayMs = try duration(try scalar(node, at: "replication.batch_delay"), "replication.batch_delay", ReplicationConfig.batchDelayMsRange)
        }
        if let node = mapping["max_clock_offset"] {
            config.maxClockOffsetMs = try duration(try scalar(node, at: "replication.max_clock_offset"), "replication.max_clock_offset", ReplicationConfig.maxClockOffsetMsRange)
        }
        if let node = mapping["zstd_level"] {
            let text = try scalar(node, at: "replication.zstd_level")
            guard let level = Int(text), ReplicationConfig.zstdLevelRange.contains(level) else {
                throw ConfigurationError(field: "replication.zstd_level", problem: "expected a level from 1 to 19, got '\(text)'")
            }
            config.zstdLevel = level
        }
        if let node = mapping["reconnect_backoff"] {
            let field = "replication.reconnect_backoff"
            let text = try scalar(node, at: field)
            guard let separator = text.firstRange(of: "..") else {
                throw ConfigurationError(field: field, problem: "expected MIN..MAX such as 100ms..5s, got '\(text)'")
            }
            let parts = [String(text[..<separator.lowerBound]), String(text[separator.upperBound...])]
            let low = try duration(parts[0], field, ReplicationConfig.reconnectBackoffMsRange)
            let high = try duration(parts[1], field, ReplicationConfig.reconnectBackoffMsRange)
            guard low <= high else { throw ConfigurationError(field: field, problem: "the minimum \(parts[0]) is above the maximum \(parts[1])") }
            config.reconnectBackoffMinMs = low
            config.reconnectBackoffMaxMs = high
        }
        return config
    }

    /// Reads and parses a configuration file.
    public static func load(path: String) throws(ConfigurationError) -> MeridianConfiguration {
        guard let text = readFile(path) else {
            throw ConfigurationError(field: "", problem: "cannot read configuration file '\(path)'")
        }
        return try parse(yaml: text)
    }

    // MARK: Sections

    private static func parseCluster(_ node: Node) throws(ConfigurationError) -> ClusterConfig {
        guard let mapping = node.mapping else { throw ConfigurationError(field: "cluster", problem: "expected a mapping") }
        try checkKeys(mapping, allowed: [
            "name", "partitions", "replication_factor", "datacenters", "failure_detection", "replica_timeout", "request_timeout",
            "anti_entropy_interval", "hints_bytes_max", "forwards_in_flight", "placement_voters", "move_retry", "grace", "dead_state_grace",
        ], at: "cluster")
        let name = try requiredName(mapping, "name", at: "cluster")
        let partitions = try optionalInt(mapping, "partitions", at: "cluster", range: 1...Partitioner.slotCount) ?? ClusterConfig.partitionsDefault
        // Partitions are contiguous ranges of Redis's 16,384 slots, so their count divides them.
        guard Partitioner.isValidPartitionCount(partitions) else {
            throw ConfigurationError(field: "cluster.partitions", problem: "expected a power of two from 1 to 16384 (such as 1024), got \(partitions)")
        }
        let replicationFactor = try optionalInt(mapping, "replication_factor", at: "cluster", range: 1...16) ?? 1
        guard let dcNode = mapping["datacenters"] else {
            throw ConfigurationError(field: "cluster.datacenters", problem: "missing")
        }
        guard let dcList = dcNode.sequence, !dcList.isEmpty else {
            throw ConfigurationError(field: "cluster.datacenters", problem: "expected a non-empty list")
        }
        var datacenters: [DatacenterConfig] = []
        var nodeNames: Set<String> = []
        var addresses: [String: String] = [:]
        for (dcIndex, dc) in dcList.enumerated() {
            let path = "cluster.datacenters[\(dcIndex)]"
            guard let dcMapping = dc.mapping else { throw ConfigurationError(field: path, problem: "expected a mapping") }
            try checkKeys(dcMapping, allowed: ["name", "witness", "nodes"], at: path)
            let dcName = try requiredName(dcMapping, "name", at: path)
            if datacenters.contains(where: { $0.name == dcName }) {
                throw ConfigurationError(field: "\(path).name", problem: "duplicate data center name '\(dcName)'")
            }
            var witness = false
            if let witnessNode = dcMapping["witness"] {
                guard let flag = witnessNode.bool else {
                    throw ConfigurationError(field: "\(path).witness", problem: "expected true or false")
                }
                witness = flag
            }
            guard let nodesList = dcMapping["nodes"]?.sequence, !nodesList.isEmpty else {
                throw ConfigurationError(field: "\(path).nodes", problem: "expected a non-empty list of nodes")
            }
            var nodes: [NodeConfig] = []
            for (nodeIndex, nodeEntry) in nodesList.enumerated() {
                let nodePath = "\(path).nodes[\(nodeIndex)]"
                guard let nodeMapping = nodeEntry.mapping else {
                    throw ConfigurationError(field: nodePath, problem: "expected a mapping")
                }
                try checkKeys(nodeMapping, allowed: ["name", "client", "peer", "spare"], at: nodePath)
                let nodeName = try requiredName(nodeMapping, "name", at: nodePath)
                guard nodeNames.insert(nodeName).inserted else {
                    throw ConfigurationError(field: "\(nodePath).name", problem: "duplicate node name '\(nodeName)'")
                }
                let client = try optionalAddress(nodeMapping, "client", at: nodePath)
                let peer = try optionalAddress(nodeMapping, "peer", at: nodePath)
                if witness && client != nil {
                    throw ConfigurationError(field: "\(nodePath).client", problem: "a witness node serves no clients")
                }
                if !witness && client == nil {
                    throw ConfigurationError(field: "\(nodePath).client", problem: "missing (every node of a full data center serves clients)")
                }
                if witness && peer == nil {
                    throw ConfigurationError(field: "\(nodePath).peer", problem: "missing (a witness is reached only by its peer address)")
                }
                for (kind, address) in [("client", client), ("peer", peer)] {
                    guard let address else { continue }
                    let field = "\(nodePath).\(kind)"
                    if let other = addresses[address.description] {
                        throw ConfigurationError(field: field, problem: "address \(address) is already used by \(other)")
                    }
                    addresses[address.description] = field
                }
                var spare = false
                if let node = nodeMapping["spare"] {
                    guard let flag = node.bool else {
                        throw ConfigurationError(field: "\(nodePath).spare", problem: "expected true or false")
                    }
                    spare = flag
                }
                nodes.append(NodeConfig(name: nodeName, client: client, peer: peer, spare: spare))
            }
            datacenters.append(DatacenterConfig(name: dcName, witness: witness, nodes: nodes))
        }
        guard datacenters.contains(where: { !$0.witness }) else {
            throw ConfigurationError(field: "cluster.datacenters", problem: "at least one data center must be a full (non-witness) data center")
        }
        guard datacenters.count <= Int(UInt16.max), datacenters.allSatisfy({ $0.nodes.count <= Int(UInt16.max) }) else {
            throw ConfigurationError(field: "cluster.datacenters", problem: "too many data centers or nodes")
        }
        // Scale-out inside a data center (docs/CLUSTER.md); what it does not serve yet is
        // refused rather than left to diverge.
        for (index, dc) in datacenters.enumerated() where dc.nodes.count > 1 {
            let path = "cluster.datacenters[\(index)]"
            if dc.witness {
                throw ConfigurationError(field: "\(path).nodes", problem: "a witness data center has one node")
            }
            if let nodeIndex = dc.nodes.firstIndex(where: { $0.peer == nil }) {
                throw ConfigurationError(
                    field: "\(path).nodes[\(nodeIndex)].peer",
                    problem: "missing (the nodes of a data center of several nodes reach each other at their peer addresses)")
            }
            let members = dc.nodes.filter { !$0.spare }.count
            if replicationFactor > members {
                throw ConfigurationError(
                    field: "cluster.replication_factor",
                    problem: "\(replicationFactor) replicas per data center, but data center '\(dc.name)' has \(members) nodes that are not spares")
            }
        }
        for (index, dc) in datacenters.enumerated() where dc.nodes.count == 1 && dc.nodes[0].spare {
            throw ConfigurationError(
                field: "cluster.datacenters[\(index)].nodes[0].spare", problem: "a data center's only node cannot be a spare")
        }
        if replicationFactor > 1 && !datacenters.contains(where: { $0.nodes.count > 1 }) {
            throw ConfigurationError(
                field: "cluster.replication_factor",
                problem: "\(replicationFactor) replicas per data center need a data center of several nodes; use 1")
        }
        var cluster = ClusterConfig(name: name, partitions: partitions, replicationFactor: replicationFactor, datacenters: datacenters)
        cluster.scaleOut = try parseScaleOut(mapping, scalesOut: datacenters.contains { $0.nodes.count > 1 })
        if let voters = cluster.scaleOut.placementVoters {
            // The voters commit the placement of the data center of several nodes; each must be
            // a member from the start (a spare joins later and could not vote for its own add).
            let scaledOut = datacenters.filter { $0.nodes.count > 1 }
            guard let dc = scaledOut.first else {
                throw ConfigurationError(field: "cluster.placement_voters", problem: "only a data center of several nodes has a placement to commit")
            }
            guard scaledOut.count == 1 else {
                throw ConfigurationError(
                    field: "cluster.placement_voters",
                    problem: "names the voters of one data center, and \(scaledOut.count) data centers have several nodes; leave it out (each data center's first three members vote on its placement)")
            }
            let members = cluster.firstMembers(of: dc)
            for (index, voter) in voters.enumerated() where !members.contains(voter) {
                throw ConfigurationError(
                    field: "cluster.placement_voters[\(index)]",
                    problem: "'\(voter)' is not a node of data center '\(dc.name)' that is not a spare")
            }
        }
        return cluster
    }

    /// The `cluster` section's settings for a data center of several nodes.
    /// `scalesOut`: some data center has several nodes (the settings' cross-checks matter then).
    private static func parseScaleOut(_ mapping: Node.Mapping, scalesOut: Bool) throws(ConfigurationError) -> ScaleOutConfig {
        var config = ScaleOutConfig()
        func duration(_ mapping: Node.Mapping, _ name: String, at path: String, _ range: ClosedRange<Int64>) throws(ConfigurationError) -> Int64? {
            guard let value = mapping[name] else { return nil }
            let text = try scalar(value, at: "\(path).\(name)")
            guard let parsed = Units.parseDurationMs(text), range.contains(parsed) else {
                throw ConfigurationError(field: "\(path).\(name)", problem: "expected a duration from \(range.lowerBound)ms to \(range.upperBound)ms (such as 500ms or 2s), got '\(text)'")
            }
            return parsed
        }
        let timeouts = ScaleOutConfig.timeoutMsRange
        if let detection = mapping["failure_detection"] {
            let path = "cluster.failure_detection"
            guard let settings = detection.mapping else { throw ConfigurationError(field: path, problem: "expected a mapping") }
            try checkKeys(settings, allowed: ["probe_interval", "probe_timeout", "indirect_probes", "suspect_timeout"], at: path)
            if let value = try duration(settings, "probe_interval", at: path, timeouts) { config.probeIntervalMs = value }
            if let value = try duration(settings, "probe_timeout", at: path, timeouts) { config.probeTimeoutMs = value }
            if let value = try duration(settings, "suspect_timeout", at: path, timeouts) { config.suspectTimeoutMs = value }
            if let value = try optionalInt(settings, "indirect_probes", at: path, range: 0...16) { config.indirectProbes = value }
            guard config.probeTimeoutMs < config.probeIntervalMs else {
                throw ConfigurationError(field: "\(path).probe_timeout", problem: "must be shorter than probe_interval (\(config.probeIntervalMs)ms)")
            }
        }
        if let value = try duration(mapping, "replica_timeout", at: "cluster", timeouts) { config.replicaTimeoutMs = value }
        if let value = try duration(mapping, "request_timeout", at: "cluster", timeouts) { config.requestTimeoutMs = value }
        guard config.replicaTimeoutMs < config.requestTimeoutMs else {
            throw ConfigurationError(field: "cluster.replica_timeout", problem: "must be shorter than request_timeout (\(config.requestTimeoutMs)ms)")
        }
        if let value = try duration(mapping, "anti_entropy_interval", at: "cluster", ScaleOutConfig.antiEntropyIntervalMsRange) {
            config.antiEntropyIntervalMs = value
        }
        if let node = mapping["hints_bytes_max"] {
            let text = try scalar(node, at: "cluster.hints_bytes_max")
            guard let bytes = Units.parseBytes(text), bytes >= 1 << 20 else {
                throw ConfigurationError(field: "cluster.hints_bytes_max", problem: "expected a size of at least 1mb, such as 256mb, got '\(text)'")
            }
            config.hintsBytesMax = bytes
        }
        if let value = try optionalInt(mapping, "forwards_in_flight", at: "cluster", range: 1...65_536) { config.forwardsInFlight = value }
        if let value = try duration(mapping, "move_retry", at: "cluster", timeouts) { config.moveRetryMs = value }
        if let value = try duration(mapping, "grace", at: "cluster", timeouts) { config.graceMs = value }
        if let value = try duration(mapping, "dead_state_grace", at: "cluster", ScaleOutConfig.deadStateGraceMsRange) {
            config.deadStateGraceMs = value
        }
        // Anti-entropy repairs a bounded number of keys per partition and pass: several passes
        // must fit in the grace (checked where there is something to collect).
        if scalesOut, config.deadStateGraceMs < 3 * config.antiEntropyIntervalMs {
            throw ConfigurationError(
                field: "cluster.dead_state_grace",
                problem: "\(config.deadStateGraceMs / 1000)s\(mapping["dead_state_grace"] == nil ? " (the default)" : "") must be at least three times anti_entropy_interval (\(config.antiEntropyIntervalMs / 1000)s): anti-entropy must bring a delete to every owner before its dead state is collected")
        }
        if let node = mapping["placement_voters"] {
            guard let list = node.sequence, !list.isEmpty else {
                throw ConfigurationError(field: "cluster.placement_voters", problem: "expected a non-empty list of node names")
            }
            var voters: [String] = []
            for (index, entry) in list.enumerated() {
                let name = try scalar(entry, at: "cluster.placement_voters[\(index)]")
                guard !voters.contains(name) else {
                    throw ConfigurationError(field: "cluster.placement_voters[\(index)]", problem: "'\(name)' is listed twice")
                }
                voters.append(name)
            }
            config.placementVoters = voters
        }
        return config
    }

    private static func parseNamespaces(_ node: Node?) throws(ConfigurationError) -> [NamespaceConfig] {
        guard let node else { return [.defaultNamespace] }
        guard let list = node.sequence else { throw ConfigurationError(field: "namespaces", problem: "expected a list") }
        var namespaces: [NamespaceConfig] = []
        for (index, entry) in list.enumerated() {
            let path = "namespaces[\(index)]"
            guard let mapping = entry.mapping else { throw ConfigurationError(field: path, problem: "expected a mapping") }
            try checkKeys(mapping, allowed: [
                "name", "prefix", "consistency", "durability", "eviction", "default_ttl", "strong_keys", "write_back_window", "audit_retention",
                "write_acks", "read_acks",
            ], at: path)
            let name = try requiredName(mapping, "name", at: path)
            if namespaces.contains(where: { $0.name == name }) {
                throw ConfigurationError(field: "\(path).name", problem: "duplicate namespace name '\(name)'")
            }
            guard let prefixNode = mapping["prefix"] else {
                throw ConfigurationError(field: "\(path).prefix", problem: "missing (use \"\" for the default namespace)")
            }
            let prefix = Array(try scalar(prefixNode, at: "\(path).prefix").utf8)
            guard prefix.count <= Limits.keyBytesMax else {
                throw ConfigurationError(field: "\(path).prefix", problem: "longer than the longest key (\(Limits.keyBytesMax) bytes)")
            }
            if let other = namespaces.first(where: { $0.prefix == prefix }) {
                throw ConfigurationError(field: "\(path).prefix", problem: "prefix already used by namespace '\(other.name)'")
            }
            let consistency: Consistency = try choice(mapping, "consistency", at: path) ?? .eventual
            let durability: Durability = try choice(mapping, "durability", at: path) ?? .writeBack
            let eviction: EvictionPolicy = try choice(mapping, "eviction", at: path) ?? .lru
            let writeAcks: AckCount = try choice(mapping, "write_acks", at: path) ?? .quorum
            let readAcks: AckCount = try choice(mapping, "read_acks", at: path) ?? .one
            var defaultTTL: Int64?
            if let ttlNode = mapping["default_ttl"] {
                let text = try scalar(ttlNode, at: "\(path).default_ttl")
                guard let ms = Units.parseDurationMs(text), ms > 0, ms <= Self.defaultTTLMsMax else {
                    throw ConfigurationError(field: "\(path).default_ttl", problem: "expected a positive duration up to 100 years, such as 30m, 10s or 500ms, got '\(text)'")
                }
                defaultTTL = ms
            }
            var writeBackWindowMs = NamespaceConfig.writeBackWindowMsDefault
            if let windowNode = mapping["write_back_window"] {
                let text = try scalar(windowNode, at: "\(path).write_back_window")
                let range = NamespaceConfig.writeBackWindowMsRange
                guard let ms = Units.parseDurationMs(text), range.contains(ms) else {
                    throw ConfigurationError(field: "\(path).write_back_window", problem: "expected a duration from \(range.lowerBound)ms to \(range.upperBound / 1000)s, such as 100ms or 1s, got '\(text)'")
                }
                guard durability == .writeBack else {
                    throw ConfigurationError(field: "\(path).write_back_window", problem: "only a write-back namespace has a write-back window (durability is \(durability.rawValue))")
                }
                writeBackWindowMs = ms
            }
            var auditRetentionMs: Int64?
            if let retentionNode = mapping["audit_retention"] {
                let text = try scalar(retentionNode, at: "\(path).audit_retention")
                guard let ms = Units.parseDurationMs(text), ms <= NamespaceConfig.auditRetentionMsMax else {
                    throw ConfigurationError(field: "\(path).audit_retention", problem: "expected a duration up to 3650d, such as 7d or 12h (0 turns auditing off), got '\(text)'")
                }
                guard ms == 0 || durability != .memory else {
                    throw ConfigurationError(field: "\(path).audit_retention", problem: "a memory namespace keeps nothing on disk, so it has no audit log (make it write-back or write-through, or set 0)")
                }
                auditRetentionMs = ms
            }
            var strongKeys: [GlobPattern] = []
            if let globsNode = mapping["strong_keys"] {
                guard let globs = globsNode.sequence else {
                    throw ConfigurationError(field: "\(path).strong_keys", problem: "expected a list of glob patterns")
                }
                for (globIndex, globNode) in globs.enumerated() {
                    let field = "\(path).strong_keys[\(globIndex)]"
                    let text = try scalar(globNode, at: field)
                    do {
                        strongKeys.append(try GlobPattern(text))
                    } catch {
                        throw ConfigurationError(field: field, problem: "pattern too long or complex (max \(Limits.patternBytesMax) bytes, \(Limits.patternTokensMax) tokens)")
                    }
                }
                if consistency == .strong && !strongKeys.isEmpty {
                    throw ConfigurationError(field: "\(path).strong_keys", problem: "the whole namespace is already strong")
                }
            }
            namespaces.append(NamespaceConfig(
                name: name, prefix: prefix, consistency: consistency, durability: durability,
                eviction: eviction, defaultTTLMs: defaultTTL, strongKeys: strongKeys,
                writeBackWindowMs: writeBackWindowMs, auditRetentionMs: auditRetentionMs, writeAcks: writeAcks, readAcks: readAcks))
        }
        if !namespaces.contains(where: { $0.prefix.isEmpty }) {
            if namespaces.contains(where: { $0.name == NamespaceConfig.defaultNamespace.name }) {
                throw ConfigurationError(field: "namespaces", problem: "the namespace named 'default' must have the empty prefix \"\"")
            }
            namespaces.insert(.defaultNamespace, at: 0)
        }
        guard namespaces.count <= Int(UInt16.max) else {
            throw ConfigurationError(field: "namespaces", problem: "too many namespaces")
        }
        return namespaces
    }

    // MARK: Field helpers

    private static func checkKeys(_ mapping: Node.Mapping, allowed: Set<String>, at path: String) throws(ConfigurationError) {
        for key in mapping.keys {
            guard let name = key.string else {
                throw ConfigurationError(field: path, problem: "field names must be strings")
            }
            if !allowed.contains(name) {
                let field = path.isEmpty ? name : "\(path).\(name)"
                throw ConfigurationError(field: field, problem: "unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
    }

    private static func scalar(_ node: Node, at path: String) throws(ConfigurationError) -> String {
        guard let scalar = node.scalar else { throw ConfigurationError(field: path, problem: "expected a single value") }
        return scalar.string
    }

    private static func requiredName(_ mapping: Node.Mapping, _ key: String, at path: String) throws(ConfigurationError) -> String {
        guard let node = mapping[key] else { throw ConfigurationError(field: "\(path).\(key)", problem: "missing") }
        let text = try scalar(node, at: "\(path).\(key)")
        guard !text.isEmpty, text.utf8.count <= 64,
              text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: ":") && $0 != UInt8(ascii: "=") })
        else {
            throw ConfigurationError(field: "\(path).\(key)", problem: "expected 1 to 64 printable characters without spaces, ',', ':' or '=', got '\(text)'")
        }
        return text
    }

    private static func optionalInt(_ mapping: Node.Mapping, _ key: String, at path: String, range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let node = mapping[key] else { return nil }
        let text = try scalar(node, at: "\(path).\(key)")
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError(field: "\(path).\(key)", problem: "expected an integer from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
        }
        return value
    }

    private static func optionalAddress(_ mapping: Node.Mapping, _ key: String, at path: String) throws(ConfigurationError) -> HostPort? {
        guard let node = mapping[key] else { return nil }
        let text = try scalar(node, at: "\(path).\(key)")
        guard let address = HostPort(parsing: text) else {
            throw ConfigurationError(field: "\(path).\(key)", problem: "expected host:port such as 127.0.0.1:7101, got '\(text)'")
        }
        return address
    }

    private static func choice<Value: RawRepresentable & CaseIterable>(
        _ mapping: Node.Mapping, _ key: String, at path: String
    ) throws(ConfigurationError) -> Value? where Value.RawValue == String {
        guard let node = mapping[key] else { return nil }
        let text = try scalar(node, at: "\(path).\(key)")
        guard let value = Value(rawValue: text) else {
            let options = Value.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(field: "\(path).\(key)", problem: "expected one of \(options), got '\(text)'")
        }
        return value
    }

    /// Reads a whole file with the C library (no Foundation in this module).
    private static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let read = fread(&chunk, 1, chunk.count, file)
            if read > 0 { bytes.append(contentsOf: chunk[0..<read]) }
            if read < chunk.count { break }
            if bytes.count > 16 * 1_048_576 { return nil }  // no sane configuration is this large
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
