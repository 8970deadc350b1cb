import MeridianCore

/// The strong protocol's fixed parameters on one node (docs/CONSISTENCY.md, "Roles").
public struct PaxosConfiguration: Sendable {
    /// Voters are numbered `0..<voterCount`: one per full data center, then the witnesses.
    public var voterCount: Int
    /// The full voters: they learn and apply the log. The others are witnesses.
    public var learners: [Int]
    /// This node's voter number.
    public var me: Int
    public var partitionCount: Int
    /// How long a voter's lease grant lasts on its own clock.
    public var leaseMs: Int64 = 2_000
    /// The clock-rate error the lease arithmetic allows (0.001 = 0.1 %).
    public var maxDrift = 0.001
    /// A strong command's bound: past it the client gets `noQuorum` or `uncertain`.
    public var timeoutMs: Int64 = 2_000
    /// Unanswered PREPARE / ACCEPT / LEARN are sent again after this long.
    public var retryMs: Int64 = 200
    /// A learner snapshots its applied state every this many entries, and forgets the chosen
    /// entries its snapshot covers once every full voter has applied them (log compaction).
    public var compactionEntries: UInt64 = 10_000

    public init(voterCount: Int, learners: [Int], me: Int, partitionCount: Int) {
        self.voterCount = voterCount
        self.learners = learners
        self.me = me
        self.partitionCount = partitionCount
    }

    public var majority: Int { voterCount / 2 + 1 }
    public var isWitness: Bool { !learners.contains(me) }

    /// How long after the majority's earliest grant the leader still trusts its lease: the
    /// voters' `leaseMs` on their clocks, shortened by the drift both clocks may have.
    var leaseTrustMs: Int64 { Int64(Double(leaseMs) * (1 - 2 * maxDrift)) }
}

/// A node's two clocks: monotonic for leases and timeouts, wall for entry stamps.
public struct PaxosTime: Sendable {
    public var monotonicMs: Int64
    public var wallMs: Int64

    public init(monotonicMs: Int64, wallMs: Int64) {
        self.monotonicMs = monotonicMs
        self.wallMs = wallMs
    }
}

/// How a client's strong command ended.
public enum StrongResult: Equatable, Sendable {
    case reply(StrongReply)
    /// Not proposed within the timeout (no quorum, no leader): certainly not applied.
    case noQuorum
    /// Proposed but not known chosen within the timeout: it may still be applied.
    case uncertain
}

/// What one step produced. The shell makes `persist` durable before it sends any message (a
/// voter's answer must not outrun its disk), then sends `messages` and hands out
/// `completions`. Messages to `configuration.me` are delivered back to this replica.
public struct PaxosEffects: Sendable {
    public var persist: [DurableChange] = []
    public var messages: [(to: Int, message: PaxosMessage)] = []
    public var completions: [(client: UInt64, result: StrongResult)] = []
    /// Entries applied in slot order (for observers: the audit log, INFO).
    public var applied: [(partition: Int, slot: UInt64, entry: StrongEntry)] = []

    public init() {}

    public var isEmpty: Bool { persist.isEmpty && messages.isEmpty && completions.isEmpty && applied.isEmpty }
}

/// One node's part of the strong protocol for every partition: acceptor (voter), proposer and
/// leader, learner. A deterministic state machine: it is driven by `submit`, `receive` and
/// `tick` with the time passed in, and answers through `effects`; the NIO shell and the
/// simulator drive the same code.
public struct PaxosReplica: Sendable {
    public let configuration: PaxosConfiguration
    public private(set) var partitions: [Int: PartitionState] = [:]
    /// Commands this node forwarded to a leader and still waits for.
    private var forwarded: [RequestID: Forwarded] = [:]
    private var nextSequence: UInt64
    /// A restarted voter refuses every PREPARE for one lease length: it may have granted a
    /// lease before it crashed and has forgotten to whom.
    private let quarantineUntil: Int64
    private var random: SplitMix64
    public var effects = PaxosEffects()
    /// The time of the input being handled (applying entries may dispatch commands again).
    private var clock: PaxosTime
    /// Messages dropped because a field was out of range (a damaged or hostile peer).
    public private(set) var rejectedMessages = 0
    /// Safety violations seen locally (two different entries for one slot): the simulator's
    /// alarm; never expected.
    public private(set) var violations: [String] = []

    public init(configuration: PaxosConfiguration, durable: PaxosDurableState, now: PaxosTime, seed: UInt64, restarted: Bool) {
        self.configuration = configuration
        // Unique across restarts: a reply to a request of the previous life cannot match.
        self.nextSequence = UInt64(max(0, now.wallMs)) << 20
        self.quarantineUntil = restarted ? now.monotonicMs + configuration.leaseMs : Int64.min
        self.random = SplitMix64(seed: seed)
        self.clock = now
        for (index, saved) in durable.partitions {
            var state = PartitionState()
            state.promised = saved.promised
            state.forgottenThrough = saved.forgottenThrough
            for (slot, accepted) in saved.accepted where saved.chosen[slot] == nil {
                state.accepted[slot] = accepted
                state.promised = max(state.promised, accepted.ballot)
            }
            state.highestSeen = max(state.promised, saved.proposed)
            if let snapshot = saved.snapshot {
                state.state = StrongState(snapshot.state)
                state.applied = snapshot.slot
                state.snapshotSlot = snapshot.slot
            }
            state.chosen = saved.chosen
            state.chosenFloor = saved.chosenForgottenThrough
            state.accepted = state.accepted.filter { $0.key > state.applied }
            partitions[index] = state
            applyContiguous(index)
        }
        effects.applied.removeAll()
    }

    // MARK: - Public inputs

    /// A client's command for `partition`; its result comes back in `effects.completions`
    /// under `client`.
    public mutating func submit(_ command: StrongCommand, partition: Int, client: UInt64, now: PaxosTime) {
        precondition(!configuration.isWitness, "a witness serves no clients")
        clock = now
        var state = partitions[partition] ?? PartitionState()
        state.lastLocalActivity = now.monotonicMs
        partitions[partition] = state
        let request = newRequest()
        dispatch(Pending(client: .local(client), request: request, command: command, deadline: now.monotonicMs + configuration.timeoutMs), partition, now: now)
    }

