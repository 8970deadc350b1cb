/// A `host:port` pair from the configuration file.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (IPv6 hosts in brackets: `[::1]:7101`).
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// One `meridian-server` process in the configuration.
public struct NodeConfig: Sendable, Equatable {
    public var name: String
    /// Where clients connect; witness nodes have none.
    public var client: HostPort?
    /// Where other nodes connect.
    public var peer: HostPort?
    /// Listed so that every node of its data center knows its addresses, but not a member of
    /// the data center's first placement: it owns nothing until `meridian cluster add-node`
    /// adds it (docs/CLUSTER.md, "Rebalancing").
    public var spare: Bool

    public init(name: String, client: HostPort?, peer: HostPort?, spare: Bool = false) {
        self.name = name
        self.client = client
        self.peer = peer
        self.spare = spare
    }
}

/// One data center (region) in the configuration.
public struct DatacenterConfig: Sendable, Equatable {
    public var name: String
    /// A witness stores no user data; it only votes for strong namespaces.
    public var witness: Bool
    public var nodes: [NodeConfig]

    public init(name: String, witness: Bool = false, nodes: [NodeConfig]) {
        self.name = name
        self.witness = witness
        self.nodes = nodes
    }
}

/// The `cluster` section of the configuration.
public struct ClusterConfig: Sendable, Equatable {
    public var name: String
    /// Fixed for the cluster's life.
    public var partitions: Int
    /// Replicas of each partition inside each full data center.
    public var replicationFactor: Int
    public var datacenters: [DatacenterConfig]
    /// Timeouts and bounds of a data center of several nodes.
    public var scaleOut = ScaleOutConfig()

    public init(name: String, partitions: Int, replicationFactor: Int, datacenters: [DatacenterConfig]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.datacenters = datacenters
    }

    /// The default number of partitions.
    public static let partitionsDefault = 1024

    /// The nodes of the data center's first placement: its nodes but the spares, in order.
    public func firstMembers(of datacenter: DatacenterConfig) -> [String] {
        datacenter.nodes.filter { !$0.spare }.map(\.name)
    }

    /// The nodes that commit the data center's placement (docs/CLUSTER.md, "Rebalancing").
    public func placementVoters(of datacenter: DatacenterConfig) -> [String] {
        scaleOut.placementVoters ?? Array(firstMembers(of: datacenter).prefix(3))
    }
}

/// The `cluster` section's settings for a data center of several nodes (docs/CLUSTER.md,
/// "Configuration"); the defaults are the design's.
public struct ScaleOutConfig: Sendable, Equatable {
    /// SWIM: one probe per `probe_interval`; a direct ack within `probe_timeout`, else
    /// `indirect_probes` others probe; a suspect that does not refute within `suspect_timeout` is down.
    public var probeIntervalMs: Int64 = 500
    public var probeTimeoutMs: Int64 = 200
    public var indirectProbes = 3
    public var suspectTimeoutMs: Int64 = 3_000
    /// A replica that has not acknowledged a write after this long gets it again and a hint.
    public var replicaTimeoutMs: Int64 = 500
    /// A command (forwarded, or waiting for its replicas) fails after this long.
    public var requestTimeoutMs: Int64 = 2_000
    /// One anti-entropy pass over every partition this node holds, spread evenly.
    public var antiEntropyIntervalMs: Int64 = 600_000
    /// Bytes of hints a node keeps for replicas that are down; past it the oldest go.
    public var hintsBytesMax = 256 << 20
    /// Commands one link to another node waits for replies to.
    public var forwardsInFlight = 1_024
    /// The nodes that commit the data center's placement (a Paxos group); nil: the first three
    /// members of the first placement (fewer when it has fewer). Never removed.
    public var placementVoters: [String]?
    /// A move's stream that made no progress for this long is asked again.
    public var moveRetryMs: Int64 = 1_000
    /// A node drops a partition it no longer owns once its placement was stable this long.
    public var graceMs: Int64 = 5_000
    /// A dead state (a deleted or expired key's record) is collected once it is this old
    /// (docs/CLUSTER.md, "Collecting dead states"): hints, rebuilds and anti-entropy must have
    /// brought the delete to every owner by then.
    public var deadStateGraceMs: Int64 = 86_400_000
    public static let deadStateGraceMsRange: ClosedRange<Int64> = 1_000...(365 * 86_400_000)

    public static let timeoutMsRange: ClosedRange<Int64> = 10...600_000
    public static let antiEntropyIntervalMsRange: ClosedRange<Int64> = 100...(7 * 86_400_000)

    public init() {}
}

