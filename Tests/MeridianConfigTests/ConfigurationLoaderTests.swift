// Proves the configuration contract of DESIGN.md parses as documented (the example file
// verbatim), that defaults apply, and that every kind of mistake is refused with a message
// naming the offending field.
import MeridianConfig
import MeridianCore
import Testing

@Suite struct ConfigurationLoaderTests {
    static let designExample = """
        cluster:
          name: demo
          partitions: 1024            # fixed for the cluster's life
          replication_factor: 1       # replicas of each partition inside each full DC
          datacenters:
            - name: east
              nodes:
                - { name: east-1, client: "127.0.0.1:7101", peer: "127.0.0.1:7201" }
            - name: west
              nodes:
                - { name: west-1, client: "127.0.0.1:7102", peer: "127.0.0.1:7202" }
            - name: central
              witness: true
              nodes:
                - { name: central-w, peer: "127.0.0.1:7203" }
        namespaces:                    # matched by longest prefix; unmatched keys use `default`
          - { name: default, prefix: "",         consistency: eventual, durability: write-back,    eviction: lru }
          - { name: session, prefix: "session:", consistency: eventual, durability: memory,        eviction: lru, default_ttl: 30m }
          - { name: config,  prefix: "config:",  consistency: strong,   durability: write-through, eviction: none }
          - { name: profile, prefix: "profile:", consistency: eventual, durability: write-back,    eviction: lru,
              strong_keys: ["profile:*:email"] }
        limits: { maxmemory: 256mb }
        """

    @Test func parsesTheDesignExample() throws {
        let configuration = try ConfigurationLoader.parse(yaml: Self.designExample)
        #expect(configuration.cluster.name == "demo")
        #expect(configuration.cluster.partitions == 1024)
        #expect(configuration.cluster.datacenters.map(\.name) == ["east", "west", "central"])
        #expect(configuration.cluster.datacenters[2].witness)
        #expect(configuration.cluster.datacenters[0].nodes[0].client == HostPort(host: "127.0.0.1", port: 7101))
        #expect(configuration.namespaces.map(\.name) == ["default", "session", "config", "profile"])
        #expect(configuration.namespaces[1].defaultTTLMs == 1_800_000)
        #expect(configuration.namespaces[2].consistency == .strong)
        #expect(configuration.namespaces[2].eviction == EvictionPolicy.none)
        #expect(configuration.maxmemoryBytes == 256 << 20)
        let located = configuration.locateNode(named: "west-1")
        #expect(located?.datacenter == 1 && located?.node == 0)
    }

    @Test func longestPrefixWinsAndStrongKeysEscalate() throws {
        let configuration = try ConfigurationLoader.parse(yaml: Self.designExample + "\n")
        let table = NamespaceTable(configuration.namespaces)
        func namespace(_ key: String) -> String { Array(key.utf8).withUnsafeBytes { table.namespaces[table.index(of: $0)].name } }
        func strong(_ key: String) -> Bool { Array(key.utf8).withUnsafeBytes { table.isStrong($0, namespaceIndex: table.index(of: $0)) } }
        #expect(namespace("session:42") == "session")
        #expect(namespace("sessions") == "default")
        #expect(namespace("config:flags") == "config")
        #expect(strong("config:flags"))
        #expect(strong("profile:7:email"))
        #expect(!strong("profile:7:name"))
        #expect(!strong("session:1"))
    }

    @Test func defaultNamespaceIsAddedWhenMissing() throws {
        let configuration = try ConfigurationLoader.parse(yaml: """
            cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: "127.0.0.1:1" } ] } ] }
            namespaces: [ { name: s, prefix: "s:", durability: memory } ]
            """)
        #expect(configuration.namespaces.map(\.name) == ["default", "s"])
        #expect(configuration.cluster.partitions == ClusterConfig.partitionsDefault)
        #expect(configuration.maxmemoryBytes == 0)
    }

