import ArgumentParser
import Dispatch
import Logging
import MeridianCluster
import MeridianConfig
import MeridianCore
import MeridianPaxos
import MeridianServer
import MeridianStorage
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `meridian-server`: runs one Meridian node.
struct MeridianServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meridian-server",
        abstract: "Runs one Meridian node: a Redis-protocol, geo-replicated key-value store and cache.",
        discussion: """
            With no --config, serves a single-node store on 127.0.0.1:7379 with the default \
            namespace only. With --config, runs the node named by --node (or the only node that \
            serves clients) and listens on its `client` address unless --bind/--port override it.
            """)

    @Option(name: .long, help: "The cluster configuration file (YAML).")
    var config: String?

    @Option(name: .long, help: "This node's name in the configuration.")
    var node: String?

    @Option(name: .customLong("data-dir"), help: "Directory for this node's data.")
    var dataDir: String = "./data"

    @Option(name: .long, help: "Client port (0 picks a free port and logs it).")
    var port: Int?

    @Option(name: .long, help: "Client bind address.")
    var bind: String?

    @Option(name: .long, help: "Event loop threads (default: one per core).")
    var threads: Int?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() throws {
        var logger = Logger(label: "meridian")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        let configuration: MeridianConfiguration
        do {
            configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? .standalone()
        } catch {
            throw ValidationError("configuration refused: \(error)")
        }
        let located: (datacenter: Int, node: Int, config: NodeConfig)
        if let node {
            guard let found = configuration.locateNode(named: node) else {
                throw ValidationError("--node \(node): no node of that name in the configuration")
            }
            located = found
        } else {
            let serving = configuration.cluster.datacenters.enumerated().flatMap { dc in
                dc.element.nodes.enumerated().filter { $0.element.client != nil }.map { (dc.offset, $0.offset, $0.element) }
            }
            guard serving.count == 1 else {
                throw ValidationError("--node is required: the configuration has \(serving.count) nodes that serve clients")
            }
            located = serving[0]
        }
        let datacenter = configuration.cluster.datacenters[located.datacenter]
        let hasPeers = configuration.cluster.datacenters.enumerated().contains { $0.offset != located.datacenter && $0.element.nodes.contains { $0.peer != nil } }
        let strong = try Self.startStrongEngine(configuration: configuration, datacenter: located.datacenter, dataDir: dataDir, logger: logger)
        if datacenter.witness {
            // A witness serves no clients and stores no user data: it votes in the strong
            // namespaces' Paxos rounds (keeping promises and accepted entries until every full
            // data center has learned them) over its peer links.
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let links = PeerLinks(configuration: configuration, datacenter: located.datacenter, node: located.node, group: group, logger: logger, strong: strong)
            strong?.attach { peer, payloads in links.sendStrong(to: peer, payloads) }
            try links.start(peerAddress: located.config.peer)
            logger.info(strong == nil ? "witness ready: no namespace is strong, so it has no votes to cast" : "witness ready: voting for strong namespaces", metadata: ["node": "\(located.config.name)"])
            for signalNumber in [SIGTERM, SIGINT] { signal(signalNumber, SIG_IGN) }
            let queue = DispatchQueue(label: "meridian.signals")
            var witnessSources: [DispatchSourceSignal] = []
            for signalNumber in [SIGTERM, SIGINT] {
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
                source.setEventHandler {
                    links.stop()
                    logger.info("stopped")
                    Glibc.exit(0)
                }
                source.resume()
                witnessSources.append(source)
            }
            while true { pause() }
        }
        guard let client = located.config.client else {
            throw ValidationError("--node \(located.config.name) has no client address")
        }
        let bindHost = bind ?? client.host
        let bindPort = port ?? client.port
        guard (0...65535).contains(bindPort) else { throw ValidationError("--port must be 0...65535") }

        // The store is opened only when some namespace is durable: `memory` never touches disk.
        var storage: StorageEngine?
        if configuration.namespaces.contains(where: { $0.durability != .memory }) {
            let storePath = dataDir + "/store"
            do {
                try Self.makeDirectories(dataDir)
                let store = try RocksDBStore(path: storePath)
                let fatalLogger = logger
                storage = StorageEngine(store: store, logger: logger) { reason in
                    // A write that may not be on disk is never acknowledged: stop the node.
                    fatalLogger.critical("stopping: the disk cannot be trusted with acknowledged writes", metadata: ["error": "\(reason)"])
                    // _exit: no atexit handlers or static destructors, which could block on
                    // the store's threads; nothing may be flushed to a disk that just failed.
                    fflush(nil)
                    Glibc._exit(70)
                }
            } catch {
                throw ValidationError("data directory \(dataDir): \(error)")
            }
            logger.info("durable store open", metadata: [
                "path": "\(storePath)",
                "namespaces": "\(configuration.namespaces.filter { $0.durability != .memory }.map { "\($0.name)=\($0.durability.rawValue)" }.joined(separator: ","))",
            ])
        }

        // Signals are taken over before the listener opens, so a SIGTERM that arrives right
        // after the "ready" line (or even before it) always shuts down gracefully.
        let running = NIOLockedValueBox<MeridianNode?>(nil)
        let signalQueue = DispatchQueue(label: "meridian.signals")
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: signalQueue)
            source.setEventHandler {
                running.withLockedValue { $0 }?.shutdownGracefully()
                Glibc.exit(0)
            }
            source.resume()
            sources.append(source)
        }
        signal(SIGPIPE, SIG_IGN)

        let context = ServerContext(
            configuration: configuration, nodeName: located.config.name, datacenterName: datacenter.name,
            origin: ReplicaID(datacenter: UInt16(located.datacenter), node: UInt16(located.node)),
            listenAddress: HostPort(host: bindHost, port: bindPort), configFile: config,
            dataDirectory: dataDir, processID: Int(getpid()), logger: logger,
            eventLoopCount: threads ?? System.coreCount, storage: storage, strong: strong,
            placementLog: try Self.startPlacementLog(configuration: configuration, located: located, dataDir: dataDir, logger: logger),
            savedPlacement: try Self.savedPlacement(configuration: configuration, located: located, dataDir: dataDir))
        if let cluster = context.cluster {
            // A node of a data center of several nodes answers its peers from memory (its trees
            // cover memory only): it reloads its durable keys before it joins them and serves.
            if let reader = context.diskReader {
                WarmUp.start(database: context.database, progress: context.warmUp, reader: reader, logger: logger)
                while context.warmUp.loading.load(ordering: .relaxed) { usleep(10_000) }
            }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let links = PeerLinks(
                configuration: configuration, datacenter: located.datacenter, node: located.node, group: group, logger: logger,
                database: context.database, diskReader: context.diskReader, warmUp: context.warmUp, strong: strong, cluster: cluster)
            let forwarded = ForwardedCommands(server: context, loop: group.next())
            cluster.attach { peer, payloads in links.sendCluster(to: peer, payloads) }
            cluster.attach { commands, protocolVersion, reply in forwarded.run(commands, protocolVersion: protocolVersion, reply: reply) }
            cluster.start(tickingOn: group.next())
            try links.start(peerAddress: located.config.peer)
            context.peerLinks.withLockedValue { $0 = links }
            logger.info("cluster node started", metadata: [
                "placement": "\(cluster.currentPlacement)", "replication_factor": "\(configuration.cluster.replicationFactor)",
                "partitions": "\(configuration.cluster.partitions)", "placement_voters": "\(cluster.voterNames.joined(separator: ","))",
            ])
        }
        let node: MeridianNode
        do {
            node = try MeridianNode(context: context, bind: bindHost, port: bindPort)
        } catch {
            storage?.shutdown()
            throw error
        }
        running.withLockedValue { $0 = node }
        logger.info(
            "ready to accept connections",
            metadata: [
                "address": "\(node.boundAddress)", "node": "\(located.config.name)", "datacenter": "\(datacenter.name)",
                "namespaces": "\(configuration.namespaces.map(\.name).joined(separator: ","))",
                "maxmemory": "\(configuration.maxmemoryBytes)",
            ])
        // Links to the other data centers: deltas flow both ways between full nodes.
        if hasPeers && context.cluster == nil {
            let links = PeerLinks(
                configuration: configuration, datacenter: located.datacenter, node: located.node,
                group: MultiThreadedEventLoopGroup(numberOfThreads: 1), logger: logger,
                database: context.database, diskReader: context.diskReader, warmUp: context.warmUp, strong: strong)
            strong?.attach { peer, payloads in links.sendStrong(to: peer, payloads) }
            try links.start(peerAddress: located.config.peer)
            context.peerLinks.withLockedValue { $0 = links }
        }
        // The node serves while it reloads the durable namespaces; misses ask the disk meanwhile.
        if let reader = context.diskReader, context.cluster == nil {
            WarmUp.start(database: context.database, progress: context.warmUp, reader: reader, logger: logger)
        }
        try node.waitUntilClosed()
        // Only reached when the listener closes without a signal: wait for the handler to exit.
        while true { pause() }
    }
}

