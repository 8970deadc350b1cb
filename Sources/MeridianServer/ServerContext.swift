import Logging
import MeridianCore
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
    /// The data directory (persistence arrives with durable storage).
    public let dataDirectory: String
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
        eventLoopCount: Int
    ) {
        self.configuration = configuration
        self.eventLoopCount = max(1, eventLoopCount)
        self.database = Database(
            namespaces: NamespaceTable(configuration.namespaces),
            partitions: configuration.cluster.partitions, origin: origin,
            maxmemoryBytes: configuration.maxmemoryBytes, eventLoopCount: max(1, eventLoopCount))
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

    /// The Redis version Meridian's command semantics follow; clients read it from HELLO and INFO.
    public static let redisCompatibleVersion = "7.2.4"
    /// Meridian's own version.
    public static let meridianVersion = "0.1.0"
}
