// The coordinator's side of forwarding (docs/CLUSTER.md, "Forwarding"): replies reach the
// client that sent the command; a command a primary refused with MOVED-EPOCH (it did not run)
// goes again to the primary a newer placement names; a command that may have run is never sent
// twice — it fails with "may have run" at its deadline or when its link drops; nothing runs
// for a command too large for a frame or without a live primary; a link's in-flight commands
// are bounded.
import MeridianCluster
import MeridianSimulation
import Testing

@Suite struct CommandForwarderTests {
    static let get: [[[UInt8]]] = [[Array("GET".utf8), Array("k".utf8)]]
    static let incr: [[[UInt8]]] = [[Array("INCR".utf8), Array("n".utf8)]]

    static func forwarder(inFlight: Int = 8) -> CommandForwarder {
        CommandForwarder(requestTimeoutMs: 2_000, inFlightPerLinkMax: inFlight, messageBytesMax: 1 << 20)
    }

    /// The request number of the one `COMMAND` among `outputs`, checking where it went.
    static func sentRequest(_ outputs: [ForwardingOutput], to peer: Int) -> UInt64? {
        let sent = outputs.compactMap { output -> UInt64? in
            guard case .send(peer, .command(let request, _, _, _, _, _)) = output else { return nil }
            return request
        }
        return sent.count == 1 ? sent[0] : nil
    }

