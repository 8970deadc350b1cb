import Logging
import MeridianCluster
import MeridianCore
import MeridianStorage
import NIOConcurrencyHelpers
import Synchronization

/// What every connection of a node shares: the database, the client registry and the facts
/// INFO and CONFIG report.
public final class ServerContext: Sendable {
    public let database: Database
    public let clients = ClientRegistry()
    public let configuration: MeridianConfiguration
    /// The name of this node in the configuration.
    public let nodeName: String
    /// The data center this node belongs to.
    public let datacenterName: String
    /// Where this node listens for clients (the port is the bound one).
    public let listenAddress: NIOLockedValueBox<HostPort>
    /// The configuration file, if any.
    public let configFile: String?
    /// The data directory (the RocksDB store lives in its `store` subdirectory).
    public let dataDirectory: String
    /// How far reloading the durable namespaces has come.
    public let warmUp: WarmUpProgress
    /// Loads keys from disk for commands that miss in memory; nil without durable namespaces.
    public let diskReader: DiskReader?
    /// Links to other data centers' nodes, when the configuration has any (set at start).
    public let peerLinks = NIOLockedValueBox<PeerLinks?>(nil)
    /// This node's part of the strong protocol (nil when no namespace is strong).
    public let strong: StrongEngine?
    /// This node's part of its data center's cluster: its replicas, hints, anti-entropy and
    /// forwarding to primaries (docs/CLUSTER.md); nil in a data center of one node.
    public let cluster: ClusterEngine?
    public let startUnixMs: Int64
    public let startMonotonicNs: UInt64
    public let processID: Int
    public let logger: Logger
    /// Event loop threads serving clients.
    public let eventLoopCount: Int
    /// Most client connections at once; more are refused with Redis's error (`maxclients`).
    public let maxClients = Synchronization.Atomic<Int>(Limits.clientsMaxDefault)

    public init(
        configuration: MeridianConfiguration, nodeName: String, datacenterName: String, origin: ReplicaID,
        listenAddress: HostPort, configFile: String?, dataDirectory: String, processID: Int, logger: Logger,
        eventLoopCount: Int, storage: StorageEngine? = nil, strong: StrongEngine? = nil, placementLog: StrongEngine? = nil,
        savedPlacement: Placement? = nil
    ) {
        self.configuration = configuration
        self.strong = strong
        self.eventLoopCount = max(1, eventLoopCount)
        let fullDatacenters = configuration.cluster.datacenters.filter { !$0.witness }.count
        // Deltas flow to every other full data center that has a node with a peer address.
        let datacenters = configuration.cluster.datacenters
        let peerDatacenters = datacenters.enumerated().filter { index, dc in
            index != Int(origin.datacenter) && !dc.witness && dc.nodes.contains { $0.peer != nil }
        }.map(\.element.name)
        let peerNodes = datacenters.enumerated().flatMap { index, dc in
            index == Int(origin.datacenter) || dc.witness ? []
                : dc.nodes.enumerated().filter { $0.element.peer != nil }.map { ReplicaID(datacenter: UInt16(index), node: UInt16($0.offset)) }
        }
        let isFullNode = Int(origin.datacenter) < datacenters.count && !datacenters[Int(origin.datacenter)].witness
        let scalesOut = isFullNode && datacenters[Int(origin.datacenter)].nodes.count > 1
        let replicator: Replicator? = peerDatacenters.isEmpty || !isFullNode ? nil : Replicator(
            me: origin, peerDatacenters: peerDatacenters, peerNodes: peerNodes,
            logBytesMax: configuration.replication.logBytesMax, maxClockOffsetMs: configuration.replication.maxClockOffsetMs,
            firstSequence: Replicator.startingSequence(nowUnixMs: SystemClock.nowUnixMs()))
        let database = Database(
            namespaces: NamespaceTable(configuration.namespaces),
            origin: origin,
            maxmemoryBytes: configuration.maxmemoryBytes, eventLoopCount: max(1, eventLoopCount),
            storage: storage, keepsTombstones: fullDatacenters > 1, replicator: replicator,
            clusterPartitionCount: scalesOut ? configuration.cluster.partitions : nil)
        self.cluster = scalesOut ? ClusterEngine(
            configuration: configuration, datacenter: Int(origin.datacenter), node: Int(origin.node), database: database,
            settings: Self.clusterSettings(configuration.cluster.scaleOut), dataDirectory: dataDirectory, savedPlacement: savedPlacement,
            placementLog: placementLog, logger: logger) : nil
        let warmUp = WarmUpProgress()
        self.database = database
        self.warmUp = warmUp
        self.diskReader = storage == nil ? nil : DiskReader(database: database, progress: warmUp, logger: logger)
        self.nodeName = nodeName
        self.datacenterName = datacenterName
        self.listenAddress = NIOLockedValueBox(listenAddress)
        self.configFile = configFile
        self.dataDirectory = dataDirectory
        self.startUnixMs = SystemClock.nowUnixMs()
        self.startMonotonicNs = SystemClock.monotonicNs()
        self.processID = processID
        self.logger = logger
    }

    /// The core's settings from the configuration's `cluster` section.
    static func clusterSettings(_ config: ScaleOutConfig) -> ClusterSettings {
        var settings = ClusterSettings()
        settings.failureDetection = FailureDetectionSettings(
            probeIntervalMs: config.probeIntervalMs, probeTimeoutMs: config.probeTimeoutMs, indirectProbes: config.indirectProbes,
            suspectTimeoutMs: config.suspectTimeoutMs)
        settings.replicaTimeoutMs = config.replicaTimeoutMs
        settings.requestTimeoutMs = config.requestTimeoutMs
        settings.antiEntropyIntervalMs = config.antiEntropyIntervalMs
        settings.hintsBytesMax = config.hintsBytesMax
        settings.moveRetryMs = config.moveRetryMs
        settings.graceMs = config.graceMs
        return settings
    }

    /// The Redis version Meridian's command semantics follow; clients read it from HELLO and INFO.
    public static let redisCompatibleVersion = "7.2.4"
    /// Meridian's own version.
    public static let meridianVersion = "0.1.0"
}