extension MeridianServerCommand {
    /// The placement this node saved before it stopped, when it belongs to a data center of
    /// several nodes.
    static func savedPlacement(
        configuration: MeridianConfiguration, located: (datacenter: Int, node: Int, config: NodeConfig), dataDir: String
    ) throws -> Placement? {
        guard configuration.cluster.datacenters[located.datacenter].nodes.count > 1 else { return nil }
        do {
            return try ClusterEngine.loadPlacement(dataDirectory: dataDir, configuration: configuration)
        } catch {
            throw ValidationError("data directory \(dataDir): \(error)")
        }
    }

    /// The placement log's part on a placement voter (docs/CLUSTER.md, "Rebalancing"): a Paxos
    /// group of the voters, one partition, its store at `<data_dir>/placement`. Nil on other nodes.
    static func startPlacementLog(
        configuration: MeridianConfiguration, located: (datacenter: Int, node: Int, config: NodeConfig), dataDir: String, logger: Logger
    ) throws -> StrongEngine? {
        let datacenter = configuration.cluster.datacenters[located.datacenter]
        guard datacenter.nodes.count > 1, !datacenter.witness else { return nil }
        let voters = configuration.cluster.placementVoters(of: datacenter)
        guard let me = voters.firstIndex(of: located.config.name) else { return nil }
        let path = dataDir + "/placement"
        // A voter that forgot its votes could let the log commit two placements for one epoch:
        // one that learned a placement change but has no log lost it (a wiped or replaced
        // store). Changing the voters is not built, so it must not vote again.
        if access(path, F_OK) != 0 && access(dataDir + "/cluster-placement", F_OK) == 0 {
            throw ValidationError("data directory \(dataDir): this placement voter's log (\(path)) is missing but the node has learned placement changes: a voter that lost its votes must not vote again (changing cluster.placement_voters is not built; restore the directory)")
        }
        let paxos = StrongEngine.paxosConfiguration(
            voterCount: voters.count, learners: Array(voters.indices), me: me, partitionCount: 1, timing: configuration)
        let engine = try startPaxosEngine(store: path, dataDir: dataDir, what: "the placement log", logger: logger) { store, onFatal in
            try StrongEngine(voterNames: voters, paxos: paxos, store: store, logger: logger, onFatal: onFatal)
        }
        logger.info("placement log started", metadata: ["store": "\(path)", "voters": "\(voters.joined(separator: ","))"])
        return engine
    }

