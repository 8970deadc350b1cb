// SWIM failure detection inside a data center (docs/CLUSTER.md, "Membership and failure
// detection"): Das, Gupta & Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process
// Group Membership Protocol", DSN 2002 — probes and indirect probes (§3.1), piggybacked
// infection-style dissemination (§4.1), suspicion with incarnation numbers (§4.2) and
// round-robin probe targets (§4.3). A pure state machine: no IO, no clock, no randomness of
// its own.

/// Failure-detector settings (`cluster.failure_detection`), milliseconds.
public struct FailureDetectionSettings: Sendable, Equatable {
    /// One probe starts every this long (SWIM's protocol period).
    public var probeIntervalMs: Int64
    /// How long the prober waits for a direct ack before it asks others to probe (`PING-REQ`).
    public var probeTimeoutMs: Int64
    /// How many members an unanswered prober asks to probe on its behalf.
    public var indirectProbes: Int
    /// How long a member stays suspect without refuting before it is declared down.
    public var suspectTimeoutMs: Int64

    /// The defaults are those of docs/CLUSTER.md.
    public init(probeIntervalMs: Int64 = 500, probeTimeoutMs: Int64 = 200, indirectProbes: Int = 3, suspectTimeoutMs: Int64 = 3_000) {
        self.probeIntervalMs = probeIntervalMs
        self.probeTimeoutMs = probeTimeoutMs
        self.indirectProbes = indirectProbes
        self.suspectTimeoutMs = suspectTimeoutMs
    }
}

/// What the detector believes about a member.
public enum MemberLiveness: UInt8, Sendable, Equatable {
    /// It answered its probes, or refuted its last suspicion.
    case alive
    /// A probe, direct and indirect, went unanswered; it has `suspectTimeoutMs` to refute.
    case suspect
    /// Suspected for `suspectTimeoutMs` without a refutation. Only an `alive` fact with a
    /// higher incarnation brings it back.
    case down
}

/// One piggybacked membership fact.
public struct MemberUpdate: Sendable, Equatable {
    /// The member the fact is about (a node index, chosen by the caller).
    public var member: Int
    /// The member's incarnation the fact is about; it orders the facts about one member.
    public var incarnation: UInt64
    /// What the fact says.
    public var liveness: MemberLiveness

    /// A fact about `member` at `incarnation`.
    public init(member: Int, incarnation: UInt64, liveness: MemberLiveness) {
        self.member = member
        self.incarnation = incarnation
        self.liveness = liveness
    }
}

/// The detector's messages (docs/CLUSTER.md types 20–22).
public enum SWIMMessage: Sendable, Equatable {
    /// "Are you alive?" `sequence` is the prober's probe number; `onBehalfOf` is set when this
    /// ping is an indirect probe relayed for another member (then the ack goes back to that
    /// member via the relay).
    case ping(sequence: UInt64, onBehalfOf: Int?, updates: [MemberUpdate])
    /// The answer: `target` is the member that was probed (the sender itself for a direct
    /// ping), `incarnation` the target's current incarnation.
    case ack(sequence: UInt64, target: Int, incarnation: UInt64, updates: [MemberUpdate])
    /// "Please ping `target` for me" (indirect probe).
    case pingRequest(sequence: UInt64, target: Int, updates: [MemberUpdate])
}

/// A message to send.
public struct SWIMSend: Sendable, Equatable {
    /// The member to send it to.
    public var to: Int
    /// What to send.
    public var message: SWIMMessage

    /// `message`, addressed to `to`.
    public init(to: Int, message: SWIMMessage) {
        self.to = to
        self.message = message
    }
}

