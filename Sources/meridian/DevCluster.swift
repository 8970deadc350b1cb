import ArgumentParser
import Dispatch
import Foundation
import MeridianConfig
import MeridianCore

/// `meridian dev-cluster`: every node of a configuration as child processes on loopback, for
/// development and demos. Foundation's `Process` is fine here: this is an operator tool, not a
/// request path.
struct DevCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-cluster",
        abstract: "Runs every node of a configuration as local child processes.",
        discussion: """
            Starts one meridian-server per node (witnesses included), prints each node's client \
            address, streams their logs prefixed with the node's name, and stops them all on \
            Ctrl-C or SIGTERM. With no --config it runs a built-in demo: two full data centers \
            (east on 127.0.0.1:7101, west on 127.0.0.1:7102) and a witness (central); writes in \
            either full data center reach the other (docs/REPLICATION.md).
            """)

    @Option(name: .long, help: "The cluster configuration (default: the built-in demo).")
    var config: String?

    @Option(name: .customLong("data-dir"), help: "Each node's data goes in a subdirectory named after it.")
    var dataDir: String = "./data/dev-cluster"

    @Option(name: .long, help: "The meridian-server binary (default: the one next to this tool).")
    var server: String?

    /// The built-in demo topology (DESIGN.md's example): eventual namespaces and a strong
    /// `config:` namespace committed by Paxos, the witness voting.
    static let demo = """
        cluster:
          name: demo
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
        namespaces:
          - { name: default, prefix: "",         consistency: eventual, durability: write-back, eviction: lru }
          - { name: session, prefix: "session:", consistency: eventual, durability: memory,     eviction: lru, default_ttl: 30m }
          - { name: config,  prefix: "config:",  consistency: strong,   durability: write-through, eviction: none }
        """

    func run() throws {
        let configPath: String
        if let config {
            configPath = config
        } else {
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            configPath = dataDir + "/demo.yaml"
            try Self.demo.write(toFile: configPath, atomically: true, encoding: .utf8)
        }
        let configuration: MeridianConfiguration
        do {
            configuration = try ConfigurationLoader.load(path: configPath)
        } catch {
            throw ValidationError("\(configPath): \(error)")
        }
        let binary = server ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("meridian-server").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ValidationError("no meridian-server at \(binary) (build it, or pass --server)")
        }

        let supervisor = Supervisor()
        for dc in configuration.cluster.datacenters {
            for node in dc.nodes {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["--config", configPath, "--node", node.name, "--data-dir", dataDir + "/" + node.name]
                let pipe = Pipe()
                process.standardOutput = pipe
                process.standardError = pipe
                let lines = LineSplitter(prefix: "[\(node.name)] ", supervisor: supervisor)
                pipe.fileHandleForReading.readabilityHandler = { handle in lines.take(handle.availableData) }
                try process.run()
                supervisor.add(node.name, process)
                if let client = node.client {
                    supervisor.emit("node \(node.name) (\(dc.name)) serves clients on \(client): redis-cli -h \(client.host) -p \(client.port)")
                } else {
                    supervisor.emit("node \(node.name) (\(dc.name), witness) links on \(node.peer.map { "\($0)" } ?? "-")")
                }
            }
        }

        // Stop everyone on Ctrl-C or SIGTERM, and everyone if one child dies.
        let queue = DispatchQueue(label: "meridian.dev-cluster.signals")
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { supervisor.stopAll(exitCode: 0) }
            source.resume()
            sources.append(source)
        }
        supervisor.watchChildren(on: queue)
        withExtendedLifetime(sources) { dispatchMain() }
    }
}

/// The children of `dev-cluster`, its output, and stopping them all once.
final class Supervisor: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [(name: String, process: Process)] = []
    private var stopped = false

    func add(_ name: String, _ process: Process) {
        lock.withLock { children.append((name, process)) }
    }

    /// Writes one line to standard output (lines of different children never interleave).
    func emit(_ line: String) {
        lock.withLock { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    }

    /// Stops every child that runs (SIGTERM, then waits for each), then exits.
    func stopAll(exitCode: Int32) -> Never {
        let toStop: [(name: String, process: Process)] = lock.withLock {
            if stopped { return [] }
            stopped = true
            return children
        }
        for child in toStop where child.process.isRunning { child.process.terminate() }
        for child in toStop { child.process.waitUntilExit() }
        emit("all nodes stopped")
        Foundation.exit(exitCode)
    }

    /// A child that exits on its own stops the others (a half cluster would mislead).
    func watchChildren(on queue: DispatchQueue) {
        let all = lock.withLock { children }
        for child in all {
            let name = child.name
            child.process.terminationHandler = { [self] process in
                guard !lock.withLock({ stopped }) else { return }
                emit("node \(name) exited with status \(process.terminationStatus); stopping the others")
                queue.async { self.stopAll(exitCode: 1) }
            }
        }
    }
}

/// Cuts a child's output into lines and emits each with the child's name in front.
final class LineSplitter: @unchecked Sendable {
    private let prefix: String
    private let supervisor: Supervisor
    private let lock = NSLock()
    private var pending = Data()

    init(prefix: String, supervisor: Supervisor) {
        self.prefix = prefix
        self.supervisor = supervisor
    }

    func take(_ chunk: Data) {
        guard !chunk.isEmpty else { return }
        let lines: [String] = lock.withLock {
            pending.append(chunk)
            var lines: [String] = []
            while let newline = pending.firstIndex(of: 0x0A) {
                lines.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...newline)
            }
            return lines
        }
        for line in lines { supervisor.emit(prefix + line) }
    }
}