    public mutating func receive(_ message: PaxosMessage, from voter: Int, now: PaxosTime) {
        clock = now
        if let partition = message.partition {
            guard partition >= 0 && partition < configuration.partitionCount else { return }
        }
        guard voter >= 0 && voter < configuration.voterCount, Self.isPlausible(message, voters: configuration.voterCount) else {
            rejectedMessages += 1
            return
        }
        switch message {
        case .prepare(let p, let ballot, let fromSlot, let sentAt):
            onPrepare(p, ballot: ballot, fromSlot: fromSlot, sentAt: sentAt, from: voter, now: now)
        case .promise(let p, let ballot, let accepted, let chosen, let applied, let sentAt, let part, let parts):
            onPromise(p, ballot: ballot, accepted: accepted, chosen: chosen, applied: applied, sentAt: sentAt, part: part, parts: parts, from: voter, now: now)
        case .accept(let p, let ballot, let slot, let entry, let chosenThrough, let truncateThrough, let sentAt):
            onAccept(p, ballot: ballot, slot: slot, entry: entry, chosenThrough: chosenThrough, truncateThrough: truncateThrough, sentAt: sentAt, from: voter, now: now)
        case .accepted(let p, let ballot, let slot, let applied, let sentAt):
            onAccepted(p, ballot: ballot, slot: slot, applied: applied, sentAt: sentAt, from: voter, now: now)
        case .nack(let p, let ballot, let promised, let holder, let remaining, let behindFrom):
            onNack(p, ballot: ballot, promised: promised, leaseHolder: holder, leaseRemainingMs: remaining, behindFrom: behindFrom, from: voter, now: now)
        case .commit(let p, let entries, let chosenThrough, let truncateThrough):
            onCommit(p, entries: entries, chosenThrough: chosenThrough, truncateThrough: truncateThrough, from: voter, now: now)
        case .learned(let p, let applied):
            guard configuration.learners.contains(voter) else { return }
            // Another learner got further: there is something to learn from it.
            modify(p) {
                $0.fullApplied[voter] = max($0.fullApplied[voter] ?? 0, applied)
                $0.chosenHint = max($0.chosenHint, applied)
            }
            if configuration.isWitness, let state = partitions[p] {
                let everywhere = configuration.learners.map { state.fullApplied[$0] ?? 0 }.min() ?? 0
                forget(p, through: everywhere)
            }
        case .learn(let p, let fromSlot):
            onLearn(p, fromSlot: fromSlot, from: voter)
        case .renew(let p, let ballot, let truncateThrough, let sentAt):
            onRenew(p, ballot: ballot, truncateThrough: truncateThrough, sentAt: sentAt, from: voter, now: now)
        case .renewed(let p, let ballot, let applied, let sentAt):
            let isLearner = configuration.learners.contains(voter)
            modify(p) { state in
                guard case .leading(var leading) = state.role, leading.ballot == ballot else { return }
                leading.leaseStarts[voter] = max(leading.leaseStarts[voter] ?? .min, min(sentAt, now.monotonicMs))
                state.role = .leading(leading)
                if isLearner { state.fullApplied[voter] = max(state.fullApplied[voter] ?? 0, applied) }
            }
        case .release(let p, let ballot):
            // The lease holder gave the partition up: its grant here ends now.
            modify(p) { state in
                state.releasedBallot = max(state.releasedBallot ?? .zero, ballot)
                guard state.promised == ballot, state.leaseHolder == ballot.voter else { return }
                state.leaseHolder = nil
                state.leaseUntil = .min
                if state.leaderHint == ballot.voter { state.leaderHint = nil }
            }
        case .forward(let p, let request, let command):
            guard !configuration.isWitness else {
                send(.forwardReply(request: request, outcome: .notLeader), to: voter)
                return
            }
            dispatch(Pending(client: .forwarded(from: voter, request: request), request: request, command: command, deadline: now.monotonicMs + configuration.timeoutMs), p, now: now)
        case .forwardReply(let request, let outcome):
            guard let waiting = forwarded.removeValue(forKey: request) else { return }
            switch outcome {
            case .reply(let reply): complete(waiting.pending, .reply(reply))
            case .uncertain: complete(waiting.pending, .uncertain)
            case .notLeader:
                modify(waiting.partition) { $0.leaderHint = nil }
                dispatch(waiting.pending, waiting.partition, now: now)
            }
        }
    }

