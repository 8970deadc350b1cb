// Unit checks of the replica on inputs the simulator does not make: a restart after a PREPARE
// its own acceptor refused, and messages whose fields are out of range.
import MeridianCore
import MeridianPaxos
import Testing

@Suite struct PaxosReplicaTests {
    static func replica(durable: PaxosDurableState = PaxosDurableState(), restarted: Bool = false) -> PaxosReplica {
        PaxosReplica(
            configuration: PaxosConfiguration(voterCount: 3, learners: [0, 1], me: 0, partitionCount: 4), durable: durable,
            now: PaxosTime(monotonicMs: 1_000, wallMs: 1_700_000_000_000), seed: 1, restarted: restarted)
    }

    static func prepareRounds(_ effects: PaxosEffects) -> [UInt64] {
        effects.messages.compactMap { if case .prepare(_, let ballot, _, _) = $0.message { return ballot.round } else { return nil } }
    }

    /// The ballot a PREPARE carries is on disk before the PREPARE leaves; after a restart the
    /// next PREPARE uses a higher round even though no acceptor (its own included) promised it.
    @Test func aRestartedProposerNeverReusesItsBallot() {
        var first = Self.replica()
        first.submit(StrongCommand(.get(key: Array("k".utf8))), partition: 1, client: 1, now: PaxosTime(monotonicMs: 1_000, wallMs: 0))
        let rounds = Self.prepareRounds(first.effects)
        #expect(!rounds.isEmpty)
        #expect(first.effects.persist.contains { if case .proposed(1, let ballot) = $0 { return ballot.round == rounds[0] } else { return false } })
        var disk = PaxosDurableState()
        for change in first.effects.persist { disk.apply(change) }
        var restarted = Self.replica(durable: disk, restarted: true)
        let later = PaxosTime(monotonicMs: 10_000, wallMs: 0)
        restarted.submit(StrongCommand(.get(key: Array("k".utf8))), partition: 1, client: 2, now: later)
        #expect(Self.prepareRounds(restarted.effects).allSatisfy { $0 > rounds[0] })
    }

    /// Out-of-range voters, rounds, slots and durations are dropped and counted, never trapped on.
    @Test func messagesOutOfRangeAreRejected() {
        var replica = Self.replica()
        let now = PaxosTime(monotonicMs: 5_000, wallMs: 0)
        let noop = StrongEntry.noop(timeMs: 0)
        let hostile: [PaxosMessage] = [
            .prepare(partition: 0, ballot: Ballot(round: .max, voter: 1), fromSlot: 1, sentAt: 0),
            .prepare(partition: 0, ballot: Ballot(round: 1, voter: 99), fromSlot: 1, sentAt: 0),
            .accept(partition: 0, ballot: Ballot(round: 1, voter: 1), slot: .max, entry: noop, chosenThrough: 0, truncateThrough: 0, sentAt: 0),
            .nack(partition: 0, ballot: .zero, promised: .zero, leaseHolder: 1, leaseRemainingMs: .max, behindFrom: nil),
            .nack(partition: 0, ballot: .zero, promised: .zero, leaseHolder: 42, leaseRemainingMs: 10, behindFrom: nil),
            .promise(partition: 0, ballot: Ballot(round: 1, voter: 0), accepted: [AcceptedEntry(slot: .max - 1, ballot: Ballot(round: 1, voter: 1), entry: noop)],
                     chosen: [], applied: 0, sentAt: 0, part: 0, parts: 1),
            .commit(partition: 0, entries: [ChosenEntry(slot: .max, entry: noop)], chosenThrough: 0, truncateThrough: 0),
            .forward(partition: 0, request: RequestID(origin: 77, sequence: 1), command: StrongCommand(.get(key: [1]))),
        ]
        for message in hostile { replica.receive(message, from: 1, now: now) }
        replica.receive(.learned(partition: 0, applied: 1), from: 9, now: now)
        let rejected = replica.rejectedMessages
        let quiet = replica.effects.messages.isEmpty && replica.effects.persist.isEmpty
        #expect(rejected == hostile.count + 1 && quiet)
    }

    /// A promise reporting an accepted slot far beyond the log (damaged) makes the proposer give
    /// up that ballot rather than fill millions of slots with noops.
    @Test func aPromiseWithAnImpossibleGapIsNotRecovered() {
        var replica = Self.replica()
        let now = PaxosTime(monotonicMs: 1_000, wallMs: 0)
        replica.submit(StrongCommand(.get(key: [1])), partition: 0, client: 1, now: now)
        guard case .prepare(_, let ballot, _, _)? = replica.effects.messages.first?.message else {
            Issue.record("no PREPARE"); return
        }
        replica.effects = PaxosEffects()
        let far = AcceptedEntry(slot: 1 << 40, ballot: Ballot(round: 1, voter: 1), entry: .noop(timeMs: 0))
        replica.receive(.promise(partition: 0, ballot: ballot, accepted: [far], chosen: [], applied: 0, sentAt: 1_000, part: 0, parts: 1), from: 1, now: now)
        replica.receive(.promise(partition: 0, ballot: ballot, accepted: [], chosen: [], applied: 0, sentAt: 1_000, part: 0, parts: 1), from: 2, now: now)
        let leader = replica.isLeader(0)
        let rejected = replica.rejectedMessages
        let sent = replica.effects.messages.count
        #expect(!leader && rejected == 1 && sent < 10)
    }
}

