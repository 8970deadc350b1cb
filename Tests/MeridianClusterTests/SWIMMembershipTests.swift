// Proves the SWIM failure detector's promises (Das, Gupta & Motivala, DSN 2002): healthy
// members are never suspected; a stopped member is suspected, then declared down by everyone
// within SWIM's worst-case bound (§4.3); a cut link alone is bridged by indirect probes (§3.1);
// suspicions are refuted with a higher incarnation and a restarted or healed member comes back
// (§4.2); the member set follows placement; hostile input costs bounded work and never traps.
// How: `SWIMNetwork` runs N detectors (ids 0..<N) that exchange messages through a queue with
// a fixed 5 ms delivery delay, advancing time 10 ms per step and ticking every running node
// with its own SplitMix64 stream; faults are stopped nodes and cut directed links. Every run
// replays from its seed, which each expectation names.
import MeridianCluster
import MeridianCore
import Testing

/// A tiny deterministic network of detectors.
struct SWIMNetwork {
    static let deliveryDelayMs: Int64 = 5
    static let stepMs: Int64 = 10

    struct Link: Hashable {
        var from: Int
        var to: Int
    }

    struct InFlight {
        var deliverAtMs: Int64
        var from: Int
        var to: Int
        var message: SWIMMessage
    }

    let settings: FailureDetectionSettings
    var nodes: [SWIMMembership]
    var randoms: [SplitMix64]
    /// Stopped nodes get no ticks; whatever they send or are sent is dropped.
    var stopped: Set<Int> = []
    var cut: Set<Link> = []
    /// In send order; with one fixed delay that is also delivery order.
    var inFlight: [InFlight] = []
    var nowMs: Int64 = 0
    /// The longest update list any node sent.
    var largestUpdateList = 0
    /// Messages posted to each node, and `pingRequest`s posted by each node.
    var messagesTo: [Int]
    var pingRequestsFrom: [Int]

    init(count: Int, seed: UInt64, settings: FailureDetectionSettings = FailureDetectionSettings()) {
        let ids = Array(0..<count)
        self.settings = settings
        self.nodes = ids.map { SWIMMembership(me: $0, members: ids, settings: settings, incarnation: 1, nowMs: 0) }
        self.randoms = ids.map { SplitMix64(seed: seed &* 1_000 &+ UInt64($0)) }
        self.messagesTo = Array(repeating: 0, count: count)
        self.pingRequestsFrom = Array(repeating: 0, count: count)
    }

    static func updates(of message: SWIMMessage) -> [MemberUpdate] {
        switch message {
        case .ping(_, _, let updates), .ack(_, _, _, let updates), .pingRequest(_, _, let updates): return updates
        }
    }

    mutating func post(_ sends: [SWIMSend], from sender: Int) {
        for send in sends {
            largestUpdateList = max(largestUpdateList, Self.updates(of: send.message).count)
            if nodes.indices.contains(send.to) { messagesTo[send.to] += 1 }
            if case .pingRequest = send.message { pingRequestsFrom[sender] += 1 }
            inFlight.append(InFlight(deliverAtMs: nowMs + Self.deliveryDelayMs, from: sender, to: send.to, message: send.message))
        }
    }

    /// Hands `message` to `to` now, as if `from` had sent it, and sends the replies.
    mutating func inject(_ message: SWIMMessage, from sender: Int, to receiver: Int) {
        let replies = nodes[receiver].receive(message, from: sender, nowMs: nowMs)
        post(replies, from: receiver)
    }

    /// Advances time by one step: delivers what is due, then ticks every running node.
    mutating func step() {
        nowMs += Self.stepMs
        let now = nowMs
        let due = inFlight.filter { $0.deliverAtMs <= now }
        inFlight.removeAll { $0.deliverAtMs <= now }
        for item in due {
            guard nodes.indices.contains(item.to), !stopped.contains(item.from), !stopped.contains(item.to),
                !cut.contains(Link(from: item.from, to: item.to))
            else { continue }
            let replies = nodes[item.to].receive(item.message, from: item.from, nowMs: now)
            post(replies, from: item.to)
        }
        for id in nodes.indices where !stopped.contains(id) {
            var random = randoms[id]
            let sends = nodes[id].tick(nowMs: now, random: &random)
            randoms[id] = random
            post(sends, from: id)
        }
    }