    /// Retransmissions, lease renewal, catching up, truncation hints and deadlines.
    public mutating func tick(now: PaxosTime) {
        clock = now
        let nowMs = now.monotonicMs
        for request in forwarded.keys.sorted(by: { $0.sequence < $1.sequence }) where forwarded[request]!.pending.deadline <= nowMs {
            let waiting = forwarded.removeValue(forKey: request)!
            complete(waiting.pending, .uncertain)
        }
        for p in partitions.keys.sorted() {
            var state = partitions[p]!
            // Deadlines.
            let expired = state.waiting.filter { $0.deadline <= nowMs }
            state.waiting.removeAll { $0.deadline <= nowMs }
            for slot in state.awaiting.keys.sorted() where state.awaiting[slot]!.pending.deadline <= nowMs {
                let awaited = state.awaiting.removeValue(forKey: slot)!
                partitions[p] = state
                complete(awaited.pending, .uncertain)
                state = partitions[p]!
            }
            partitions[p] = state
            for pending in expired { complete(pending, pending.proposed ? .uncertain : .noQuorum) }
            state = partitions[p]!

            switch state.role {
            case .preparing(let preparing) where preparing.outbidAtMs.map({ nowMs - $0 >= outbidPatienceMs }) ?? false:
                // Outbid and still no majority: the refusing voter will never promise this ballot,
                // so waiting on the others could last forever (one of them down). Step down and
                // come back with a higher ballot.
                stepDown(p, now: now)
                state = partitions[p]!
            case .leading(let leading) where !leading.inFlight.isEmpty
                && leading.outbidAtMs.map({ nowMs - max($0, leading.lastChosenAtMs) >= outbidPatienceMs }) ?? false:
                // Outbid and nothing chosen since: same reasoning, for a leader.
                stepDown(p, now: now)
                state = partitions[p]!
            case .preparing(var preparing):
                if nowMs - preparing.lastSend >= configuration.retryMs {
                    preparing.lastSend = nowMs
                    state.role = .preparing(preparing)
                    partitions[p] = state
                    for voter in 0..<configuration.voterCount where preparing.promises[voter] == nil {
                        // A promise whose parts are still arriving is not asked for again (each
                        // answer would be sent whole once more), unless its parts stopped coming.
                        if let partial = preparing.partial[voter], nowMs - partial.lastArrival < 4 * configuration.retryMs { continue }
                        send(.prepare(partition: p, ballot: preparing.ballot, fromSlot: preparing.fromSlot, sentAt: nowMs), to: voter)
                    }
                    state = partitions[p]!
                }
            case .leading(var leading):
                let watermark = truncationWatermark(state)
                for slot in leading.inFlight.keys.sorted() where nowMs - leading.inFlight[slot]!.lastSend >= configuration.retryMs {
                    leading.inFlight[slot]!.lastSend = nowMs
                    let flight = leading.inFlight[slot]!
                    for voter in 0..<configuration.voterCount where !flight.acceptedBy.contains(voter) {
                        send(.accept(partition: p, ballot: leading.ballot, slot: slot, entry: flight.entry, chosenThrough: state.applied, truncateThrough: watermark, sentAt: nowMs), to: voter)
                    }
                }
                // Keep the lease while this node's own clients use the partition; let it lapse
                // otherwise, so that another data center writing here can take over.
                let active = nowMs - state.lastLocalActivity < configuration.leaseMs
                let remaining = leaseExpiry(leading) - nowMs
                if active && remaining < configuration.leaseMs / 2 && nowMs - leading.lastRenew >= configuration.retryMs {
                    leading.lastRenew = nowMs
                    for voter in 0..<configuration.voterCount {
                        send(.renew(partition: p, ballot: leading.ballot, truncateThrough: watermark, sentAt: nowMs), to: voter)
                    }
                }
                // COMMITs lost on the way: send a lagging learner what it lacks.
                if nowMs - leading.lastCommitResend >= configuration.retryMs {
                    leading.lastCommitResend = nowMs
                    for learner in configuration.learners where learner != configuration.me {
                        let behind = state.fullApplied[learner] ?? 0
                        guard behind < state.applied else { continue }
                        var entries: [ChosenEntry] = []
                        var bytes = 0
                        var slot = behind + 1
                        while slot <= state.applied, let entry = state.chosen[slot], entries.count < Self.learnBatchMax, bytes < Self.learnBatchBytes {
                            entries.append(ChosenEntry(slot: slot, entry: entry))
                            bytes += entry.approximateBytes
                            slot += 1
                        }
                        if !entries.isEmpty {
                            send(.commit(partition: p, entries: entries, chosenThrough: state.applied, truncateThrough: watermark), to: learner)
                        }
                    }
                }
                if watermark > leading.truncateSent {
                    leading.truncateSent = watermark
                    for voter in 0..<configuration.voterCount where !configuration.learners.contains(voter) {
                        send(.commit(partition: p, entries: [], chosenThrough: state.applied, truncateThrough: watermark), to: voter)
                    }
                }
                state.role = .leading(leading)
                // Leadership follows the clients (docs/CONSISTENCY.md, "Where leadership goes"):
                // a leader whose own clients left the partition a lease ago while another node
                // still forwards to it hands the partition over — it stops leading and releases
                // the voters' grants, so the forwarder's next command leads after one phase 1
                // instead of waiting out a lease that forwarded traffic would keep renewing.
                if nowMs - state.lastLocalActivity >= configuration.leaseMs && nowMs - state.lastForwarded < configuration.leaseMs
                    && leading.inFlight.isEmpty && state.waiting.isEmpty && state.awaiting.isEmpty && state.applied >= leading.recoveredThrough {
                    state.role = .follower
                    state.leaderHint = nil
                    state.lastForwarded = .min / 2
                    partitions[p] = state
                    for voter in 0..<configuration.voterCount {
                        send(.release(partition: p, ballot: leading.ballot), to: voter)
                    }
                    state = partitions[p]!
                }
                if case .leading = state.role, state.applied >= leading.recoveredThrough && !state.waiting.isEmpty {
                    let waiting = state.waiting
                    state.waiting = []
                    partitions[p] = state
                    for pending in waiting { dispatch(pending, p, now: now) }
                    state = partitions[p]!
                }
            case .follower:
                if !state.waiting.isEmpty && nowMs >= state.backoffUntil {
                    let waiting = state.waiting
                    state.waiting = []
                    partitions[p] = state
                    for pending in waiting { dispatch(pending, p, now: now) }
                    state = partitions[p]!
                }
                // Proposals of this node left in limbo, or a gap in the log no learner can
                // fill (a leader stepped down mid-way): with no live leader, lead to finish it.
                let unfinished = state.chosenHint > state.applied || (state.accepted.keys.max() ?? 0) > state.applied
                let stalled = unfinished && nowMs - state.lastProgress > 3 * configuration.retryMs
                let leaderKnown = state.leaderHint.map { Int($0) != configuration.me } == true && nowMs < state.leaderHintUntil
                if case .follower = state.role, !configuration.isWitness, !state.awaiting.isEmpty || stalled,
                   !leaderKnown, nowMs >= state.backoffUntil {
                    partitions[p] = state
                    startPrepare(p, now: now)
                    state = partitions[p]!
                }
            }
            // Tell the other voters what this learner applied: a witness forgets accepted
            // entries once every full voter has applied them (leader or not), and a learner
            // that missed COMMITs finds out there is more to learn.
            if !configuration.isWitness && state.applied > 0
                && (state.applied != state.reportedToWitnesses || nowMs - state.lastWitnessReport >= 10 * configuration.retryMs)
                && nowMs - state.lastWitnessReport >= configuration.retryMs {
                state.reportedToWitnesses = state.applied
                state.lastWitnessReport = nowMs
                partitions[p] = state
                for voter in 0..<configuration.voterCount where voter != configuration.me {
                    send(.learned(partition: p, applied: state.applied), to: voter)
                }
                state = partitions[p]!
            }
            // Log compaction: snapshot the applied state every `compactionEntries`, and forget
            // chosen entries that the snapshot covers and every full voter has applied (no
            // learner will ask for them, and no phase 1 starts below them).
            if !configuration.isWitness {
                if state.applied >= state.snapshotSlot + configuration.compactionEntries {
                    state.snapshotSlot = state.applied
                    effects.persist.append(.snapshot(partition: p, slot: state.applied, state: state.state.snapshot()))
                }
                var everywhere = state.applied
                for learner in configuration.learners where learner != configuration.me {
                    everywhere = min(everywhere, state.fullApplied[learner] ?? 0)
                }
                // At most a few snapshots' worth per tick: each forgetting is one store batch.
                let forgettable = min(everywhere, state.snapshotSlot, state.chosenFloor + 4 * configuration.compactionEntries)
                if forgettable >= state.chosenFloor + max(1, configuration.compactionEntries / 2) {
                    state.chosen = state.chosen.filter { $0.key > forgettable }
                    state.chosenFloor = forgettable
                    effects.persist.append(.forgetChosen(partition: p, throughSlot: forgettable))
                }
            }
            // Catch up: a learner that knows of chosen slots it lacks asks for them.
            if !configuration.isWitness && state.chosenHint > state.applied && nowMs - state.lastLearn >= configuration.retryMs {
                state.lastLearn = nowMs
                // Ask the learner known to be furthest ahead (a random one when none is).
                let others = configuration.learners.filter { $0 != configuration.me }
                let furthest = others.max { (state.fullApplied[$0] ?? 0) < (state.fullApplied[$1] ?? 0) }
                let ahead = furthest.flatMap { (state.fullApplied[$0] ?? 0) > state.applied ? $0 : nil }
                if let target = ahead ?? others.randomElement(using: &random) {
                    partitions[p] = state
                    send(.learn(partition: p, fromSlot: state.applied + 1), to: target)
                    state = partitions[p]!
                }
            }
            partitions[p] = state
        }
    }