extension PaxosReplicaTests {
    /// A witness holding more accepted entries than one frame carries answers PREPARE in parts;
    /// the proposer counts its promise once every part arrived (here in reverse order, one
    /// twice) and re-proposes every entry it reported.
    @Test func aPromiseTooLargeForOneFrameComesInParts() {
        let now = PaxosTime(monotonicMs: 1_000, wallMs: 0)
        var witness = PaxosReplica(
            configuration: PaxosConfiguration(voterCount: 3, learners: [0, 1], me: 2, partitionCount: 4), durable: PaxosDurableState(),
            now: now, seed: 2, restarted: false)
        let old = Ballot(round: 0, voter: 1)  // below the proposer's first ballot (1.0)
        let big = [UInt8](repeating: 7, count: 700 << 10)
        for slot in UInt64(1)...3 {
            let entry = StrongEntry(request: RequestID(origin: 1, sequence: slot), timeMs: 0,
                                    command: StrongCommand(.set(key: Array("k\(slot)".utf8), value: big, options: SetOptions())))
            witness.receive(.accept(partition: 0, ballot: old, slot: slot, entry: entry, chosenThrough: 0, truncateThrough: 0, sentAt: 0), from: 1, now: now)
        }
        witness.effects = PaxosEffects()
        // Later than the lease the witness granted voter 1 with those ACCEPTs.
        let later = PaxosTime(monotonicMs: 5_000, wallMs: 0)
        var proposer = Self.replica()
        proposer.submit(StrongCommand(.get(key: [1])), partition: 0, client: 1, now: later)
        guard case .prepare(_, let ballot, let fromSlot, let sentAt)? = proposer.effects.messages.first?.message else {
            Issue.record("no PREPARE"); return
        }
        proposer.effects = PaxosEffects()
        witness.receive(.prepare(partition: 0, ballot: ballot, fromSlot: fromSlot, sentAt: sentAt), from: 0, now: later)
        let parts = witness.effects.messages.map(\.message)
        let partCount = parts.count
        #expect(partCount >= 2)
        proposer.receive(.promise(partition: 0, ballot: ballot, accepted: [], chosen: [], applied: 0, sentAt: sentAt, part: 0, parts: 1), from: 0, now: later)
        var leaderEarly = false
        for message in parts.reversed() {
            leaderEarly = leaderEarly || proposer.isLeader(0)
            proposer.receive(message, from: 2, now: later)
        }
        #expect(!leaderEarly, "leader before every part arrived")
        proposer.receive(parts[0], from: 2, now: later)  // a duplicate part changes nothing
        let leader = proposer.isLeader(0)
        #expect(leader)
        let reproposed = Set(proposer.effects.messages.compactMap { item -> UInt64? in
            if case .accept(_, _, let slot, let entry, _, _, _) = item.message, entry.command != nil { return slot } else { return nil }
        })
        #expect(reproposed == [1, 2, 3])
    }
}

extension PaxosReplicaTests {
    /// A leader outbid by one voter keeps leading while the others follow it (no step-down at
    /// the first refusal), but once nothing is chosen any more — here the voter it still relied
    /// on went down — it steps down after `outbidPatienceMs` and comes back with a higher ballot
    /// rather than wait for that voter forever (found by a second reading of the change).
    @Test func anOutbidLeaderThatStopsChoosingStepsDown() {
        var replica = Self.replica()
        let start = PaxosTime(monotonicMs: 1_000, wallMs: 1_700_000_000_000)
        replica.submit(StrongCommand(.set(key: [1], value: [2], options: SetOptions())), partition: 0, client: 1, now: start)
        guard case .prepare(_, let ballot, _, let sentAt)? = replica.effects.messages.first?.message else {
            Issue.record("no PREPARE"); return
        }
        for voter in [0, 2] {
            replica.receive(.promise(partition: 0, ballot: ballot, accepted: [], chosen: [], applied: 0, sentAt: sentAt, part: 0, parts: 1), from: voter, now: start)
        }
        #expect(replica.isLeader(0))
        // Voter 1 promised a rival's higher ballot; only the leader's own acceptor accepts; the
        // witness (voter 2) is gone.
        let rival = Ballot(round: ballot.round + 3, voter: 1)
        replica.receive(.nack(partition: 0, ballot: ballot, promised: rival, leaseHolder: nil, leaseRemainingMs: 0, behindFrom: nil), from: 1, now: start)
        replica.receive(.accepted(partition: 0, ballot: ballot, slot: 1, applied: 0, sentAt: sentAt), from: 0, now: start)
        let stillLeading = replica.isLeader(0)
        #expect(stillLeading, "one refusal does not unseat a leader")
        replica.effects = PaxosEffects()
        var higher: [UInt64] = []
        for step in 1...60 {
            replica.tick(now: PaxosTime(monotonicMs: 1_000 + Int64(step) * 50, wallMs: start.wallMs + Int64(step) * 50))
            higher += Self.prepareRounds(replica.effects).filter { $0 > rival.round }
            replica.effects = PaxosEffects()
        }
        #expect(!replica.isLeader(0) && !higher.isEmpty, "an outbid leader that chose nothing for 3 s never tried a higher ballot")
    }
}
