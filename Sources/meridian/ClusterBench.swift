import ArgumentParser
import MeridianCluster
import MeridianCore
import MeridianSimulation
import MeridianWire

extension Meridian {
    /// `meridian bench-cluster`: what the scale-out core (docs/CLUSTER.md) costs, measured in one
    /// process: nodes are `ClusterNode`s on an in-order, instant network (`InProcessDataCenter`),
    /// stores are in memory, and time is simulated in 10 ms ticks. It reports the CPU time the
    /// core spends (wall time of this single thread), the messages and their encoded bytes, and
    /// simulated time where a rate limit decides it. It does not measure a server: no sockets,
    /// no disk, no other process (the server does not run the core yet).
    struct BenchCluster: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-cluster",
            abstract: "Measures the scale-out core in one process: the keyspace's partition trees, anti-entropy (idle, diverged), hint replay, a node joining.")

        @Option(help: "Keys loaded into the data center.")
        var keys = 1_000_000
        @Option(help: "Value bytes per key.")
        var valueBytes = 100
        @Option(help: "Partitions (a power of two).")
        var partitions = 1024
        @Option(help: "Keys written while one replica is cut off without hints (the divergence anti-entropy repairs).")
        var diverged = 10_000
        @Option(help: "Keys written while one replica is cut off (the hints replayed).")
        var hints = 100_000

        func run() throws {
            guard Partitioner.isValidPartitionCount(partitions), keys > 0, valueBytes >= 0 else {
                throw ValidationError("partitions must be a power of two up to 16384; keys positive")
            }
            var settings = ClusterSettings()
            // One full anti-entropy pass every 10.24 s of simulated time (10 ms per partition).
            settings.antiEntropyIntervalMs = Int64(partitions) * 10
            var dc = InProcessDataCenter(
                members: 3, replicationFactor: 3, partitions: partitions, settings: settings, hintsBytesMax: 1 << 30)
            dc.recordsMessages = false
            let value = [UInt8](repeating: UInt8(ascii: "v"), count: valueBytes)
            let clock = ContinuousClock()
            print("scale-out core, in one process: 3 nodes, RF 3, \(partitions) partitions, \(keys) keys of \(valueBytes) bytes")

            // The keyspace's own partition trees, which a node that is one of several replicas
            // keeps on every write: the same writes on a keyspace without them, with them settled
            // after every write, and with them settled as the keyspace does by itself (when
            // `PartitionTracking.pendingKeysMax` keys wait; readers settle first).
            let keyBytes = (0..<keys).map { Array("key:\($0)".utf8) }
            for (tracked, settleEach) in [(false, false), (true, true), (true, false)] {
                var keyspace = Keyspace(
                    evictableNamespaces: [false], replicatedNamespaces: [true], partitionCount: tracked ? partitions : nil)
                let origin = ReplicaID(datacenter: 0, node: 0)
                let trackedStart = clock.now
                for round in 0..<2 {
                    for (index, key) in keyBytes.enumerated() {
                        let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: UInt64(round * keys + index + 1), logical: 0), origin: origin)
                        if let slot = keyspace.slot(ofBytes: key) {
                            keyspace.setValue(at: slot, value, stamp: stamp)
                        } else {
                            let entry = Entry(value: value, valueStamp: stamp, expiryUnixMs: Entry.noExpiry, expiryStamp: stamp,
                                              lastAccessUnixMs: 0, namespaceIndex: 0)
                            key.withUnsafeBytes { _ = keyspace.insert(bytes: $0, entry: entry) }
                        }
                        if settleEach { keyspace.settlePartitions() }
                    }
                }
                keyspace.settlePartitions()
                let trees = tracked ? (settleEach ? "kept, settled after every write" : "kept, settled by the keyspace") : "not kept"
                report("keyspace alone, \(keys) inserts then \(keys) overwrites, partition trees \(trees)",
                       clock.now - trackedStart, count: 2 * keys, unit: "write",
                       note: tracked ? "\(keyspace.heldPartitions.count) partitions held" : nil)
            }

            // Load: every key written with `all` acks, coordinated by the nodes in turn.
            var started = clock.now
            for index in 0..<keys {
                write(&dc, at: index % 3, key: index, value: value, acks: .all)
            }
            report("load (replicated writes)", clock.now - started, count: keys, unit: "write")

            // Anti-entropy, idle: one full pass over every partition, nothing differs.
            dc.countBytes = true
            dc.deliveredMessages = 0
            started = clock.now
            dc.advance(ms: settings.antiEntropyIntervalMs + 100)
            report("anti-entropy pass, idle", clock.now - started, bytes: dc.deliveredBytes, messages: dc.deliveredMessages)

            // Anti-entropy, diverged: node 2 goes back to its state from before `diverged` writes
            // (as a replica restored from an older copy): no hint stands in for them.
            let before = dc.nodes[2]
            for index in 0..<diverged {
                write(&dc, at: index % 2, key: keys + index, value: value, acks: .all)
            }
            dc.nodes[2] = before
            dc.deliveredBytes = 0
            dc.deliveredMessages = 0
            started = clock.now
            dc.advance(ms: settings.antiEntropyIntervalMs + 100)
            let repaired = (0..<partitions).allSatisfy { dc.nodes[2].durable.store.digest(of: $0) == dc.nodes[0].durable.store.digest(of: $0) }
            report("anti-entropy pass, \(diverged) keys diverged on one replica", clock.now - started,
                   bytes: dc.deliveredBytes, messages: dc.deliveredMessages, note: repaired ? "replicas equal after the pass" : "NOT repaired in one pass")

            // Hint replay, on a data center of its own whose anti-entropy does not run within the
            // measurement (here it would repair node 2 alongside the hints): node 2 misses
            // `hints` writes; the coordinators keep hints and replay them at their rate limit.
            var quiet = settings
            quiet.antiEntropyIntervalMs = 36_000_000
            var hinted = InProcessDataCenter(members: 3, replicationFactor: 3, partitions: partitions, settings: quiet, hintsBytesMax: 1 << 30)
            hinted.recordsMessages = false
            hinted.unreachable = [2]
            for index in 0..<hints {
                write(&hinted, at: index % 2, key: index, value: value, acks: .quorum)
            }
            hinted.advance(ms: 600)
            let stored = hinted.nodes[0].durable.hints.count + hinted.nodes[1].durable.hints.count
            hinted.unreachable = []
            hinted.countBytes = true
            hinted.deliveredMessages = 0
            started = clock.now
            let replayStart = hinted.nowMs
            while !(hinted.nodes[0].durable.hints.isEmpty && hinted.nodes[1].durable.hints.isEmpty) && hinted.nowMs - replayStart < 3_600_000 {
                hinted.advance(ms: 100)
            }
            let simulatedMs = hinted.nowMs - replayStart
            let replayed = hinted.nodes[0].stats.hintsReplayed + hinted.nodes[1].stats.hintsReplayed
            report("hint replay of \(stored) hints", clock.now - started, count: Int(replayed), unit: "hint",
                   bytes: hinted.deliveredBytes, messages: hinted.deliveredMessages,
                   note: "drained in \(simulatedMs) ms simulated (incl. SWIM seeing the node again): \(stored * 1000 / Int(max(1, simulatedMs))) hints/s with 2 coordinators at \(settings.hintReplaysPerRound) per target per 100 ms")

            // A fourth node joins holding nothing: the moving partitions are streamed and switched.
            let loaded = keys + diverged
            var committed = try dc.nodes[0].placement.adding(name: "node-3")
            dc.nodes.append(ClusterNode(
                id: 3, origin: ReplicaID(datacenter: 0, node: 3),
                durable: ClusterDurableState(placement: committed, hintsBytesMax: 1 << 30), settings: settings,
                nowMs: dc.nowMs, incarnation: UInt64(dc.nowMs)))
            let moving = committed.changingPartitions.count
            dc.deliveredBytes = 0
            dc.deliveredMessages = 0
            dc.proposals.removeAll()
            started = clock.now
            let joinStart = dc.nowMs
            for id in 0..<3 { dc.nodes[id].learn(committed, nowMs: dc.nowMs) }
            for id in dc.nodes.indices { dc.collect(id) }
            var failures = 0
            var written = 0
            while committed.isChanging && dc.nowMs - joinStart < 3_600_000 {
                // A client keeps writing and reading through the move (one of each per 10 ms).
                let key = Int.random(in: 0..<loaded, using: &dc.random)
                let writeClient = write(&dc, at: written % 4, key: key, value: value, acks: .quorum)
                let readClient = dc.read(at: (written + 1) % 4, Array("key:\(key)".utf8))
                written += 1
                dc.advance(ms: 10)
                for client in [writeClient, readClient] where dc.replies[client] == .timedOut { failures += 1 }
                for proposal in dc.proposals {
                    let valid = proposal.filter { committed.isMoving($0) }
                    guard !valid.isEmpty else { continue }
                    committed = try committed.switching(partitions: valid, changeEpoch: committed.changeEpoch)
                }
                dc.proposals.removeAll()
                for id in dc.nodes.indices { dc.nodes[id].learn(committed, nowMs: dc.nowMs) }
                for id in dc.nodes.indices { dc.collect(id) }
            }
            let joinMs = dc.nowMs - joinStart
            let held = dc.nodes[3].durable.store.partitions.values.reduce(0) { $0 + $1.entries.count }
            report("node joins, \(moving) of \(partitions) partitions move", clock.now - started,
                   bytes: dc.deliveredBytes, messages: dc.deliveredMessages,
                   note: "switched in \(joinMs) ms simulated; the new node holds \(held) keys; \(written) writes and \(written) reads during the move, \(failures) timed out")
        }

        @discardableResult
        private func write(_ dc: inout InProcessDataCenter, at node: Int, key: Int, value: [UInt8], acks: AckCount) -> UInt64 {
            dc.write(at: node, Array("key:\(key)".utf8), bytes: value, acks: acks)
        }

        private func report(_ what: String, _ elapsed: Duration, count: Int? = nil, unit: String = "", bytes: Int? = nil, messages: Int? = nil, note: String? = nil) {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            var line = "\(what): \(String(format3(seconds))) s"
            if let count, count > 0 { line += ", \(String(format3(seconds * 1e6 / Double(count)))) µs per \(unit)" }
            if let messages { line += ", \(messages) messages" }
            if let bytes { line += ", \(bytes) bytes (\(String(format3(Double(bytes) / 1_048_576))) MiB)" }
            if let note { line += "; \(note)" }
            print(line)
        }

        private func format3(_ value: Double) -> String {
            let scaled = (value * 1000).rounded() / 1000
            return "\(scaled)"
        }
    }
}