    @Test func repliesReachTheirClients() throws {
        var forwarder = Self.forwarder()
        let result1 = forwarder.forward(client: 1, partition: 3, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        #expect(result1)
        let first = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2))
        let result2 = forwarder.forward(client: 2, partition: 4, commands: Self.incr, epoch: 5, primary: 1, nowMs: 0)
        #expect(result2)
        let second = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 1))
        #expect(first != second)
        // Answers in any order, each to its client; an answer from the wrong peer, or to an
        // unknown request, is nobody's.
        forwarder.receive(.commandReply(request: second, outcome: .executed(reply: Array(":1\r\n".utf8))), from: 2)
        forwarder.receive(.commandReply(request: 99, outcome: .executed(reply: [])), from: 1)
        let result3 = forwarder.takeOutputs()
        #expect(result3.isEmpty)
        forwarder.receive(.commandReply(request: second, outcome: .executed(reply: Array(":1\r\n".utf8))), from: 1)
        forwarder.receive(.commandReply(request: first, outcome: .executed(reply: Array("$-1\r\n".utf8))), from: 2)
        #expect(forwarder.takeOutputs() == [
            .reply(client: 2, .replied(Array(":1\r\n".utf8))), .reply(client: 1, .replied(Array("$-1\r\n".utf8))),
        ])
        #expect(forwarder.pendingCount == 0 && forwarder.inFlight(to: 1) == 0 && forwarder.inFlight(to: 2) == 0)
        // A duplicate answer changes nothing.
        forwarder.receive(.commandReply(request: first, outcome: .executed(reply: [])), from: 2)
        let result4 = forwarder.takeOutputs()
        #expect(result4.isEmpty)
    }

    @Test func aRefusedCommandGoesToTheNewPrimaryOnce() throws {
        var forwarder = Self.forwarder()
        _ = forwarder.forward(client: 7, partition: 3, commands: Self.incr, epoch: 5, primary: 2, nowMs: 0)
        let refused = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2))
        forwarder.receive(.commandReply(request: refused, outcome: .movedEpoch(6)), from: 2)
        let result5 = forwarder.takeOutputs()
        #expect(result5 == [.fetchPlacement])
        // A placement older than the refusal's does not send it; nor does time.
        forwarder.learned(epoch: 5) { _ in 2 }
        forwarder.tick(nowMs: 100, epoch: 5) { _ in 2 }
        let result6 = forwarder.takeOutputs()
        #expect(result6 == [.fetchPlacement], "asked again: the fetch brought an older placement")
        forwarder.learned(epoch: 6) { _ in 4 }
        let again = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 4))
        #expect(again != refused)
        // The refused request's late answer is nobody's; the new one's is the client's.
        forwarder.receive(.commandReply(request: refused, outcome: .executed(reply: [1])), from: 2)
        forwarder.receive(.commandReply(request: again, outcome: .executed(reply: [2])), from: 4)
        let result7 = forwarder.takeOutputs()
        #expect(result7 == [.reply(client: 7, .replied([2]))])
    }

    @Test func aCommandThatMayHaveRunIsNeverSentTwice() throws {
        var forwarder = Self.forwarder()
        _ = forwarder.forward(client: 1, partition: 0, commands: Self.incr, epoch: 5, primary: 2, nowMs: 0)
        _ = forwarder.forward(client: 2, partition: 1, commands: Self.incr, epoch: 5, primary: 3, nowMs: 500)
        _ = forwarder.takeOutputs()
        // Unanswered: no resend before the deadline, and at it a failure that says it may have run.
        forwarder.tick(nowMs: 1_999, epoch: 5) { _ in 2 }
        let result8 = forwarder.takeOutputs()
        #expect(result8.isEmpty)
        forwarder.tick(nowMs: 2_000, epoch: 5) { _ in 2 }
        let result9 = forwarder.takeOutputs()
        #expect(result9 == [.reply(client: 1, .timedOut(mayHaveRun: true))])
        // A dropped link fails what is in flight on it, and only that.
        _ = forwarder.forward(client: 3, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 2_000)
        _ = forwarder.takeOutputs()
        forwarder.linkLost(3)
        let result10 = forwarder.takeOutputs()
        #expect(result10 == [.reply(client: 2, .timedOut(mayHaveRun: true))])
        #expect(forwarder.pendingCount == 1 && forwarder.inFlight(to: 2) == 1 && forwarder.inFlight(to: 3) == 0)
    }

    @Test func aRefusedCommandFailsAsNotRunWithoutANewPrimaryOrPlacement() throws {
        var forwarder = Self.forwarder()
        _ = forwarder.forward(client: 1, partition: 0, commands: Self.incr, epoch: 5, primary: 2, nowMs: 0)
        _ = forwarder.forward(client: 2, partition: 1, commands: Self.incr, epoch: 5, primary: 3, nowMs: 0)
        let outputs = forwarder.takeOutputs()
        let first = try #require(Self.sentRequest(outputs, to: 2))
        let second = try #require(Self.sentRequest(outputs, to: 3))
        forwarder.receive(.commandReply(request: first, outcome: .movedEpoch(6)), from: 2)
        forwarder.receive(.commandReply(request: second, outcome: .movedEpoch(7)), from: 3)
        let fetches = forwarder.takeOutputs()
        #expect(fetches == [.fetchPlacement], "one fetch for both refusals")
        // Epoch 6 names no live primary for partition 0, and is too old for partition 1.
        forwarder.learned(epoch: 6) { _ in nil }
        forwarder.tick(nowMs: 1_000, epoch: 6) { _ in nil }
        let waiting = forwarder.takeOutputs()
        #expect(waiting == [.fetchPlacement], "asked again for partition 1 only, once")
        forwarder.tick(nowMs: 2_000, epoch: 6) { _ in nil }
        let failed = forwarder.takeOutputs()
        #expect(failed == [.reply(client: 1, .noPrimary), .reply(client: 2, .timedOut(mayHaveRun: false))])
        #expect(forwarder.pendingCount == 0)
    }

    @Test func aCommandThatNeverLeftGoesToTheNextPrimaryOrFailsAsNotRun() throws {
        var forwarder = Self.forwarder()
        _ = forwarder.forward(client: 1, partition: 3, commands: Self.incr, epoch: 5, primary: 2, nowMs: 0)
        let unsent = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2))
        // No link to 2 took it: it did not run, and goes to whoever is primary on the next tick.
        forwarder.notSent(request: unsent)
        #expect(forwarder.inFlight(to: 2) == 0)
        forwarder.tick(nowMs: 10, epoch: 5) { _ in 2 }
        let again = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2))
        forwarder.notSent(request: again)
        forwarder.tick(nowMs: 700, epoch: 5) { _ in 0 }
        let moved = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 0))
        // A late answer from the first target is nobody's; the new primary's is the client's.
        forwarder.receive(.commandReply(request: unsent, outcome: .executed(reply: Array(":9\r\n".utf8))), from: 2)
        forwarder.receive(.commandReply(request: moved, outcome: .executed(reply: Array(":1\r\n".utf8))), from: 0)
        #expect(forwarder.takeOutputs() == [.reply(client: 1, .replied(Array(":1\r\n".utf8)))])
        // One that never leaves before its deadline did not run.
        _ = forwarder.forward(client: 2, partition: 3, commands: Self.incr, epoch: 5, primary: 2, nowMs: 1_000)
        forwarder.notSent(request: try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2)))
        forwarder.tick(nowMs: 3_000, epoch: 5) { _ in 2 }
        #expect(forwarder.takeOutputs() == [.reply(client: 2, .timedOut(mayHaveRun: false))])
        #expect(forwarder.pendingCount == 0 && forwarder.inFlight(to: 2) == 0)
    }

    @Test func aRestartedCoordinatorNeverTakesALateAnswerOfItsPreviousRun() throws {
        var before = CommandForwarder(requestTimeoutMs: 2_000, inFlightPerLinkMax: 8, messageBytesMax: 1 << 20, incarnation: 1_000)
        _ = before.forward(client: 1, partition: 3, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        let old = try #require(Self.sentRequest(before.takeOutputs(), to: 2))
        // The node restarts (a later incarnation) and forwards another command to the same primary.
        var after = CommandForwarder(requestTimeoutMs: 2_000, inFlightPerLinkMax: 8, messageBytesMax: 1 << 20, incarnation: 1_001)
        _ = after.forward(client: 1, partition: 3, commands: Self.incr, epoch: 5, primary: 2, nowMs: 0)
        let new = try #require(Self.sentRequest(after.takeOutputs(), to: 2))
        #expect(new != old)
        // The primary's late answer to the old request is nobody's.
        after.receive(.commandReply(request: old, outcome: .executed(reply: Array("$1\r\nx\r\n".utf8))), from: 2)
        let late = after.takeOutputs()
        #expect(late.isEmpty)
        after.receive(.commandReply(request: new, outcome: .executed(reply: Array(":1\r\n".utf8))), from: 2)
        #expect(after.takeOutputs() == [.reply(client: 1, .replied(Array(":1\r\n".utf8)))])
    }

    @Test func commandsWaitingForRoomOnALinkGoFirstAndInOrder() throws {
        var forwarder = Self.forwarder(inFlight: 1)
        _ = forwarder.forward(client: 1, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        let request = try #require(Self.sentRequest(forwarder.takeOutputs(), to: 2))
        _ = forwarder.forward(client: 2, partition: 0, commands: Self.get, epoch: 5, primary: nil, nowMs: 0)
        // The primary is back, its link full: client 2 waits for room, and a newer command for
        // that link is refused rather than overtake it.
        forwarder.tick(nowMs: 100, epoch: 5) { _ in 2 }
        let refused = forwarder.forward(client: 3, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 100)
        #expect(!refused)
        forwarder.receive(.commandReply(request: request, outcome: .replyTooLarge), from: 2)
        let replied = forwarder.takeOutputs()
        #expect(replied == [.reply(client: 1, .replyTooLarge)])
        forwarder.tick(nowMs: 200, epoch: 5) { _ in 2 }
        #expect(Self.sentRequest(forwarder.takeOutputs(), to: 2) != nil)
        // Left waiting for room until the deadline, a command fails as not run.
        _ = forwarder.forward(client: 4, partition: 1, commands: Self.get, epoch: 5, primary: nil, nowMs: 200)
        forwarder.tick(nowMs: 300, epoch: 5) { _ in 2 }
        #expect(forwarder.takeOutputs().isEmpty, "client 2 is still in flight on the only slot")
        forwarder.tick(nowMs: 2_200, epoch: 5) { _ in 2 }
        let timedOut = forwarder.takeOutputs()
        #expect(timedOut == [.reply(client: 2, .timedOut(mayHaveRun: true)), .reply(client: 4, .timedOut(mayHaveRun: false))])
    }

    @Test func withoutALivePrimaryNothingRuns() throws {
        var forwarder = Self.forwarder()
        _ = forwarder.forward(client: 1, partition: 0, commands: Self.get, epoch: 5, primary: nil, nowMs: 0)
        _ = forwarder.forward(client: 2, partition: 1, commands: Self.get, epoch: 5, primary: nil, nowMs: 0)
        let result12 = forwarder.takeOutputs()
        #expect(result12.isEmpty)
        // Partition 1's primary comes back before the deadline; partition 0's does not.
        forwarder.tick(nowMs: 1_000, epoch: 5) { $0 == 1 ? 4 : nil }
        #expect(Self.sentRequest(forwarder.takeOutputs(), to: 4) != nil)
        forwarder.tick(nowMs: 2_000, epoch: 5) { $0 == 1 ? 4 : nil }
        let result13 = forwarder.takeOutputs()
        #expect(result13 == [.reply(client: 1, .noPrimary), .reply(client: 2, .timedOut(mayHaveRun: true))])
    }

    @Test func tooLargeCommandsAndFullLinksAreRefused() throws {
        var forwarder = CommandForwarder(requestTimeoutMs: 2_000, inFlightPerLinkMax: 2, messageBytesMax: 100)
        let big: [[[UInt8]]] = [[Array("SET".utf8), Array("k".utf8), [UInt8](repeating: 1, count: 80)]]
        #expect(CommandForwarder.messageBytes(of: big) > 100)
        let result14 = forwarder.forward(client: 1, partition: 0, commands: big, epoch: 5, primary: 2, nowMs: 0)
        #expect(result14)
        let result15 = forwarder.takeOutputs()
        #expect(result15 == [.reply(client: 1, .tooLarge)])
        let result16 = forwarder.forward(client: 2, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        #expect(result16)
        let result17 = forwarder.forward(client: 3, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        #expect(result17)
        let result18 = forwarder.forward(client: 4, partition: 0, commands: Self.get, epoch: 5, primary: 2, nowMs: 0)
        #expect(!result18)
        let result19 = forwarder.forward(client: 4, partition: 1, commands: Self.get, epoch: 5, primary: 3, nowMs: 0)
        #expect(result19)
        let sent = forwarder.takeOutputs().filter { if case .send = $0 { true } else { false } }
        #expect(sent.count == 3 && forwarder.inFlight(to: 2) == 2)
    }

    /// The primary's side: the first live owner is the primary (a node rebuilding a partition
    /// is not its primary); an owner runs a forwarded command, fetching a newer placement its
    /// coordinator knew; a non-owner refuses it with its epoch.
    @Test func ownersRunForwardedCommandsAndOthersRefuseThem() {
        var dc = InProcessDataCenter(members: 4, replicationFactor: 2, partitions: 8)
        let placement = dc.nodes[0].placement
        let partition = 5
        let owners = placement.owners(of: partition)
        let outsider = (0..<4).first { !owners.contains($0) }!
        #expect(dc.nodes[outsider].primary(of: partition) == owners[0])
        #expect(dc.nodes[owners[1]].refusesForwarded(partition: partition, epoch: placement.epoch) == nil)
        #expect(dc.nodes[outsider].refusesForwarded(partition: partition, epoch: placement.epoch) == .movedEpoch(placement.epoch))
        _ = dc.nodes[owners[0]].takeOutputs()
        #expect(dc.nodes[owners[0]].refusesForwarded(partition: partition, epoch: placement.epoch + 1) == nil)
        #expect(dc.nodes[owners[0]].takeOutputs().contains(.fetchPlacement))
        #expect(dc.nodes[owners[0]].refusesForwarded(partition: 99, epoch: placement.epoch) == .movedEpoch(placement.epoch))
        // Once SWIM declares the first owner down, the second is the primary.
        dc.unreachable = [owners[0]]
        dc.advance(ms: 10_000)
        #expect(dc.nodes[outsider].primary(of: partition) == owners[1])
    }
}