    /// Whether every ballot, voter, slot and duration in a message is in range, so that no
    /// arithmetic on it can trap and no loop over its slots can run away. Slots are bounded far
    /// above anything a log reaches (2^48); a gap between a slot and this node's log is bounded
    /// where it is used.
    static func isPlausible(_ message: PaxosMessage, voters: Int) -> Bool {
        let slotLimit: UInt64 = 1 << 48
        func ballot(_ b: Ballot) -> Bool { Int(b.voter) < voters && b.round < slotLimit }
        func slot(_ s: UInt64) -> Bool { s < slotLimit }
        switch message {
        case .prepare(_, let b, let from, _):
            return ballot(b) && slot(from)
        case .promise(_, let b, let accepted, let chosen, let applied, _, let part, let parts):
            return ballot(b) && slot(applied) && accepted.allSatisfy { ballot($0.ballot) && slot($0.slot) } && chosen.allSatisfy { slot($0.slot) }
                && parts >= 1 && parts <= 1 << 20 && part >= 0 && part < parts
        case .accept(_, let b, let s, _, let chosenThrough, let truncateThrough, _):
            return ballot(b) && slot(s) && slot(chosenThrough) && slot(truncateThrough)
        case .accepted(_, let b, let s, let applied, _):
            return ballot(b) && slot(s) && slot(applied)
        case .nack(_, let b, let promised, let holder, let remaining, let behind):
            return ballot(b) && ballot(promised) && (holder.map { Int($0) < voters } ?? true)
                && remaining >= 0 && remaining <= 3_600_000 && (behind.map(slot) ?? true)
        case .commit(_, let entries, let chosenThrough, let truncateThrough):
            return entries.allSatisfy { slot($0.slot) } && slot(chosenThrough) && slot(truncateThrough)
        case .learned(_, let applied):
            return slot(applied)
        case .learn(_, let from):
            return slot(from)
        case .renew(_, let b, let truncateThrough, _):
            return ballot(b) && slot(truncateThrough)
        case .renewed(_, let b, let applied, _):
            return ballot(b) && slot(applied)
        case .release(_, let b):
            return ballot(b)
        case .forward(_, let request, _), .forwardReply(let request, _):
            return Int(request.origin) < voters
        }
    }

    // MARK: - Observers (INFO, tests, the simulator)

    /// Whether this node may answer reads of `partition` locally right now.
    public func holdsLease(_ partition: Int, now: PaxosTime) -> Bool {
        guard let state = partitions[partition], case .leading(let leading) = state.role else { return false }
        return now.monotonicMs < leaseExpiry(leading)
    }

    public func isLeader(_ partition: Int) -> Bool {
        guard case .leading = partitions[partition]?.role else { return false }
        return true
    }

    public func appliedSlot(_ partition: Int) -> UInt64 { partitions[partition]?.applied ?? 0 }
    public func state(_ partition: Int) -> StrongState? { partitions[partition]?.state }
    public func acceptedEntries(_ partition: Int) -> [UInt64: AcceptedEntry] { partitions[partition]?.accepted ?? [:] }

    // MARK: - Acceptor

    private mutating func onPrepare(_ p: Int, ballot: Ballot, fromSlot: UInt64, sentAt: Int64, from voter: Int, now: PaxosTime) {
        var state = partitions[p] ?? PartitionState()
        state.highestSeen = max(state.highestSeen, ballot)
        let nowMs = now.monotonicMs
        let leaseRunning = state.leaseHolder != nil && state.leaseHolder != ballot.voter && nowMs < state.leaseUntil
        if nowMs < quarantineUntil || leaseRunning || ballot < state.promised {
            partitions[p] = state
            send(.nack(partition: p, ballot: ballot, promised: state.promised, leaseHolder: leaseRunning ? state.leaseHolder : nil,
                       leaseRemainingMs: leaseRunning ? state.leaseUntil - nowMs : 0, behindFrom: nil), to: voter)
            return
        }
        let chosen = state.chosen.keys.filter { $0 >= fromSlot }.sorted()
        // A proposer far behind learns first (a PROMISE must fit a peer frame).
        let chosenBytes = chosen.reduce(0) { $0 + state.chosen[$1]!.approximateBytes }
        if chosen.count > Self.promiseChosenMax || chosenBytes > Self.promiseBytesMax {
            partitions[p] = state
            send(.nack(partition: p, ballot: ballot, promised: state.promised, leaseHolder: nil, leaseRemainingMs: 0, behindFrom: fromSlot), to: voter)
            return
        }
        promise(&state, ballot, partition: p)
        grantLease(&state, to: ballot, now: now)
        let accepted = state.accepted.values.filter { $0.slot >= fromSlot && state.chosen[$0.slot] == nil }.sorted { $0.slot < $1.slot }
        // Accepted entries can add up to more than a frame holds (a witness keeps them while a
        // full voter is away): the promise goes in parts of at most `promiseBytesMax` each.
        var parts: [[AcceptedEntry]] = [[]]
        var partBytes = chosenBytes + 8 * chosen.count
        for entry in accepted {
            let bytes = entry.entry.approximateBytes + 32
            if partBytes + bytes > Self.promiseBytesMax && partBytes > 0 {
                parts.append([])
                partBytes = 0
            }
            parts[parts.count - 1].append(entry)
            partBytes += bytes
        }
        let chosenEntries = chosen.map { ChosenEntry(slot: $0, entry: state.chosen[$0]!) }
        partitions[p] = state
        if Int(ballot.voter) != configuration.me { stepDownIfBeaten(p, by: ballot, now: now) }
        for (index, part) in parts.enumerated() {
            send(.promise(partition: p, ballot: ballot, accepted: part, chosen: index == 0 ? chosenEntries : [], applied: state.applied,
                          sentAt: sentAt, part: index, parts: parts.count), to: voter)
        }
    }

    private mutating func onAccept(
        _ p: Int, ballot: Ballot, slot: UInt64, entry: StrongEntry, chosenThrough: UInt64, truncateThrough: UInt64,
        sentAt: Int64, from voter: Int, now: PaxosTime
    ) {
        var state = partitions[p] ?? PartitionState()
        state.highestSeen = max(state.highestSeen, ballot)
        if ballot < state.promised {
            partitions[p] = state
            send(.nack(partition: p, ballot: ballot, promised: state.promised, leaseHolder: nil, leaseRemainingMs: 0, behindFrom: nil), to: voter)
            return
        }
        promise(&state, ballot, partition: p)
        if state.chosen[slot] == nil && slot > state.forgottenThrough && slot > state.applied {
            let record = AcceptedEntry(slot: slot, ballot: ballot, entry: entry)
            if state.accepted[slot] != record {
                state.accepted[slot] = record
                effects.persist.append(.accepted(partition: p, record))
            }
        }
        grantLease(&state, to: ballot, now: now)
        state.chosenHint = max(state.chosenHint, chosenThrough)
        partitions[p] = state
        forget(p, through: truncateThrough)
        if Int(ballot.voter) != configuration.me { stepDownIfBeaten(p, by: ballot, now: now) }
        send(.accepted(partition: p, ballot: ballot, slot: slot, applied: partitions[p]!.applied, sentAt: sentAt), to: voter)
    }

