import ArgumentParser
import MeridianConfig
import MeridianCore

/// `meridian`: the operator's command line: validates configuration files, runs a local
/// cluster (`dev-cluster`), exports a node's audit log (`export`) and verifies exports
/// (`audit verify`) (docs/AUDIT.md), and emulates WAN links for tests (`wan-proxy`).
struct Meridian: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meridian",
        abstract: "Meridian's operator tool.",
        subcommands: [Config.self, DevCluster.self, ClusterAdmin.self, Export.self, Audit.self, WanProxy.self, CheckHistory.self, BenchCluster.self, Version.self])
}

extension Meridian {
    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Prints the version.")
        func run() { print("meridian 0.1.0 (Redis 7.2 command semantics)") }
    }

    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Works with cluster configuration files.", subcommands: [Check.self])
    }
}

extension Meridian.Config {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validates a configuration file and prints what it describes.",
            discussion: "Exits non-zero with the offending field named when the file is refused.")

        @Argument(help: "The YAML configuration file.")
        var file: String

        func run() throws {
            let configuration: MeridianConfiguration
            do {
                configuration = try ConfigurationLoader.load(path: file)
            } catch {
                throw ValidationError("\(file): \(error)")
            }
            let cluster = configuration.cluster
            print("cluster \(cluster.name): \(cluster.partitions) partitions, replication factor \(cluster.replicationFactor)")
            for dc in cluster.datacenters {
                print("  datacenter \(dc.name)\(dc.witness ? " (witness)" : "")")
                for node in dc.nodes {
                    let client = node.client.map { " client \($0)" } ?? ""
                    let peer = node.peer.map { " peer \($0)" } ?? ""
                    print("    node \(node.name)\(client)\(peer)")
                }
            }
            for namespace in configuration.namespaces {
                let prefix = String(decoding: namespace.prefix, as: UTF8.self)
                var line = "  namespace \(namespace.name) prefix \"\(prefix)\": \(namespace.consistency.rawValue), \(namespace.durability.rawValue), eviction \(namespace.eviction.rawValue)"
                if let ttl = namespace.defaultTTLMs { line += ", default_ttl \(ttl) ms" }
                if !namespace.strongKeys.isEmpty {
                    line += ", strong_keys " + namespace.strongKeys.map { String(decoding: $0.source, as: UTF8.self) }.joined(separator: " ")
                }
                print(line)
            }
            print("  maxmemory \(configuration.maxmemoryBytes == 0 ? "unlimited" : Units.humanBytes(configuration.maxmemoryBytes))")
        }
    }
}

Meridian.main()
