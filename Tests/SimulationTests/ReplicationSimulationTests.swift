// Proves, in the deterministic simulator, the convergence invariant of docs/REPLICATION.md:
// with message loss, duplication, delay, reordering and links cut for a while, every data
// center ends with byte-identical states and equal version vectors once the faults stop, for
// hundreds of seeds. A failure prints its seed; a failing seed becomes a test of its own.
import MeridianSimulation
import Testing

@Suite struct ReplicationSimulationTests {
    @Test func convergesForManySeeds() {
        var snapshots = 0
        var conflicts = 0
        for seed in 1...300 as ClosedRange<UInt64> {
            var simulation = ReplicationSimulation(seed: seed)
            let outcome = simulation.run()
            #expect(outcome.converged, "seed \(seed): \(outcome)")
            if !outcome.converged { return }
            snapshots += outcome.snapshots
            conflicts += outcome.conflicts
        }
        // The runs must actually exercise catch-up by snapshot and concurrent writes.
        #expect(snapshots > 0)
        #expect(conflicts > 0)
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
        for seed in 1...20 as ClosedRange<UInt64> {
            var simulation = ReplicationSimulation(seed: seed, options: options)
            let outcome = simulation.run()
            #expect(outcome.converged, "seed \(seed): \(outcome)")
        }
    }
}