/// One node's SWIM failure detector for the members of its data center.
///
/// Deterministic: the time comes in as `nowMs` and randomness as a generator, so the NIO shell
/// and the simulator drive the same code. **Order of duties:** the caller sends every message
/// `tick` and `receive` return, in order; nothing needs persisting, because a restarted node
/// starts over with a fresh incarnation higher than any of its previous life (its start time,
/// say) and announces it.
///
/// Facts about one member are ordered by incarnation (SWIM §4.2): `alive(i)` beats any fact
/// with a lower incarnation; `suspect(i)` beats `alive(j)` for i ≥ j and `suspect(j)` for
/// i > j; `down(i)` beats `alive(j)` and `suspect(j)` for i ≥ j, and `down(j)` for i > j.
/// Only the member itself raises its incarnation, to refute a suspicion of itself.
public struct SWIMMembership: Sendable {
    /// Most facts piggybacked on one message. Longer incoming lists are cut to it before they are
    /// looked at, so a damaged or hostile peer costs bounded work.
    public static let updatesPerMessageMax = 8
    /// SWIM's λ (§4.1): each fact is sent λ·⌈log2(n + 1)⌉ times, which reaches every one of the
    /// n members with high probability, then dropped.
    public static let retransmitMultiplier = 3
    /// Most indirect probes relayed for other members at once; the oldest is dropped past it.
    public static let relaysMax = 64
    /// Most members one detector watches: placement bounds the cluster well below it.
    public static let membersMax = 4_096
    /// Most members asked to probe on the prober's behalf (`indirectProbes`).
    public static let indirectProbesMax = 16

    /// This node's member id.
    public let me: Int
    /// The timers this detector runs on.
    public let settings: FailureDetectionSettings
    /// This node's incarnation. It only grows: to refute a suspicion of this node.
    public private(set) var incarnation: UInt64

    /// What is believed of each other member. Only looked up: every loop that produces output
    /// walks `memberIDs`, so that no dictionary order reaches the messages.
    private var states: [Int: MemberState] = [:]
    /// The other members, in ascending order.
    private var memberIDs: [Int] = []
    /// This round's probe order and the next position in it (SWIM §4.3).
    private var probeOrder: [Int] = []
    private var probeCursor = 0
    private var nextProbeAtMs: Int64
    /// The probe of the current protocol period, if one is running.
    private var probe: Probe?
    /// The last probe or relay number used; one counter, so an ack matches one of them only.
    private var lastSequence: UInt64 = 0
    /// Indirect probes this node runs for others, oldest first.
    private var relays: [Relay] = []
    /// Facts still to piggyback: at most one per member, the newest.
    private var gossip: [Gossip] = []
    /// Orders `gossip` entries by age, to break ties deterministically.
    private var gossipCount: UInt64 = 0

    private struct MemberState: Sendable {
        var incarnation: UInt64
        var liveness: MemberLiveness
        /// When this node began to suspect the member (its own timer, started on hearing).
        var suspectedAtMs: Int64
    }

    private struct Probe: Sendable {
        var target: Int
        var sequence: UInt64
        var startedAtMs: Int64
        var indirectSent = false
        var acknowledged = false
    }

    private struct Relay: Sendable {
        var requester: Int
        var requesterSequence: UInt64
        var localSequence: UInt64
        var target: Int
        var expiresAtMs: Int64
    }

    private struct Gossip: Sendable {
        var update: MemberUpdate
        var transmissionsLeft: Int
        var order: UInt64
    }

    /// A detector for `me` watching `members` (which may include `me`), all believed alive at
    /// incarnation 0 until they say otherwise. `incarnation` must exceed every incarnation of
    /// this node's previous lives, so that members that declared it down take it back.
    public init(me: Int, members: [Int], settings: FailureDetectionSettings, incarnation: UInt64, nowMs: Int64) {
        precondition(settings.probeIntervalMs > 0, "the probe interval must be positive")
        precondition(
            settings.probeTimeoutMs > 0 && settings.probeTimeoutMs < settings.probeIntervalMs,
            "the probe timeout must leave time for indirect probes within the probe interval")
        precondition((0...Self.indirectProbesMax).contains(settings.indirectProbes), "indirectProbes out of range")
        precondition(settings.suspectTimeoutMs > 0, "the suspect timeout must be positive")
        // The largest incarnation could never be refuted.
        precondition(incarnation < UInt64.max, "incarnation out of range")
        self.me = me
        self.settings = settings
        self.incarnation = incarnation
        self.nextProbeAtMs = nowMs
        setMembers(members, nowMs: nowMs)
        // The first round gets a random order too, instead of ascending ids on every node.
        probeOrder = []
        probeCursor = 0
        // Members that declared a previous life of this node down only take it back on a
        // higher incarnation; they learn it from this fact or from the acks to their probes.
        disseminate(MemberUpdate(member: me, incarnation: incarnation, liveness: .alive))
    }

    // MARK: - Inputs