    mutating func run(untilMs endMs: Int64) {
        while nowMs < endMs { step() }
    }

    /// Cuts (or restores) both directions between `member` and every other node.
    mutating func isolate(_ member: Int, _ isolated: Bool = true) {
        for other in nodes.indices where other != member {
            for link in [Link(from: member, to: other), Link(from: other, to: member)] {
                if isolated { cut.insert(link) } else { cut.remove(link) }
            }
        }
    }

    /// Starts `member` over, as a restarted process: a fresh detector with `incarnation`.
    mutating func restart(_ member: Int, incarnation: UInt64) {
        stopped.remove(member)
        nodes[member] = SWIMMembership(
            me: member, members: Array(nodes.indices), settings: settings, incarnation: incarnation, nowMs: nowMs)
    }

    /// The running nodes other than `member`.
    func observers(of member: Int) -> [Int] {
        nodes.indices.filter { $0 != member && !stopped.contains($0) }
    }

    func allBelieve(_ member: Int, is liveness: MemberLiveness) -> Bool {
        observers(of: member).allSatisfy { nodes[$0].liveness(of: member) == liveness }
    }

    func anyBelieves(_ member: Int, is liveness: MemberLiveness) -> Bool {
        observers(of: member).contains { nodes[$0].liveness(of: member) == liveness }
    }

    /// Pairs of running nodes where the first does not believe the second alive.
    var doubts: Int {
        var count = 0
        for observer in nodes.indices where !stopped.contains(observer) {
            for member in nodes.indices where member != observer && !stopped.contains(member) {
                if nodes[observer].liveness(of: member) != .alive { count += 1 }
            }
        }
        return count
    }
}

@Suite struct SWIMMembershipTests {
    static let settings = FailureDetectionSettings()
    static let count = 5
    /// SWIM §4.3: with the order reshuffled every round, a member is probed again at most
    /// 2(n−1)−1 probe periods after its previous probe, and that probe ends one period later.
    static var probeGapMaxMs: Int64 { settings.probeIntervalMs * Int64(2 * (count - 1)) }