    /// The strong protocol's engine and its store (`<data_dir>/paxos`), when some namespace
    /// has strong keys; nil otherwise (nothing of it runs, nothing touches the disk).
    static func startStrongEngine(configuration: MeridianConfiguration, datacenter: Int, dataDir: String, logger: Logger) throws -> StrongEngine? {
        guard NamespaceTable(configuration.namespaces).hasStrongKeys else { return nil }
        let path = dataDir + "/paxos"
        let engine = try startPaxosEngine(store: path, dataDir: dataDir, what: "the Paxos store", logger: logger) { store, onFatal in
            try StrongEngine(configuration: configuration, datacenter: datacenter, store: store, logger: logger, onFatal: onFatal)
        }
        logger.info("strong engine started", metadata: [
            "store": "\(path)", "voters": "\(engine.voterNames.joined(separator: ","))",
            "lease_ms": "\(configuration.strong.leaseMs)", "timeout_ms": "\(configuration.strong.timeoutMs)",
        ])
        return engine
    }

    /// Opens the RocksDB store at `path`, makes an engine on it whose fatal error (a vote that
    /// could not be made durable) stops the process, and starts its tick.
    static func startPaxosEngine(
        store path: String, dataDir: String, what: String, logger: Logger,
        make: (DurableStore, @escaping @Sendable (String) -> Void) throws -> StrongEngine
    ) throws -> StrongEngine {
        let engine: StrongEngine
        do {
            try makeDirectories(dataDir)
            let store = try RocksDBStore(path: path)
            let fatalLogger = logger
            engine = try make(store) { reason in
                fatalLogger.critical("stopping: a Paxos vote could not be made durable", metadata: ["store": "\(path)", "error": "\(reason)"])
                fflush(nil)
                Glibc._exit(70)
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            throw ValidationError("data directory \(dataDir): \(what) at \(path) cannot be used: \(error)")
        }
        engine.start(tickingOn: MultiThreadedEventLoopGroup(numberOfThreads: 1).next())
        return engine
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw ValidationError("cannot create \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}

MeridianServerCommand.main()
