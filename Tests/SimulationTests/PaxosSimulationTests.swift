// Proves, in the deterministic simulator, the invariants of docs/CONSISTENCY.md for the strong
// protocol: at most one entry chosen per slot, learners apply exactly the chosen entries, at
// most one lease holder per partition at any moment, every key's history linearizable, lock
// tokens increasing — under message loss, duplication, reordering, cut links, crashes and
// restarts of any voter (the witness too) and clock drift within the bound; and, once the
// faults stop, every command completes and the witness forgets what the full voters applied.
// A failing seed prints; a seed that once failed becomes a test of its own.
import MeridianPaxos
import MeridianSimulation
import Testing

@Suite struct PaxosSimulationTests {
    static func run(_ seeds: ClosedRange<UInt64>, options: PaxosSimulation.Options = .init()) -> PaxosSimulation.Outcome? {
        var total = PaxosSimulation.Outcome()
        for seed in seeds {
            var simulation = PaxosSimulation(seed: seed, options: options)
            let outcome = simulation.run()
            #expect(outcome.passed, "seed \(seed): \(outcome)")
            if !outcome.passed { return nil }
            total.completed += outcome.completed
            total.uncertain += outcome.uncertain
            total.noQuorum += outcome.noQuorum
            total.slotsChosen += outcome.slotsChosen
            total.crashes += outcome.crashes
            total.messagesLost += outcome.messagesLost
            total.lockGrants += outcome.lockGrants
            total.releases += outcome.releases
            total.snapshots += outcome.snapshots
        }
        return total
    }

    /// 2,000 seeds in 20 groups (the groups run in parallel).
    @Test(arguments: 0..<20)
    func holdsTheInvariantsForThousandsOfSeeds(group: Int) throws {
        let first = UInt64(group * 100 + 1)
        let total = try #require(Self.run(first...(first + 99)))
        // Each group must exercise crashes, lost messages, lock grants, commands whose outcome
        // the client could not know, and log compaction (snapshots, restarts from them).
        #expect(total.crashes > 0 && total.messagesLost > 0 && total.lockGrants > 0 && total.completed > 0 && total.snapshots > 0, "\(total)")
    }

    /// No faults: nothing is lost, every command completes with a reply. Seeds 50037, 50042 and
    /// 50155 once timed out a command each (a proposer stepped down at the first refusal, its
    /// rival's own acceptor's, while the other voters still followed it).
    @Test func everyCommandCompletesWithoutFaults() throws {
        var options = PaxosSimulation.Options()
        options.lossPercent = 0
        options.duplicatePercent = 0
        options.partitionPerMille = 0
        options.crashPerMille = 0
        let total = try #require(Self.run(50_000...50_199, options: options))
        #expect(total.uncertain == 0 && total.noQuorum == 0 && total.completed == 200 * options.operations, "\(total)")
    }

    /// Seeds that once failed, kept as tests of their own:
    /// - 50025, without faults: a leader stepped down (a witness had promised a rival ballot) with
    ///   proposals in flight, no new command came, and the log stayed unfinished until every
    ///   client timed out — now a follower with proposals in limbo, or a gap it cannot learn,
    ///   leads to finish the log;
    /// - 613: a FORWARD delivered twice was proposed twice and a CAS applied twice (the client
    ///   saw the second outcome) — now a request is applied once and answers as it first did.
    @Test(arguments: [(UInt64(50_025), false), (613, true)])
    func seedsThatOnceFailed(seed: UInt64, faults: Bool) throws {
        var options = PaxosSimulation.Options()
        if !faults {
            options.lossPercent = 0
            options.duplicatePercent = 0
            options.partitionPerMille = 0
            options.crashPerMille = 0
        }
        let total = try #require(Self.run(seed...seed, options: options))
        if !faults { #expect(total.uncertain == 0 && total.noQuorum == 0, "\(total)") }
    }

    /// The clients move from one data center to the other halfway: leaders hand the partitions
    /// over (RELEASE) and the invariants hold through the handoffs.
    @Test func leadershipFollowsTheClients() throws {
        var options = PaxosSimulation.Options()
        options.clientsMove = true
        options.operations = 240
        let total = try #require(Self.run(70_000...70_099, options: options))
        #expect(total.releases > 0, "\(total)")
    }

    /// Five voters (three full data centers, two witnesses), many partitions, heavy faults.
    @Test func fiveVotersUnderHeavyFaults() throws {
        var options = PaxosSimulation.Options()
        options.fullDatacenters = 3
        options.witnesses = 2
        options.partitions = 4
        options.lossPercent = 15
        options.duplicatePercent = 10
        options.crashPerMille = 5
        options.partitionPerMille = 8
        _ = try #require(Self.run(60_000...60_199, options: options))
    }
}