    private mutating func onRenew(_ p: Int, ballot: Ballot, truncateThrough: UInt64, sentAt: Int64, from voter: Int, now: PaxosTime) {
        var state = partitions[p] ?? PartitionState()
        guard ballot == state.promised else {
            send(.nack(partition: p, ballot: ballot, promised: state.promised, leaseHolder: nil, leaseRemainingMs: 0, behindFrom: nil), to: voter)
            return
        }
        grantLease(&state, to: ballot, now: now)
        partitions[p] = state
        forget(p, through: truncateThrough)
        send(.renewed(partition: p, ballot: ballot, applied: partitions[p]!.applied, sentAt: sentAt), to: voter)
    }

    /// Raises the promised ballot (durably) when `ballot` is above it.
    private mutating func promise(_ state: inout PartitionState, _ ballot: Ballot, partition p: Int) {
        guard ballot > state.promised else { return }
        state.promised = ballot
        effects.persist.append(.promised(partition: p, ballot: ballot))
    }

    /// A voter that promised, accepted from or renewed `ballot` grants its proposer a lease
    /// (and, when that is another node, takes it as the leader to forward to).
    private func grantLease(_ state: inout PartitionState, to ballot: Ballot, now: PaxosTime) {
        // A late RENEW or ACCEPT of a ballot whose leader released it grants nothing.
        if let released = state.releasedBallot, ballot <= released { return }
        state.leaseHolder = ballot.voter
        state.leaseUntil = now.monotonicMs + configuration.leaseMs
        if Int(ballot.voter) != configuration.me {
            state.leaderHint = ballot.voter
            state.leaderHintUntil = now.monotonicMs + configuration.leaseTrustMs
        }
    }

    /// A witness forgets accepted entries every full voter has applied (they are chosen and
    /// learned everywhere: no future leader's phase 1 starts below them).
    private mutating func forget(_ p: Int, through slot: UInt64) {
        guard configuration.isWitness, var state = partitions[p], slot > state.forgottenThrough else { return }
        state.forgottenThrough = slot
        state.accepted = state.accepted.filter { $0.key > slot }
        partitions[p] = state
        effects.persist.append(.forgetAccepted(partition: p, throughSlot: slot))
    }

    // MARK: - Proposer and leader

    private mutating func dispatch(_ pending: Pending, _ p: Int, now: PaxosTime) {
        var state = partitions[p] ?? PartitionState()
        switch state.role {
        case .leading(let leading):
            if case .forwarded = pending.client {
                state.lastForwarded = now.monotonicMs
                partitions[p] = state
            }
            if pending.command.isReadOnly && now.monotonicMs < leaseExpiry(leading) {
                if state.applied >= leading.recoveredThrough {
                    complete(pending, .reply(state.state.read(pending.command, nowMs: now.wallMs)))
                } else {
                    state.waiting.append(pending)
                    partitions[p] = state
                }
                return
            }
            propose(pending, p, now: now)
        case .preparing:
            state.waiting.append(pending)
            partitions[p] = state
        case .follower:
            guard case .local = pending.client else {
                // Forwards go to leaders: a follower neither forwards them again (no loops) nor
                // starts leading for another node's client (leadership follows local
                // clients). Its origin is told and leads, or forwards elsewhere.
                complete(pending, .noQuorum)
                return
            }
            if let hint = state.leaderHint, Int(hint) != configuration.me, now.monotonicMs < state.leaderHintUntil {
                forwarded[pending.request] = Forwarded(pending: pending, partition: p)
                send(.forward(partition: p, request: pending.request, command: pending.command), to: Int(hint))
                return
            }
            state.waiting.append(pending)
            partitions[p] = state
            if now.monotonicMs >= state.backoffUntil { startPrepare(p, now: now) }
        }
    }

    private mutating func startPrepare(_ p: Int, now: PaxosTime) {
        var state = partitions[p] ?? PartitionState()
        guard case .follower = state.role else { return }
        let round = max(state.highestSeen.round, state.promised.round) + 1
        let ballot = Ballot(round: round, voter: UInt16(configuration.me))
        state.highestSeen = ballot
        let fromSlot = state.applied + 1
        state.role = .preparing(Preparing(ballot: ballot, fromSlot: fromSlot, lastSend: now.monotonicMs))
        partitions[p] = state
        effects.persist.append(.proposed(partition: p, ballot: ballot))
        for voter in 0..<configuration.voterCount {
            send(.prepare(partition: p, ballot: ballot, fromSlot: fromSlot, sentAt: now.monotonicMs), to: voter)
        }
    }

    private mutating func onPromise(
        _ p: Int, ballot: Ballot, accepted: [AcceptedEntry], chosen: [ChosenEntry], applied: UInt64, sentAt: Int64,
        part: Int, parts: Int, from voter: Int, now: PaxosTime
    ) {
        guard var state = partitions[p], case .preparing(var preparing) = state.role, preparing.ballot == ballot,
              preparing.promises[voter] == nil else { return }
        // A voter that refused for a while (a lease running, a quarantine) and now promises no
        // longer counts against this ballot.
        preparing.refusals.remove(voter)
        var promise = preparing.partial[voter] ?? Promise(accepted: [], chosen: [], sentAt: min(sentAt, now.monotonicMs), answer: sentAt)
        // Parts of one answer share its PREPARE's sentAt; an answer to a retransmitted PREPARE
        // starts over (parts of two answers are never mixed), and a part counts once.
        if promise.answer != sentAt {
            promise = Promise(accepted: [], chosen: [], sentAt: min(sentAt, now.monotonicMs), answer: sentAt)
        }
        guard promise.parts == nil || promise.parts == parts, !promise.partsSeen.contains(part) else { return }
        promise.parts = parts
        promise.partsSeen.insert(part)
        promise.lastArrival = now.monotonicMs
        promise.accepted += accepted
        promise.chosen += chosen
        promise.sentAt = min(promise.sentAt, sentAt, now.monotonicMs)
        if promise.partsSeen.count == parts {
            preparing.partial[voter] = nil
            preparing.promises[voter] = promise
        } else {
            preparing.partial[voter] = promise
        }
        if configuration.learners.contains(voter) { state.fullApplied[voter] = max(state.fullApplied[voter] ?? 0, applied) }
        state.role = .preparing(preparing)
        partitions[p] = state
        guard preparing.promises.count >= configuration.majority else { return }
        becomeLeader(p, preparing, now: now)
    }

