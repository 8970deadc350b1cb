// Proves, in the deterministic simulator, the convergence invariant of docs/REPLICATION.md:
// with message loss, duplication, delay, links cut for a while, clock skew up to the bound,
// TTLs running out, crashes and restarts, every data center ends with the same live keys and
// equal version vectors once the faults stop, and every counter adds up every increment —
// for thousands of seeds. The data centers run the server's own state machines (`Keyspace`:
// local deltas, `mergeRemote`, tombstones, counters; `OutboundLog`; `TombstoneHorizon`). A
// failure prints its seed; `ReplicationSimulation.traceKey` shows one key's history; a seed
// that once failed becomes a test of its own.
import MeridianSimulation
import Testing

@Suite struct ReplicationSimulationTests {
    /// Runs `seeds` with `options`; returns the summed outcome counters, or records the first
    /// failing seed.
    static func run(_ seeds: ClosedRange<UInt64>, options: ReplicationSimulation.Options = .init()) -> ReplicationSimulation.Outcome? {
        var total = ReplicationSimulation.Outcome(converged: true)
        for seed in seeds {
            var simulation = ReplicationSimulation(seed: seed, options: options)
            let outcome = simulation.run()
            #expect(outcome.converged, "seed \(seed): \(outcome)")
            if !outcome.converged { return nil }
            total.snapshots += outcome.snapshots
            total.conflicts += outcome.conflicts
            total.batchesRefused += outcome.batchesRefused
            total.tombstonesCollected += outcome.tombstonesCollected
            total.crashes += outcome.crashes
            total.expiredKeys += outcome.expiredKeys
        }
        return total
    }

    /// 2,000 seeds in 20 groups (the groups run in parallel).
    @Test(arguments: 0..<20)
    func convergesForThousandsOfSeeds(group: Int) throws {
        let first = UInt64(group * 100 + 1)
        let total = try #require(Self.run(first...(first + 99)))
        // Each group must exercise catch-up by snapshot, concurrent writes, tombstone GC and TTLs
        // running out.
        #expect(total.snapshots > 0 && total.conflicts > 0 && total.tombstonesCollected > 0 && total.expiredKeys > 0, "\(total)")
    }

    /// Crashes that lose what a restarted server loses: the outbound log, the version vector,
    /// the clock and the dots (peers catch the node up by snapshot, and it them).
    @Test(arguments: 0..<4)
    func convergesWhenRestartsLoseTheLogAndTheVector(group: Int) throws {
        var options = ReplicationSimulation.Options()
        options.restartsLikeTheServer = true
        options.crashPercent = 2
        let first = UInt64(10_000 + group * 100)
        let total = try #require(Self.run(first...(first + 99), options: options))
        #expect(total.crashes > 0 && total.snapshots > 0, "\(total)")
    }

    /// A clock running 2 s ahead (beyond the 500 ms bound) for the first half: its batches are
    /// refused until real time catches up with its stamps, then accepted; nothing is lost.
    @Test func aRunawayClockIsRefusedThenCaughtUp() throws {
        var options = ReplicationSimulation.Options()
        options.runawayClockMs = 2_000
        let total = try #require(Self.run(20_000...20_049, options: options))
        #expect(total.batchesRefused > 0, "\(total)")
    }

    /// Seed 57 diverged while receivers did not advance their HLC past applied stamps: an
    /// overwrite made after seeing a write from a faster clock got a smaller stamp and lost.
    @Test func regressionSeed57ReceiversAdvanceTheirClocks() {
        var simulation = ReplicationSimulation(seed: 57)
        let outcome = simulation.run()
        #expect(outcome.converged, "\(outcome)")
    }

    @Test func withoutFaultsToo() {
        var options = ReplicationSimulation.Options()
        options.lossPercent = 0
        options.duplicatePercent = 0
        options.partitionPercent = 0
        options.crashPercent = 0
        _ = Self.run(1...50, options: options)
    }

    /// The trace of one key, for reading a failing seed, records its writes and merges.
    @Test func traceRecordsOneKeysHistory() {
        var simulation = ReplicationSimulation(seed: 3)
        simulation.traceKey = Array("k1".utf8)
        _ = simulation.run()
        #expect(simulation.trace.contains { $0.contains("local written") })
        #expect(simulation.trace.contains { $0.contains("merged") })
        #expect(simulation.describe(key: "k1").split(separator: "\n").count == 3)
    }
}