    /// Drive timers: start a probe every probeInterval (one member at a time, round-robin over
    /// a shuffled list as in SWIM §4.3, reshuffled each round), after probeTimeout without an
    /// ack send pingRequest to `indirectProbes` random other alive/suspect members, at the end
    /// of the probe interval without any ack mark the target suspect; suspect members become
    /// down after suspectTimeout.
    public mutating func tick(nowMs: Int64, random: inout some RandomNumberGenerator) -> [SWIMSend] {
        var sends: [SWIMSend] = []
        declareExpiredSuspectsDown(nowMs: nowMs)
        relays.removeAll { $0.expiresAtMs <= nowMs }
        if let current = probe {
            if !current.acknowledged && !current.indirectSent && nowMs >= current.startedAtMs + settings.probeTimeoutMs {
                probe?.indirectSent = true
                sends += indirectProbe(current, random: &random)
            } else if nowMs >= current.startedAtMs + settings.probeIntervalMs {
                // The indirect probes had at least one tick: with coarse ticks the period
                // stretches rather than suspecting a member nobody else was asked about.
                probe = nil
                if !current.acknowledged { suspect(current.target, nowMs: nowMs) }
            }
        }
        if probe == nil && nowMs >= nextProbeAtMs {
            nextProbeAtMs = nowMs + settings.probeIntervalMs
            if let target = nextProbeTarget(random: &random) {
                lastSequence &+= 1
                let sequence = lastSequence
                probe = Probe(target: target, sequence: sequence, startedAtMs: nowMs)
                let updates = piggyback(to: target)
                sends.append(SWIMSend(to: target, message: .ping(sequence: sequence, onBehalfOf: nil, updates: updates)))
            }
        }
        return sends
    }

    /// Handle one message from `from`.
    public mutating func receive(_ message: SWIMMessage, from: Int, nowMs: Int64) -> [SWIMSend] {
        switch message {
        case let .ping(sequence, _, updates):
            // The facts first: a suspicion of this node is refuted in this very ack.
            learn(updates, nowMs: nowMs)
            let reply = piggyback(to: from)
            return [SWIMSend(to: from, message: .ack(sequence: sequence, target: me, incarnation: incarnation, updates: reply))]
        case let .ack(sequence, target, targetIncarnation, updates):
            learn(updates, nowMs: nowMs)
            return acknowledge(sequence: sequence, target: target, targetIncarnation: targetIncarnation, from: from, nowMs: nowMs)
        case let .pingRequest(sequence, target, updates):
            learn(updates, nowMs: nowMs)
            return relay(sequence: sequence, target: target, requester: from, nowMs: nowMs)
        }
    }

    /// The member set changed (placement adds or removes nodes): new members start alive,
    /// removed ones are forgotten.
    public mutating func setMembers(_ members: [Int], nowMs: Int64) {
        precondition(members.count <= Self.membersMax, "more members than membersMax")
        let own = me
        let wanted = Set(members).subtracting([own]).sorted()
        let previous = states
        var next: [Int: MemberState] = [:]
        for id in wanted {
            next[id] = previous[id] ?? MemberState(incarnation: 0, liveness: .alive, suspectedAtMs: nowMs)
        }
        // SWIM §4.3 inserts a new member at a random position of the round; without a
        // generator here it joins the end of this round and is shuffled from the next one on.
        let added = wanted.filter { previous[$0] == nil }
        let cursor = min(probeCursor, probeOrder.count)
        let rest = probeOrder[cursor...].filter { next[$0] != nil }
        states = next
        memberIDs = wanted
        probeOrder = rest + added
        probeCursor = 0
        if let current = probe, next[current.target] == nil { probe = nil }
        gossip.removeAll { $0.update.member != own && next[$0.update.member] == nil }
        relays.removeAll { next[$0.target] == nil }
    }

    // MARK: - Queries

    /// What this node believes about `member`: `.alive` for itself, `.down` for a member it does
    /// not know (never added, or removed).
    public func liveness(of member: Int) -> MemberLiveness {
        if member == me { return .alive }
        return states[member]?.liveness ?? .down
    }

    /// The members (other than me) currently believed alive, in ascending id order. Suspect
    /// members are not in it; `liveness(of:)` tells them from down ones.
    public var liveMembers: [Int] {
        memberIDs.filter { states[$0]?.liveness == .alive }
    }

    // MARK: - Probing