    /// Phase 1 is done: learn what the promises say is chosen, re-propose for every other slot
    /// the accepted entry with the highest ballot (a `noop` where none), then serve (Paxos Made
    /// Simple, §2.2 phase 2a and §3).
    private mutating func becomeLeader(_ p: Int, _ preparing: Preparing, now: PaxosTime) {
        for promise in preparing.promises.values {
            for chosen in promise.chosen { learnChosen(p, chosen.slot, chosen.entry) }
        }
        var state = partitions[p]!
        var highest: [UInt64: AcceptedEntry] = [:]
        var maxSlot = preparing.fromSlot - 1
        for promise in preparing.promises.values {
            for accepted in promise.accepted {
                maxSlot = max(maxSlot, accepted.slot)
                if let current = highest[accepted.slot], current.ballot >= accepted.ballot { continue }
                highest[accepted.slot] = accepted
            }
            for chosen in promise.chosen { maxSlot = max(maxSlot, chosen.slot) }
        }
        // Slots this node proposed in before and still waits on are filled too, so that new
        // proposals never land on them.
        maxSlot = max(maxSlot, state.applied, state.awaiting.keys.max() ?? 0)
        // No log has that many slots in flight: a promise reporting one is damaged, and
        // filling the gap with noops would never end. Give up this ballot.
        if maxSlot - state.applied > Self.recoveryGapMax {
            rejectedMessages += 1
            partitions[p] = state
            stepDown(p, now: now)
            return
        }
        var leading = Leading(ballot: preparing.ballot, nextSlot: maxSlot + 1, recoveredThrough: maxSlot)
        for (voter, promise) in preparing.promises { leading.leaseStarts[voter] = promise.sentAt }
        leading.lastStamp = state.state.timeMs
        state.backoffMs = 0
        state.leaderHint = UInt16(configuration.me)
        let firstUnknown = state.applied + 1
        var recovered: [(UInt64, StrongEntry)] = []
        if firstUnknown <= maxSlot {
            for slot in firstUnknown...maxSlot where state.chosen[slot] == nil {
                let entry = highest[slot]?.entry ?? .noop(timeMs: max(now.wallMs, leading.lastStamp))
                leading.lastStamp = max(leading.lastStamp, entry.timeMs)
                leading.inFlight[slot] = InFlight(entry: entry, lastSend: now.monotonicMs)
                recovered.append((slot, entry))
            }
        }
        let waiting = state.waiting
        state.waiting = []
        state.role = .leading(leading)
        partitions[p] = state
        let watermark = truncationWatermark(state)
        for (slot, entry) in recovered {
            for voter in 0..<configuration.voterCount {
                send(.accept(partition: p, ballot: leading.ballot, slot: slot, entry: entry, chosenThrough: state.applied, truncateThrough: watermark, sentAt: now.monotonicMs), to: voter)
            }
        }
        for pending in waiting { dispatch(pending, p, now: now) }
    }

    private mutating func propose(_ pending: Pending, _ p: Int, now: PaxosTime) {
        guard var state = partitions[p], case .leading(var leading) = state.role else { return }
        let slot = leading.nextSlot
        leading.nextSlot += 1
        leading.lastStamp = max(leading.lastStamp, now.wallMs, state.state.timeMs)
        let entry = StrongEntry(request: pending.request, timeMs: leading.lastStamp, command: pending.command)
        leading.inFlight[slot] = InFlight(entry: entry, lastSend: now.monotonicMs)
        var proposed = pending
        proposed.proposed = true
        state.awaiting[slot] = Awaited(request: entry.request, pending: proposed)
        state.role = .leading(leading)
        partitions[p] = state
        let watermark = truncationWatermark(state)
        for voter in 0..<configuration.voterCount {
            send(.accept(partition: p, ballot: leading.ballot, slot: slot, entry: entry, chosenThrough: state.applied, truncateThrough: watermark, sentAt: now.monotonicMs), to: voter)
        }
    }

    private mutating func onAccepted(_ p: Int, ballot: Ballot, slot: UInt64, applied: UInt64, sentAt: Int64, from voter: Int, now: PaxosTime) {
        guard var state = partitions[p], case .leading(var leading) = state.role, leading.ballot == ballot else { return }
        leading.leaseStarts[voter] = max(leading.leaseStarts[voter] ?? .min, min(sentAt, now.monotonicMs))
        if configuration.learners.contains(voter) { state.fullApplied[voter] = max(state.fullApplied[voter] ?? 0, applied) }
        guard var flight = leading.inFlight[slot] else {
            state.role = .leading(leading)
            partitions[p] = state
            return
        }
        flight.acceptedBy.insert(voter)
        if flight.acceptedBy.count >= configuration.majority {
            leading.inFlight[slot] = nil
            leading.lastChosenAtMs = now.monotonicMs
            state.role = .leading(leading)
            partitions[p] = state
            learnChosen(p, slot, flight.entry)
            let after = partitions[p]!
            let watermark = truncationWatermark(after)
            for learner in configuration.learners where learner != configuration.me {
                send(.commit(partition: p, entries: [ChosenEntry(slot: slot, entry: flight.entry)], chosenThrough: after.applied, truncateThrough: watermark), to: learner)
            }
        } else {
            leading.inFlight[slot] = flight
            state.role = .leading(leading)
            partitions[p] = state
        }
    }

    private mutating func onNack(
        _ p: Int, ballot: Ballot, promised: Ballot, leaseHolder: UInt16?, leaseRemainingMs: Int64, behindFrom: UInt64?,
        from voter: Int, now: PaxosTime
    ) {
        guard var state = partitions[p] else { return }
        state.highestSeen = max(state.highestSeen, promised)
        if let holder = leaseHolder, Int(holder) != configuration.me {
            state.leaderHint = holder
            state.leaderHintUntil = now.monotonicMs + leaseRemainingMs
        }
        partitions[p] = state
        if behindFrom != nil {
            send(.learn(partition: p, fromSlot: state.applied + 1), to: voter)
        }
        switch state.role {
        case .preparing(var preparing) where preparing.ballot == ballot:
            preparing.refusals.insert(voter)
            if promised > ballot && preparing.outbidAtMs == nil { preparing.outbidAtMs = now.monotonicMs }
            state.role = .preparing(preparing)
            partitions[p] = state
            // Give up once a majority can no longer promise. One voter that promised a rival
            // ballot (often the rival's own) does not decide it: the others may still promise
            // this one — giving up at the first refusal let two proposers that each held their
            // own vote abandon each other in turn until a client timed out (seed 50155).
            if preparing.refusals.count > configuration.voterCount - configuration.majority {
                stepDown(p, now: now)
            }
        case .leading(var leading) where leading.ballot == ballot && promised > ballot:
            // One voter that promised a rival ballot does not unseat a leader that a majority
            // still accepts (and whose lease a majority still grants, refusing the rival): it
            // steps down once a majority can no longer accept its ballot. Stepping down at the
            // first refusal once left a partition without a leader until the lease ran out,
            // with no fault at all (seed 50037). A leader outbid that stops choosing steps down
            // after `outbidPatienceMs` (tick).
            leading.refusals.insert(voter)
            if leading.outbidAtMs == nil { leading.outbidAtMs = now.monotonicMs }
            state.role = .leading(leading)
            partitions[p] = state
            if leading.refusals.count > configuration.voterCount - configuration.majority {
                stepDown(p, now: now)
            }
        default:
            break
        }
    }