    @Test func auditRetentionDefaultsByDurability() throws {
        let configuration = try ConfigurationLoader.parse(yaml: Self.base + """
            namespaces:
              - { name: default, prefix: "", durability: write-back }
              - { name: cache, prefix: "c:", durability: memory }
              - { name: short, prefix: "s:", durability: write-through, audit_retention: 12h }
              - { name: off, prefix: "o:", durability: write-back, audit_retention: 0 }
            """)
        #expect(configuration.namespaces.map(\.auditRetentionMs) == [7 * 86_400_000, 0, 12 * 3_600_000, 0])
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: Self.base + "namespaces: [ { name: c, prefix: \"c:\", durability: memory, audit_retention: 1d } ]")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: Self.base + "namespaces: [ { name: c, prefix: \"c:\", audit_retention: forever } ]")
        }
    }

    @Test func parsesTheReplicationSection() throws {
        let configuration = try ConfigurationLoader.parse(yaml: Self.base + """
            replication: { batch_bytes_max: 512kb, batch_delay: 5ms, zstd_level: 6, log_bytes_max: 128mb, max_clock_offset: 250ms, reconnect_backoff: 50ms..2s }
            """)
        let replication = configuration.replication
        #expect(replication.batchBytesMax == 512 * 1024 && replication.batchDelayMs == 5 && replication.zstdLevel == 6)
        #expect(replication.logBytesMax == 128 << 20 && replication.maxClockOffsetMs == 250)
        #expect(replication.reconnectBackoffMinMs == 50 && replication.reconnectBackoffMaxMs == 2_000)
        #expect(try ConfigurationLoader.parse(yaml: Self.base).replication == ReplicationConfig())
    }

    static let base = "cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" } ] } ] }\n"
    /// A data center of two nodes, as the start of a `datacenters` list (left open).
    static let twoNodes = "datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\", peer: \"127.0.0.1:2\" }, { name: a2, client: \"127.0.0.1:3\", peer: \"127.0.0.1:4\" } ] }"

    @Test func acceptsADataCenterOfSeveralNodes() throws {
        let configuration = try ConfigurationLoader.parse(yaml: "cluster: { name: c, replication_factor: 2, " + Self.twoNodes + " ] }\nnamespaces: [ { name: d, prefix: \"\", eviction: none } ]\nlimits: { maxmemory: 1gb }")
        #expect(configuration.cluster.datacenters[0].nodes.count == 2)
        #expect(configuration.cluster.replicationFactor == 2)
        #expect(configuration.cluster.placementVoters(of: configuration.cluster.datacenters[0]) == ["a1", "a2"])
    }

    /// A second data center of two nodes, to follow `twoNodes`.
    static let secondDataCenterOfTwo = ", { name: b, nodes: [ { name: b1, client: \"127.0.0.1:5\", peer: \"127.0.0.1:6\" }, { name: b2, client: \"127.0.0.1:7\", peer: \"127.0.0.1:8\" } ] }"

    /// Several full data centers, one of them (or more) of several nodes: each node ships its
    /// own deltas to the others (docs/CLUSTER.md, "Cross-DC shipping with many nodes per DC").
    @Test func acceptsDataCentersOfSeveralNodesBesideOthers() throws {
        let other = ", { name: b, nodes: [ { name: b1, client: \"127.0.0.1:5\", peer: \"127.0.0.1:6\" } ] }"
        let configuration = try ConfigurationLoader.parse(yaml: "cluster: { name: c, replication_factor: 2, " + Self.twoNodes + other + " ] }")
        #expect(configuration.cluster.datacenters.map(\.nodes.count) == [2, 1])
        let both = try ConfigurationLoader.parse(yaml: "cluster: { name: c, replication_factor: 2, " + Self.twoNodes + Self.secondDataCenterOfTwo + " ] }")
        #expect(both.cluster.placementVoters(of: both.cluster.datacenters[1]) == ["b1", "b2"])
    }

    /// A spare is listed (its addresses known to every node) but not in the first placement;
    /// the placement voters default to the first three members.
    @Test func acceptsSparesAndPlacementVoters() throws {
        let nodes = (1...5).map { "{ name: a\($0), client: \"127.0.0.1:\(10 + $0)\", peer: \"127.0.0.1:\(20 + $0)\"\($0 == 5 ? ", spare: true" : "") }" }
        let yaml = "cluster: { name: c, replication_factor: 3, datacenters: [ { name: a, nodes: [ " + nodes.joined(separator: ", ") + " ] } ] }"
        let configuration = try ConfigurationLoader.parse(yaml: yaml)
        let dc = configuration.cluster.datacenters[0]
        #expect(dc.nodes.map(\.spare) == [false, false, false, false, true])
        #expect(configuration.cluster.firstMembers(of: dc) == ["a1", "a2", "a3", "a4"])
        #expect(configuration.cluster.placementVoters(of: dc) == ["a1", "a2", "a3"])
        let chosen = try ConfigurationLoader.parse(
            yaml: yaml.replacing("replication_factor: 3,", with: "replication_factor: 3, placement_voters: [a2, a4, a1], grace: 2s, move_retry: 300ms, dead_state_grace: 2h,"))
        #expect(chosen.cluster.placementVoters(of: chosen.cluster.datacenters[0]) == ["a2", "a4", "a1"])
        #expect(chosen.cluster.scaleOut.graceMs == 2_000 && chosen.cluster.scaleOut.moveRetryMs == 300)
        #expect(chosen.cluster.scaleOut.deadStateGraceMs == 7_200_000 && configuration.cluster.scaleOut.deadStateGraceMs == 86_400_000)
    }

    @Test(arguments: [
        (base + "namespaces: [ { name: x, prefix: \"x:\", durability: sometimes } ]", "namespaces[0].durability"),
        (base + "namespaces: [ { name: x, prefix: \"x:\", consistency: maybe } ]", "namespaces[0].consistency"),
        (base + "namespaces: [ { name: x, prefix: \"x:\", evicton: none } ]", "namespaces[0].evicton"),
        (base + "namespaces: [ { name: x, prefix: \"x:\", default_ttl: soon } ]", "namespaces[0].default_ttl"),
        (base + "namespaces: [ { name: x } ]", "namespaces[0].prefix"),
        (base + "namespaces: [ { name: x, prefix: \"a\" }, { name: y, prefix: \"a\" } ]", "namespaces[1].prefix"),
        (base + "namespaces: [ { name: x, prefix: \"a\" }, { name: x, prefix: \"b\" } ]", "namespaces[1].name"),
        (base + "limits: { maxmemory: lots }", "limits.maxmemory"),
        (base + "limits: { maxmem: 1mb }", "limits.maxmem"),
        (base + "replication: { batch_bytes_max: 2mb }", "replication.batch_bytes_max"),
        (base + "replication: { batch_delay: forever }", "replication.batch_delay"),
        (base + "replication: { zstd_level: 30 }", "replication.zstd_level"),
        (base + "replication: { log_bytes_max: 1kb }", "replication.log_bytes_max"),
        (base + "replication: { max_clock_offset: 0ms }", "replication.max_clock_offset"),
        (base + "replication: { reconnect_backoff: 5s..100ms }", "replication.reconnect_backoff"),
        (base + "replication: { reconnect_backoff: 5s }", "replication.reconnect_backoff"),
        (base + "replication: { batch_size: 1 }", "replication.batch_size"),
        ("cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"nohost\" } ] } ] }", "cluster.datacenters[0].nodes[0].client"),
        ("cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" }, { name: a1, client: \"127.0.0.1:2\" } ] } ] }", "cluster.datacenters[0].nodes[1].name"),
        ("cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" }, { name: a2, client: \"127.0.0.1:1\" } ] } ] }", "cluster.datacenters[0].nodes[1].client"),
        ("cluster: { name: c, datacenters: [ { name: w, witness: true, nodes: [ { name: w1, peer: \"127.0.0.1:1\" } ] } ] }", "cluster.datacenters"),
        // A data center of several nodes: every node needs its peer address, the replicas fit
        // its nodes, and what it does not serve yet is refused (docs/CLUSTER.md).
        ("cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" }, { name: a2, client: \"127.0.0.1:2\" } ] } ] }", "cluster.datacenters[0].nodes[0].peer"),
        ("cluster: { name: c, replication_factor: 3, " + Self.twoNodes + " ] }", "cluster.replication_factor"),
        // Spares: replicas count the members only; a voter is a member; a lone node is no spare.
        ("cluster: { name: c, replication_factor: 2, " + Self.twoNodes.replacing("4\" }", with: "4\", spare: true }") + " ] }", "cluster.replication_factor"),
        ("cluster: { name: c, " + Self.twoNodes.replacing("4\" }", with: "4\", spare: yes please }") + " ] }", "cluster.datacenters[0].nodes[1].spare"),
        ("cluster: { name: c, placement_voters: [a1, a3], " + Self.twoNodes + " ] }", "cluster.placement_voters[1]"),
        ("cluster: { name: c, placement_voters: [a1, a1], " + Self.twoNodes + " ] }", "cluster.placement_voters[1]"),
        ("cluster: { name: c, placement_voters: [], " + Self.twoNodes + " ] }", "cluster.placement_voters"),
        ("cluster: { name: c, placement_voters: [a2], " + Self.twoNodes.replacing("4\" }", with: "4\", spare: true }") + " ] }", "cluster.placement_voters[0]"),
        ("cluster: { name: c, grace: never, " + Self.twoNodes + " ] }", "cluster.grace"),
        // Dead states outlive three anti-entropy passes (the default grace too); a grace under
        // a second is refused.
        ("cluster: { name: c, anti_entropy_interval: 2s, dead_state_grace: 5s, " + Self.twoNodes + " ] }", "cluster.dead_state_grace"),
        ("cluster: { name: c, anti_entropy_interval: 9h, " + Self.twoNodes + " ] }", "cluster.dead_state_grace"),
        ("cluster: { name: c, dead_state_grace: 10ms, " + Self.twoNodes + " ] }", "cluster.dead_state_grace"),
        ("cluster: { name: c, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\", spare: true } ] } ] }", "cluster.datacenters[0].nodes[0].spare"),
        ("cluster: { name: c, placement_voters: [a1], " + Self.twoNodes + Self.secondDataCenterOfTwo + " ] }", "cluster.placement_voters"),
        ("cluster: { name: c, " + Self.twoNodes + " ] }\nnamespaces: [ { name: s, prefix: \"s:\", consistency: strong } ]", "namespaces[0].consistency"),
        ("cluster: { name: c, " + Self.twoNodes + " ] }\nlimits: { maxmemory: 1gb }", "namespaces"),
        ("cluster: { name: c, " + Self.twoNodes + " ] }\nnamespaces: [ { name: d, prefix: \"\" } ]\nlimits: { maxmemory: 1gb }", "namespaces[0].eviction"),
        ("cluster: { name: c, replication_factor: 3, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" } ] } ] }", "cluster.replication_factor"),
        ("cluster: { name: c, partitions: 1000, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" } ] } ] }", "cluster.partitions"),
        ("cluster: { name: c, partitions: 32768, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" } ] } ] }", "cluster.partitions"),
        ("cluster: { name: c, partitions: 0, datacenters: [ { name: a, nodes: [ { name: a1, client: \"127.0.0.1:1\" } ] } ] }", "cluster.partitions"),
        ("cluster: { name: c }", "cluster.datacenters"),
        ("clusters: {}", "clusters"),
        ("- just a list", ""),
    ])
    func refusesMistakesNamingTheField(yaml: String, field: String) {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml)
            Issue.record("accepted a bad configuration; expected an error at \(field)")
        } catch {
            #expect(error.field == field, "\(error)")
            #expect(error.description.hasPrefix(field))
        }
    }

    @Test func missingFileIsAClearError() {
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(path: "/nonexistent/meridian.yaml") }
    }
}