    /// The next member of this round, starting a new shuffled round when this one is done.
    /// Down members stay in the rounds: a direct ping is how this node notices that a member it
    /// declared down (a healed partition) is back, whether or not gossip still carries its news.
    private mutating func nextProbeTarget(random: inout some RandomNumberGenerator) -> Int? {
        if probeCursor >= probeOrder.count {
            probeOrder = memberIDs.shuffled(using: &random)
            probeCursor = 0
        }
        guard probeCursor < probeOrder.count else { return nil }
        defer { probeCursor += 1 }
        return probeOrder[probeCursor]
    }

    /// `PING-REQ` to up to `indirectProbes` random members other than the target (SWIM §3.1):
    /// a lossy or broken link between prober and target alone does not make it suspect.
    private mutating func indirectProbe(_ current: Probe, random: inout some RandomNumberGenerator) -> [SWIMSend] {
        let states = self.states
        // A down member is probed only to notice its return: asking others about it costs k
        // messages a period and changes nothing.
        guard let target = states[current.target], target.liveness != .down else { return [] }
        let candidates = memberIDs.filter { id in id != current.target && states[id]?.liveness != .down }
        var sends: [SWIMSend] = []
        for helper in candidates.shuffled(using: &random).prefix(settings.indirectProbes) {
            let updates = piggyback(to: helper)
            sends.append(SWIMSend(to: helper, message: .pingRequest(sequence: current.sequence, target: current.target, updates: updates)))
        }
        return sends
    }

    private mutating func acknowledge(sequence: UInt64, target: Int, targetIncarnation: UInt64, from: Int, nowMs: Int64) -> [SWIMSend] {
        if from == target && target != me {
            // Only the target vouches for its own incarnation: a relayed ack ends the probe but
            // revives nothing, and mere receipt of another message proves no incarnation.
            apply(MemberUpdate(member: target, incarnation: targetIncarnation, liveness: .alive), nowMs: nowMs)
        }
        if let current = probe, current.sequence == sequence, current.target == target {
            probe?.acknowledged = true
        }
        guard from == target,
            let index = relays.firstIndex(where: { $0.localSequence == sequence && $0.target == target && $0.expiresAtMs > nowMs })
        else { return [] }
        let relay = relays.remove(at: index)
        let updates = piggyback(to: relay.requester)
        let ack = SWIMMessage.ack(sequence: relay.requesterSequence, target: target, incarnation: targetIncarnation, updates: updates)
        return [SWIMSend(to: relay.requester, message: ack)]
    }

    /// Pings `target` for `requester`, remembering where the ack goes; a request about this
    /// node itself is answered at once.
    private mutating func relay(sequence: UInt64, target: Int, requester: Int, nowMs: Int64) -> [SWIMSend] {
        if target == me {
            let updates = piggyback(to: requester)
            return [SWIMSend(to: requester, message: .ack(sequence: sequence, target: me, incarnation: incarnation, updates: updates))]
        }
        guard states[target] != nil, requester != target else { return [] }
        lastSequence &+= 1
        let local = lastSequence
        if relays.count >= Self.relaysMax { relays.removeFirst() }
        // The requester's probe period is over by then: a later ack would find no probe.
        relays.append(
            Relay(requester: requester, requesterSequence: sequence, localSequence: local, target: target,
                  expiresAtMs: nowMs + settings.probeIntervalMs))
        let updates = piggyback(to: target)
        return [SWIMSend(to: target, message: .ping(sequence: local, onBehalfOf: requester, updates: updates))]
    }

    // MARK: - Suspicion

    /// A probe period ended without any ack: `member` becomes suspect at the incarnation known
    /// for it (SWIM §4.2). A member already suspect keeps its timer; a down one stays down.
    private mutating func suspect(_ member: Int, nowMs: Int64) {
        guard let state = states[member], state.liveness == .alive else { return }
        apply(MemberUpdate(member: member, incarnation: state.incarnation, liveness: .suspect), nowMs: nowMs)
    }

    private mutating func declareExpiredSuspectsDown(nowMs: Int64) {
        for id in memberIDs {
            guard let state = states[id], state.liveness == .suspect, nowMs - state.suspectedAtMs >= settings.suspectTimeoutMs else { continue }
            apply(MemberUpdate(member: id, incarnation: state.incarnation, liveness: .down), nowMs: nowMs)
        }
    }

    // MARK: - Facts

    private mutating func learn(_ updates: [MemberUpdate], nowMs: Int64) {
        for update in updates.prefix(Self.updatesPerMessageMax) { apply(update, nowMs: nowMs) }
    }