    /// Another proposer's ballot reached this node's acceptor: if it beats this node's own,
    /// this node is no longer leader.
    private mutating func stepDownIfBeaten(_ p: Int, by ballot: Ballot, now: PaxosTime) {
        guard let state = partitions[p] else { return }
        switch state.role {
        case .preparing(let preparing) where preparing.ballot < ballot: stepDown(p, now: now)
        case .leading(let leading) where leading.ballot < ballot: stepDown(p, now: now)
        default: break
        }
    }

    /// Back to follower after a randomized, doubling backoff (so that dueling proposers
    /// separate); commands waiting for leadership are dispatched again (forwarded when a
    /// leader is known). Proposals in flight stay awaited: the slot's chosen entry tells.
    private mutating func stepDown(_ p: Int, now: PaxosTime) {
        guard var state = partitions[p] else { return }
        state.role = .follower
        state.backoffMs = min(max(state.backoffMs * 2, configuration.retryMs / 2), 8 * configuration.retryMs)
        let jitter = Int64(random.next() % UInt64(max(1, state.backoffMs)))
        state.backoffUntil = now.monotonicMs + state.backoffMs + jitter
        let waiting = state.waiting
        state.waiting = []
        if state.leaderHint.map(Int.init) == configuration.me { state.leaderHint = nil }
        partitions[p] = state
        for pending in waiting { dispatch(pending, p, now: now) }
    }

    /// How long a proposer whose ballot a voter refused for a higher one keeps trying without
    /// progress (a majority of promises, or a slot chosen) before it steps down.
    private var outbidPatienceMs: Int64 { 2 * configuration.retryMs }

    private func leaseExpiry(_ leading: Leading) -> Int64 {
        let starts = leading.leaseStarts.values.sorted(by: >)
        guard starts.count >= configuration.majority else { return .min }
        return starts[configuration.majority - 1] + configuration.leaseTrustMs
    }

    /// The slot every full voter has applied (as far as this leader knows).
    private func truncationWatermark(_ state: PartitionState) -> UInt64 {
        var lowest = state.applied
        for learner in configuration.learners where learner != configuration.me {
            lowest = min(lowest, state.fullApplied[learner] ?? 0)
        }
        return lowest
    }

    // MARK: - Learner

    private mutating func onCommit(_ p: Int, entries: [ChosenEntry], chosenThrough: UInt64, truncateThrough: UInt64, from voter: Int, now: PaxosTime) {
        if configuration.isWitness {
            forget(p, through: truncateThrough)
            return
        }
        for chosen in entries { learnChosen(p, chosen.slot, chosen.entry) }
        modify(p) { $0.chosenHint = max($0.chosenHint, chosenThrough) }
        if !entries.isEmpty { send(.learned(partition: p, applied: partitions[p]!.applied), to: voter) }
    }

    private mutating func onLearn(_ p: Int, fromSlot: UInt64, from voter: Int) {
        guard !configuration.isWitness, let state = partitions[p] else { return }
        var entries: [ChosenEntry] = []
        var bytes = 0
        var slot = fromSlot
        while let entry = state.chosen[slot], entries.count < Self.learnBatchMax, bytes < Self.learnBatchBytes {
            entries.append(ChosenEntry(slot: slot, entry: entry))
            bytes += entry.approximateBytes
            slot += 1
        }
        guard !entries.isEmpty else { return }
        send(.commit(partition: p, entries: entries, chosenThrough: state.applied, truncateThrough: 0), to: voter)
    }

    private mutating func learnChosen(_ p: Int, _ slot: UInt64, _ entry: StrongEntry) {
        guard !configuration.isWitness else { return }
        // Taken out of the dictionary while it changes, so that the chosen log is changed in
        // place rather than copied (it is the largest thing here).
        var state = partitions.removeValue(forKey: p) ?? PartitionState()
        var learned = false
        if let known = state.chosen[slot] {
            if known != entry { violations.append("partition \(p) slot \(slot): learned two different entries") }
        } else {
            state.chosenHint = max(state.chosenHint, slot)
            if slot > state.applied {
                state.chosen[slot] = entry
                state.accepted[slot] = nil
                learned = true
            }
        }
        partitions[p] = state
        guard learned else { return }
        effects.persist.append(.chosen(partition: p, ChosenEntry(slot: slot, entry: entry)))
        applyContiguous(p)
    }

    /// Applies chosen entries in slot order and answers the clients waiting on them.
    private mutating func applyContiguous(_ p: Int) {
        // Taken out while it changes: the applied state is changed in place, not copied.
        guard var state = partitions.removeValue(forKey: p) else { return }
        var answers: [(Pending, StrongResult)] = []
        var retries: [Pending] = []
        while let entry = state.chosen[state.applied + 1] {
            state.applied += 1
            state.lastProgress = clock.monotonicMs
            let reply = state.state.apply(entry, slot: state.applied)
            effects.applied.append((p, state.applied, entry))
            if let awaited = state.awaiting.removeValue(forKey: state.applied) {
                if awaited.request == entry.request {
                    answers.append((awaited.pending, .reply(reply)))
                } else {
                    // Another entry took the slot: this proposal was never chosen; retry it.
                    var again = awaited.pending
                    again.proposed = false
                    retries.append(again)
                }
            }
        }
        let leaderReady: Bool
        if case .leading(let leading) = state.role { leaderReady = state.applied >= leading.recoveredThrough } else { leaderReady = false }
        var reads: [Pending] = []
        if leaderReady && !state.waiting.isEmpty {
            reads = state.waiting
            state.waiting = []
        }
        partitions[p] = state
        for (pending, result) in answers { complete(pending, result) }
        for pending in retries + reads { dispatch(pending, p, now: clock) }
    }

    // MARK: - Plumbing