    /// Five members, all up for 20 s: nobody is ever suspected or declared down, and no message
    /// carries more facts than the limit.
    @Test func healthyMembersAreNeverSuspected() {
        for seed in UInt64(1)...3 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            var doubts = 0
            while network.nowMs < 20_000 {
                network.step()
                doubts += network.doubts
            }
            #expect(doubts == 0, "seed \(seed)")
            let pingRequests = network.pingRequestsFrom.reduce(0, +)
            #expect(pingRequests == 0, "seed \(seed): indirect probes without a loss")
            #expect(network.largestUpdateList <= SWIMMembership.updatesPerMessageMax, "seed \(seed)")
        }
    }

    /// SWIM §3.1, §4.2, §4.3: a member that stops is suspected, then declared down by every
    /// other member, and not before the suspect timeout ran. The bound is the worst case: the
    /// last prober's next probe of it (probeGapMaxMs) plus the suspect timeout plus one step;
    /// that is probeInterval·n + probeTimeout + suspectTimeout with 1.3 s of slack here. In
    /// practice the earliest prober's suspicion spreads by gossip and it goes faster.
    @Test func aStoppedMemberIsSuspectedThenDeclaredDownByEveryone() {
        let victim = 3
        let stopAtMs: Int64 = 2_000
        let boundMs = Self.probeGapMaxMs + Self.settings.suspectTimeoutMs + SWIMNetwork.stepMs
        for seed in UInt64(1)...5 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            network.run(untilMs: stopAtMs)
            network.stopped.insert(victim)
            var firstSuspectMs: Int64?
            var downAtMs: [Int: Int64] = [:]
            var revived = false
            while network.nowMs < stopAtMs + boundMs + 2_000 {
                network.step()
                for observer in network.observers(of: victim) {
                    switch network.nodes[observer].liveness(of: victim) {
                    case .alive:
                        if downAtMs[observer] != nil { revived = true }
                    case .suspect:
                        if firstSuspectMs == nil { firstSuspectMs = network.nowMs }
                        if downAtMs[observer] != nil { revived = true }
                    case .down:
                        if downAtMs[observer] == nil { downAtMs[observer] = network.nowMs }
                    }
                }
            }
            let firstDownMs = downAtMs.values.min() ?? .max
            let lastDownMs = downAtMs.values.max() ?? .max
            let suspectedFirst = firstSuspectMs.map { firstDownMs - $0 >= Self.settings.suspectTimeoutMs } ?? false
            #expect(downAtMs.count == Self.count - 1, "seed \(seed)")
            #expect(lastDownMs - stopAtMs <= boundMs, "seed \(seed): down \(lastDownMs - stopAtMs) ms after the stop")
            #expect(suspectedFirst, "seed \(seed)")
            #expect(!revived, "seed \(seed)")
        }
    }

    /// SWIM §3.1: when the link from A to C alone is cut (one way, then both ways), A's direct
    /// pings go unanswered but its `PING-REQ`s reach C through the others, whose relayed acks
    /// keep C alive. With five members and three indirect probes every other member is asked.
    @Test func indirectProbesBridgeACutLink() {
        let a = 0
        let c = 2
        for bothWays in [false, true] {
            for seed in UInt64(1)...3 {
                var network = SWIMNetwork(count: Self.count, seed: seed)
                network.cut.insert(SWIMNetwork.Link(from: a, to: c))
                if bothWays { network.cut.insert(SWIMNetwork.Link(from: c, to: a)) }
                var doubts = 0
                var cDownForA = false
                while network.nowMs < 20_000 {
                    network.step()
                    doubts += network.doubts
                    cDownForA = cDownForA || network.nodes[a].liveness(of: c) == .down
                }
                #expect(!cDownForA, "seed \(seed), both ways \(bothWays)")
                #expect(doubts == 0, "seed \(seed), both ways \(bothWays)")
                #expect(network.pingRequestsFrom[a] > 0, "seed \(seed), both ways \(bothWays): A never asked for help")
            }
        }
    }

    /// SWIM §4.2: a member declared down that restarts with a higher incarnation is alive again
    /// for everyone once each has probed it (its ack carries the new incarnation) or heard its
    /// announcement, whichever comes first.
    @Test func aRestartedMemberIsAliveAgainForEveryone() {
        let victim = 3
        for seed in UInt64(1)...3 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            network.run(untilMs: 2_000)
            network.stopped.insert(victim)
            network.run(untilMs: 2_000 + Self.probeGapMaxMs + Self.settings.suspectTimeoutMs + 1_000)
            #expect(network.allBelieve(victim, is: .down), "seed \(seed)")
            let restartMs = network.nowMs
            network.restart(victim, incarnation: 1_000)
            var backAfterMs: Int64?
            while network.nowMs < restartMs + 10_000 {
                network.step()
                if backAfterMs == nil && network.allBelieve(victim, is: .alive) { backAfterMs = network.nowMs - restartMs }
            }
            let inTime = backAfterMs.map { $0 <= Self.probeGapMaxMs + SWIMNetwork.stepMs } ?? false
            #expect(inTime, "seed \(seed): back after \(String(describing: backAfterMs))")
            #expect(network.doubts == 0, "seed \(seed)")
            #expect(network.nodes[victim].incarnation == 1_000, "seed \(seed)")
        }
    }

    /// SWIM §4.2: a member that hears it is suspected at its incarnation (or later) refutes with
    /// that incarnation + 1, in the very ack; an older suspicion is already refuted.
    @Test func aSuspicionHeardIsRefutedAtOnce() {
        var node = SWIMMembership(me: 2, members: [0, 1, 2, 3, 4], settings: Self.settings, incarnation: 5, nowMs: 0)
        let stale = node.receive(
            .ping(sequence: 6, onBehalfOf: nil, updates: [MemberUpdate(member: 2, incarnation: 4, liveness: .suspect)]), from: 0, nowMs: 0)
        #expect(node.incarnation == 5)
        #expect(stale.count == 1)
        let replies = node.receive(
            .ping(sequence: 7, onBehalfOf: nil, updates: [MemberUpdate(member: 2, incarnation: 5, liveness: .suspect)]), from: 0, nowMs: 10)
        #expect(node.incarnation == 6)
        guard replies.count == 1, case let .ack(sequence, target, incarnation, updates) = replies[0].message else {
            Issue.record("expected one ack, got \(replies)")
            return
        }
        #expect(replies[0].to == 0 && sequence == 7 && target == 2 && incarnation == 6)
        #expect(updates.contains(MemberUpdate(member: 2, incarnation: 6, liveness: .alive)))
        // Declared down at a later incarnation than its own (a peer's numbering ran ahead): it
        // outbids that too.
        let verdict = MemberUpdate(member: 2, incarnation: 9, liveness: .down)
        _ = node.receive(.ack(sequence: 1, target: 0, incarnation: 1, updates: [verdict]), from: 0, nowMs: 20)
        #expect(node.incarnation == 10)
        #expect(node.liveness(of: 2) == .alive)
    }

    /// SWIM §4.2 in the network: a suspicion planted at one member spreads, reaches the suspect,
    /// which refutes it (its incarnation grows by one); nobody ever declares it down and all
    /// see it alive again.
    @Test func aSuspectedMemberRefutesAndStaysAlive() {
        let suspect = 2
        for seed in UInt64(1)...5 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            network.run(untilMs: 2_000)
            let before = network.nodes[suspect].incarnation
            let rumour = MemberUpdate(member: suspect, incarnation: before, liveness: .suspect)
            network.inject(.ping(sequence: 999, onBehalfOf: nil, updates: [rumour]), from: 1, to: 0)
            #expect(network.nodes[0].liveness(of: suspect) == .suspect, "seed \(seed)")
            var everDown = false
            while network.nowMs < 12_000 {
                network.step()
                everDown = everDown || network.anyBelieves(suspect, is: .down)
            }
            #expect(!everDown, "seed \(seed)")
            #expect(network.nodes[suspect].incarnation == before + 1, "seed \(seed)")
            #expect(network.doubts == 0, "seed \(seed)")
        }
    }

    /// A member cut off from everyone is declared down (and declares the others down); once the
    /// partition heals, the probes that still go to down members carry that verdict to them,
    /// they refute, and everyone is alive for everyone again, for good.
    @Test func aPartitionedMemberComesBackWhenThePartitionHeals() {
        let island = 3
        for seed in UInt64(1)...3 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            network.run(untilMs: 2_000)
            network.isolate(island)
            network.run(untilMs: 2_000 + Self.probeGapMaxMs + Self.settings.suspectTimeoutMs + 1_000)
            #expect(network.allBelieve(island, is: .down), "seed \(seed)")
            #expect(network.nodes[island].liveMembers.isEmpty, "seed \(seed)")
            network.isolate(island, false)
            let healedMs = network.nowMs
            var backAfterMs: Int64?
            while network.nowMs < healedMs + 10_000 {
                network.step()
                if backAfterMs == nil && network.doubts == 0 { backAfterMs = network.nowMs - healedMs }
            }
            let boundMs = Self.probeGapMaxMs + Self.settings.probeIntervalMs
            let inTime = backAfterMs.map { $0 <= boundMs } ?? false
            #expect(inTime, "seed \(seed): back after \(String(describing: backAfterMs))")
            #expect(network.doubts == 0, "seed \(seed)")
        }
    }

    /// Placement changes: a removed member is forgotten (`liveness(of:)` says `.down`, facts about
    /// it are ignored, nothing is sent to it or about it) and a new one starts alive and is probed.
    @Test func setMembersForgetsRemovedMembersAndStartsNewOnesAlive() {
        var detector = SWIMMembership(me: 0, members: [0, 1, 2, 3], settings: Self.settings, incarnation: 1, nowMs: 0)
        _ = detector.receive(
            .ping(sequence: 1, onBehalfOf: nil, updates: [MemberUpdate(member: 3, incarnation: 0, liveness: .suspect)]), from: 1, nowMs: 0)
        #expect(detector.liveness(of: 3) == .suspect)
        detector.setMembers([0, 1, 2, 4], nowMs: 10)
        #expect(detector.liveness(of: 3) == .down)
        #expect(detector.liveness(of: 4) == .alive)
        #expect(detector.liveMembers == [1, 2, 4])
        _ = detector.receive(
            .ping(sequence: 2, onBehalfOf: nil, updates: [MemberUpdate(member: 3, incarnation: 9, liveness: .alive)]), from: 1, nowMs: 20)
        #expect(detector.liveness(of: 3) == .down)
        var random = SplitMix64(seed: 7)
        var addressed: Set<Int> = []
        var factsAboutRemoved = 0
        var nowMs: Int64 = 20
        while nowMs < 10_000 {
            nowMs += SWIMNetwork.stepMs
            for send in detector.tick(nowMs: nowMs, random: &random) {
                addressed.insert(send.to)
                factsAboutRemoved += SWIMNetwork.updates(of: send.message).filter { $0.member == 3 }.count
            }
        }
        #expect(!addressed.contains(3))
        #expect(addressed.contains(4))
        #expect(factsAboutRemoved == 0)

        // In a running network: every member drops node 4 as it stops; nobody sends to it or
        // doubts anyone after that.
        for seed in UInt64(1)...3 {
            var network = SWIMNetwork(count: Self.count, seed: seed)
            network.run(untilMs: 2_000)
            for id in 0..<4 { network.nodes[id].setMembers([0, 1, 2, 3], nowMs: network.nowMs) }
            network.stopped.insert(4)
            let sentTo4 = network.messagesTo[4]
            var doubts = 0
            while network.nowMs < 12_000 {
                network.step()
                doubts += network.doubts
            }
            #expect(network.messagesTo[4] == sentTo4, "seed \(seed)")
            #expect(doubts == 0, "seed \(seed)")
            #expect(network.nodes[0].liveness(of: 4) == .down, "seed \(seed)")
        }
    }

    /// Hostile or damaged input: update lists past the limit are cut before anything is looked
    /// at, facts and requests about unknown members are ignored, an unrefutable incarnation is
    /// dropped, and a stranger's ping is still answered; outgoing lists stay within the limit
    /// however many facts are queued.
    @Test func oversizedListsAreCutAndUnknownMembersIgnored() {
        let limit = SWIMMembership.updatesPerMessageMax
        var detector = SWIMMembership(me: 0, members: [0, 1, 2, 3], settings: Self.settings, incarnation: 1, nowMs: 0)
        // Exactly `limit` facts about members nobody knows, then facts that must not be read.
        let strangerIDs = Array(([-1, Int.max, Int.min, 4] + (0..<limit).map { 1_000 + $0 }).prefix(limit))
        let strangers = strangerIDs.map { MemberUpdate(member: $0, incarnation: 7, liveness: .down) }
        let long = strangers + [MemberUpdate(member: 2, incarnation: 5, liveness: .suspect)]
            + Array(repeating: MemberUpdate(member: 1, incarnation: 9, liveness: .down), count: 10_000)
        let replies = detector.receive(.ping(sequence: 1, onBehalfOf: nil, updates: long), from: 1, nowMs: 0)
        #expect(replies.count == 1)
        #expect(detector.liveness(of: 2) == .alive)  // the first fact past the limit
        #expect(detector.liveness(of: 1) == .alive)
        #expect(detector.liveness(of: -1) == .down)  // unknown stays unknown
        #expect(detector.liveMembers == [1, 2, 3])

        let unrefutable = MemberUpdate(member: 0, incarnation: .max, liveness: .down)
        _ = detector.receive(.ping(sequence: 2, onBehalfOf: nil, updates: [unrefutable]), from: 1, nowMs: 0)
        #expect(detector.incarnation == 1)
        _ = detector.receive(.ack(sequence: 3, target: 2, incarnation: .max, updates: []), from: 2, nowMs: 0)
        #expect(detector.liveness(of: 2) == .alive)

        let requestAboutStranger = detector.receive(.pingRequest(sequence: 4, target: 42, updates: []), from: 1, nowMs: 0)
        #expect(requestAboutStranger.isEmpty)
        let ackFromStranger = detector.receive(.ack(sequence: 5, target: 42, incarnation: 3, updates: []), from: 42, nowMs: 0)
        #expect(ackFromStranger.isEmpty)
        let fromStranger = detector.receive(.ping(sequence: 6, onBehalfOf: 77, updates: []), from: 77, nowMs: 0)
        #expect(fromStranger.map(\.to) == [77])
        #expect(detector.liveMembers == [1, 2, 3])

        // Forty members, each suspected: the queue holds far more facts than one message carries.
        var crowded = SWIMMembership(me: 0, members: Array(0..<40), settings: Self.settings, incarnation: 1, nowMs: 0)
        let suspicions = (1..<40).map { MemberUpdate(member: $0, incarnation: 3, liveness: .suspect) }
        for start in stride(from: 0, to: suspicions.count, by: limit) {
            let chunk = Array(suspicions[start..<min(start + limit, suspicions.count)])
            _ = crowded.receive(.ping(sequence: 1, onBehalfOf: nil, updates: chunk), from: 1, nowMs: 0)
        }
        #expect(crowded.liveness(of: 39) == .suspect)
        let reply = crowded.receive(.ping(sequence: 2, onBehalfOf: nil, updates: []), from: 1, nowMs: 0)
        guard case let .ack(_, _, _, updates)? = reply.first?.message else {
            Issue.record("expected an ack, got \(reply)")
            return
        }
        #expect(updates.count == limit)
        // The recipient believed suspect hears that first, so that it can refute.
        let first = updates.first
        #expect(first == MemberUpdate(member: 1, incarnation: 3, liveness: .suspect))
        var random = SplitMix64(seed: 3)
        var largest = 0
        for step in 1...100 {
            for send in crowded.tick(nowMs: Int64(step) * SWIMNetwork.stepMs, random: &random) {
                largest = max(largest, SWIMNetwork.updates(of: send.message).count)
            }
        }
        #expect(largest <= limit)
    }

    /// The indirect-probe path message by message (SWIM §3.1): B relays A's request to C with
    /// its own sequence number and returns C's ack to A under A's.
    @Test func aPingRequestIsRelayedAndItsAckReturned() {
        var b = SWIMMembership(me: 1, members: [0, 1, 2], settings: Self.settings, incarnation: 1, nowMs: 0)
        let forwarded = b.receive(.pingRequest(sequence: 41, target: 2, updates: []), from: 0, nowMs: 0)
        guard forwarded.count == 1, forwarded[0].to == 2, case let .ping(local, onBehalfOf, _) = forwarded[0].message else {
            Issue.record("expected one ping to C, got \(forwarded)")
            return
        }
        #expect(onBehalfOf == 0)
        let relayed = b.receive(.ack(sequence: local, target: 2, incarnation: 4, updates: []), from: 2, nowMs: 10)
        guard relayed.count == 1, relayed[0].to == 0, case let .ack(sequence, target, incarnation, _) = relayed[0].message else {
            Issue.record("expected one ack to A, got \(relayed)")
            return
        }
        #expect(sequence == 41 && target == 2 && incarnation == 4)
        // A second ack for the same relay goes nowhere: the relay is done.
        let again = b.receive(.ack(sequence: local, target: 2, incarnation: 4, updates: []), from: 2, nowMs: 20)
        #expect(again.isEmpty)
    }
}