/// The whole configuration file: cluster, namespaces and limits.
public struct MeridianConfiguration: Sendable {
    public var cluster: ClusterConfig
    /// Always holds exactly one namespace with the empty prefix.
    public var namespaces: [NamespaceConfig]
    /// `limits.maxmemory` in bytes; 0 means no limit.
    public var maxmemoryBytes: Int
    /// The `replication` section (docs/REPLICATION.md); defaults when absent.
    public var replication: ReplicationConfig
    /// The `strong` section (docs/CONSISTENCY.md, "Configuration"); defaults when absent.
    public var strong: StrongConfig

    public init(
        cluster: ClusterConfig, namespaces: [NamespaceConfig], maxmemoryBytes: Int, replication: ReplicationConfig = ReplicationConfig(),
        strong: StrongConfig = StrongConfig()
    ) {
        self.cluster = cluster
        self.namespaces = namespaces
        self.maxmemoryBytes = maxmemoryBytes
        self.replication = replication
        self.strong = strong
    }

    /// The port a configuration-less node listens on.
    public static let standalonePort = 7379

    /// The configuration of a node started without `--config`: one data center, one node on
    /// `127.0.0.1:7379`, the default namespace only, no memory limit.
    public static func standalone() -> MeridianConfiguration {
        let node = NodeConfig(name: "local-1", client: HostPort(host: "127.0.0.1", port: standalonePort), peer: nil)
        return MeridianConfiguration(
            cluster: ClusterConfig(
                name: "local", partitions: ClusterConfig.partitionsDefault, replicationFactor: 1,
                datacenters: [DatacenterConfig(name: "local", nodes: [node])]),
            namespaces: [.defaultNamespace],
            maxmemoryBytes: 0)
    }

    /// Finds a node by name: its data center index, node index and configuration.
    public func locateNode(named name: String) -> (datacenter: Int, node: Int, config: NodeConfig)? {
        for (dcIndex, dc) in cluster.datacenters.enumerated() {
            if let nodeIndex = dc.nodes.firstIndex(where: { $0.name == name }) {
                return (dcIndex, nodeIndex, dc.nodes[nodeIndex])
            }
        }
        return nil
    }
}

/// Leases and bounds of strong namespaces' Paxos commits (docs/CONSISTENCY.md).
public struct StrongConfig: Sendable, Equatable {
    /// How long a voter's lease grant lasts on its own clock (`lease`): 100 ms to 60 s.
    public var leaseMs: Int64 = 2_000
    /// The clock-rate error the lease arithmetic allows (`max_drift`, as a percentage such as
    /// `0.1%`): 0 to 5 %.
    public var maxDrift = 0.001
    /// A strong command's bound before `-TRYAGAIN` / `-UNCERTAIN` (`timeout`): 10 ms to 60 s.
    public var timeoutMs: Int64 = 2_000

    public static let leaseMsRange: ClosedRange<Int64> = 100...60_000
    public static let maxDriftRange = 0.0...0.05
    public static let timeoutMsRange: ClosedRange<Int64> = 10...60_000

    public init() {}
}

/// How delta streams between data centers are batched, compressed and retried
/// (docs/REPLICATION.md, "Configuration"). Parsed and validated now; used once the
/// replication links land.
public struct ReplicationConfig: Sendable, Equatable {
    /// Raw bytes per batch (`batch_bytes_max`): 4 KiB to 1 MiB.
    public var batchBytesMax = 1 << 20
    /// How long a batch waits to fill (`batch_delay`): 0 to 1 s.
    public var batchDelayMs: Int64 = 2
    /// zstd level (`zstd_level`): 1 to 19.
    public var zstdLevel = 3
    /// In-memory outbound log before a lagging peer needs a snapshot (`log_bytes_max`): 1 MiB to 16 GiB.
    public var logBytesMax = 64 << 20
    /// Incoming stamps further ahead than this are refused (`max_clock_offset`): 1 ms to 60 s.
    public var maxClockOffsetMs: Int64 = 500
    /// Reconnect backoff bounds (`reconnect_backoff: 100ms..5s`).
    public var reconnectBackoffMinMs: Int64 = 100
    public var reconnectBackoffMaxMs: Int64 = 5_000

    public static let batchBytesRange = 4096...(1 << 20)
    public static let batchDelayMsRange: ClosedRange<Int64> = 0...1_000
    public static let zstdLevelRange = 1...19
    public static let logBytesRange = (1 << 20)...(16 << 30)
    public static let maxClockOffsetMsRange: ClosedRange<Int64> = 1...60_000
    public static let reconnectBackoffMsRange: ClosedRange<Int64> = 1...600_000

    public init() {}
}