    /// Takes `update` if it is newer than what is known, and passes it on.
    private mutating func apply(_ update: MemberUpdate, nowMs: Int64) {
        // Nothing outbids the largest incarnation, so no member could ever refute it: such a
        // fact comes from a damaged or hostile peer.
        guard update.incarnation < UInt64.max else { return }
        if update.member == me {
            hear(aboutMyself: update)
            return
        }
        // Facts about members outside the set (unknown or removed) are ignored.
        guard var state = states[update.member], Self.supersedes(update, state) else { return }
        if update.liveness == .suspect { state.suspectedAtMs = nowMs }
        state.incarnation = update.incarnation
        state.liveness = update.liveness
        states[update.member] = state
        disseminate(update)
    }

    /// Whether `fact` is newer than `current` in SWIM §4.2's order.
    private static func supersedes(_ fact: MemberUpdate, _ current: MemberState) -> Bool {
        switch (fact.liveness, current.liveness) {
        case (.alive, _): return fact.incarnation > current.incarnation
        case (.suspect, .alive): return fact.incarnation >= current.incarnation
        case (.suspect, .suspect): return fact.incarnation > current.incarnation
        // A down member comes back only through a higher `alive`: it must have restarted or
        // refuted, and only it can say so.
        case (.suspect, .down): return false
        case (.down, .alive), (.down, .suspect): return fact.incarnation >= current.incarnation
        case (.down, .down): return fact.incarnation > current.incarnation
        }
    }

    /// A fact about this node: a suspicion or a death sentence at this incarnation or later is
    /// refuted with a higher incarnation (SWIM §4.2).
    private mutating func hear(aboutMyself update: MemberUpdate) {
        switch update.liveness {
        case .alive:
            // Others know a later incarnation (of a previous life whose numbering ran ahead):
            // adopt it, so that the next refutation outbids what they hold.
            if update.incarnation > incarnation { incarnation = update.incarnation }
        case .suspect, .down:
            guard update.incarnation >= incarnation else { return }  // already refuted
            incarnation = update.incarnation + 1  // cannot overflow: `apply` drops UInt64.max
            disseminate(MemberUpdate(member: me, incarnation: incarnation, liveness: .alive))
        }
    }

    // MARK: - Dissemination

    /// Queues `update` for piggybacking, replacing an older fact about the same member.
    private mutating func disseminate(_ update: MemberUpdate) {
        gossipCount &+= 1
        let entry = Gossip(update: update, transmissionsLeft: transmissionsPerFact, order: gossipCount)
        if let index = gossip.firstIndex(where: { $0.update.member == update.member }) {
            gossip[index] = entry
        } else {
            gossip.append(entry)
        }
    }

    /// λ·⌈log2(n + 1)⌉ with n the group's size, this node included.
    private var transmissionsPerFact: Int {
        Self.retransmitMultiplier * Self.ceilingLog2(memberIDs.count + 2)
    }

    private static func ceilingLog2(_ value: Int) -> Int {
        precondition(value >= 1)
        return value == 1 ? 0 : Int.bitWidth - (value - 1).leadingZeroBitCount
    }

    /// The facts to piggyback on a message to `recipient`: the least-sent ones first, at most
    /// `updatesPerMessageMax`. A recipient this node believes suspect or down hears that first,
    /// whatever the queue holds: it is the one member that can refute it, and it should not
    /// depend on gossip finding it before the suspect timeout.
    private mutating func piggyback(to recipient: Int) -> [MemberUpdate] {
        var updates: [MemberUpdate] = []
        if let state = states[recipient], state.liveness != .alive {
            updates.append(MemberUpdate(member: recipient, incarnation: state.incarnation, liveness: state.liveness))
        }
        guard !gossip.isEmpty else { return updates }
        let queue = gossip
        // Facts about the recipient itself are skipped: it knows better.
        let chosen = queue.indices
            .filter { queue[$0].update.member != recipient }
            .sorted { a, b in
                if queue[a].transmissionsLeft != queue[b].transmissionsLeft { return queue[a].transmissionsLeft > queue[b].transmissionsLeft }
                return queue[a].order < queue[b].order
            }
            .prefix(Self.updatesPerMessageMax - updates.count)
        for index in chosen {
            updates.append(queue[index].update)
            gossip[index].transmissionsLeft -= 1
        }
        gossip.removeAll { $0.transmissionsLeft <= 0 }
        precondition(updates.count <= Self.updatesPerMessageMax)
        return updates
    }
}