    private mutating func complete(_ pending: Pending, _ result: StrongResult) {
        switch pending.client {
        case .local(let client):
            effects.completions.append((client, result))
        case .forwarded(let voter, let request):
            let outcome: ForwardOutcome
            switch result {
            case .reply(let reply) where reply.approximateBytes > Self.promiseBytesMax:
                outcome = .reply(.error("ERR the reply (\(reply.approximateBytes) bytes) is too large to forward between data centers; read these keys where their partition's leader is, or fewer at a time"))
            case .reply(let reply): outcome = .reply(reply)
            case .uncertain: outcome = .uncertain
            case .noQuorum: outcome = .notLeader
            }
            send(.forwardReply(request: request, outcome: outcome), to: voter)
        }
    }

    private mutating func send(_ message: PaxosMessage, to voter: Int) {
        effects.messages.append((voter, message))
    }

    /// Changes one partition's state in place.
    private mutating func modify(_ p: Int, _ change: (inout PartitionState) -> Void) {
        change(&partitions[p, default: PartitionState()])
    }

    private mutating func newRequest() -> RequestID {
        nextSequence += 1
        return RequestID(origin: UInt16(configuration.me), sequence: nextSequence)
    }

    static let promiseChosenMax = 512
    static let recoveryGapMax: UInt64 = 1 << 20
    static let promiseBytesMax = 1 << 20
    static let learnBatchMax = 256
    static let learnBatchBytes = 512 << 10
}

// MARK: - Per-partition state

public struct PartitionState: Sendable {
    // Acceptor.
    var promised = Ballot.zero
    var accepted: [UInt64: AcceptedEntry] = [:]
    var leaseHolder: UInt16?
    var leaseUntil: Int64 = .min
    /// The highest ballot whose leader released the partition (no lease for it again).
    var releasedBallot: Ballot?
    var forgottenThrough: UInt64 = 0
    // Learner.
    var chosen: [UInt64: StrongEntry] = [:]
    var applied: UInt64 = 0
    /// The slot of the last snapshot of `state` on disk, and the slot through which chosen
    /// entries were forgotten.
    var snapshotSlot: UInt64 = 0
    var chosenFloor: UInt64 = 0
    var state = StrongState()
    var chosenHint: UInt64 = 0
    var lastLearn: Int64 = .min / 2
    /// When the applied slot last moved (a learner stuck behind a gap asks for a leader).
    var lastProgress: Int64 = .min / 2
    var reportedToWitnesses: UInt64 = 0
    var lastWitnessReport: Int64 = .min / 2
    // Proposer.
    var role: Role = .follower
    var highestSeen = Ballot.zero
    var leaderHint: UInt16?
    var leaderHintUntil: Int64 = .min
    var waiting: [Pending] = []
    var awaiting: [UInt64: Awaited] = [:]
    var backoffUntil: Int64 = .min
    var backoffMs: Int64 = 0
    var lastLocalActivity: Int64 = .min / 2
    /// When this node, leading, last took a command forwarded by another node.
    var lastForwarded: Int64 = .min / 2
    /// Each full voter's applied slot as last reported (for the witness's truncation).
    var fullApplied: [Int: UInt64] = [:]
}

enum Role: Sendable {
    case follower
    case preparing(Preparing)
    case leading(Leading)
}

struct Preparing: Sendable {
    var ballot: Ballot
    var fromSlot: UInt64
    var lastSend: Int64
    /// Complete promises, and promises some of whose parts are still on the way.
    var promises: [Int: Promise] = [:]
    var partial: [Int: Promise] = [:]
    var refusals: Set<Int> = []
    /// When a voter first refused this ballot for a higher one (see `outbidPatienceMs`).
    var outbidAtMs: Int64?
}

struct Promise: Sendable {
    var accepted: [AcceptedEntry]
    var chosen: [ChosenEntry]
    var sentAt: Int64
    /// The sentAt of the PREPARE this answers (what ties the parts of one answer together).
    var answer: Int64 = 0
    /// A promise in parts: how many, which arrived, and when the last one did.
    var parts: Int?
    var lastArrival: Int64 = 0
    var partsSeen: Set<Int> = []
}

struct Leading: Sendable {
    var ballot: Ballot
    var nextSlot: UInt64
    /// Slots up to here were found by phase 1 (or awaited): reads wait until they are applied.
    var recoveredThrough: UInt64
    /// Per voter: when this leader sent the latest request that voter granted a lease on.
    var leaseStarts: [Int: Int64] = [:]
    var inFlight: [UInt64: InFlight] = [:]
    var lastRenew: Int64 = .min / 2
    var truncateSent: UInt64 = 0
    var lastCommitResend: Int64 = .min / 2
    var lastStamp: Int64 = 0
    /// Voters that refused this leader's ballot (they promised a higher one).
    var refusals: Set<Int> = []
    /// When a voter first refused this ballot for a higher one (see `outbidPatienceMs`).
    var outbidAtMs: Int64?
    /// When a slot was last chosen under this ballot.
    var lastChosenAtMs: Int64 = .min / 2
}

struct InFlight: Sendable {
    var entry: StrongEntry
    var acceptedBy: Set<Int> = []
    var lastSend: Int64
}

enum Client: Sendable {
    case local(UInt64)
    case forwarded(from: Int, request: RequestID)
}

struct Pending: Sendable {
    var client: Client
    /// Fixed for the command's life (a forwarded command keeps its origin's): a proposal
    /// retried in another slot, or a forward delivered twice, applies once (`StrongState`
    /// skips a request it applied already).
    var request: RequestID
    var command: StrongCommand
    var deadline: Int64
    /// Sent in an ACCEPT at least once: past the deadline its outcome is unknown.
    var proposed = false
}

struct Awaited: Sendable {
    var request: RequestID
    var pending: Pending
}

struct Forwarded: Sendable {
    var pending: Pending
    var partition: Int
}

extension StrongEntry {
    /// Roughly what the entry weighs on the wire (for batch limits).
    var approximateBytes: Int { 24 + (command?.approximateBytes ?? 0) }
}

extension StrongReply {
    /// Roughly what the reply weighs on the wire (an upper bound of its encoding).
    var approximateBytes: Int {
        switch self {
        case .ok, .null, .nullArray, .integer: 9
        case .bulk(let bytes): 5 + bytes.count
        case .error(let message): 5 + message.utf8.count
        case .array(let items): items.reduce(5) { $0 + $1.approximateBytes }
        }
    }
}

extension StrongCommand {
    /// Roughly what the command weighs on the wire: an upper bound of its encoding, for the
    /// limits that keep every Paxos message inside a peer frame.
    public var approximateBytes: Int {
        8 + operations.reduce(0) { total, operation in
            switch operation {
            case .set(let key, let value, let options):
                var extra = 0
                if case .ifEqual(let old) = options.condition { extra = old.count + 4 }
                return total + 40 + key.count + value.count + extra
            case .lock(let name, _, let owner): return total + 24 + name.count + owner.count
            default: return total + 24 + operation.key.count
            }
        } + watched.reduce(0) { $0 + 12 + $1.key.count }
    }
}
