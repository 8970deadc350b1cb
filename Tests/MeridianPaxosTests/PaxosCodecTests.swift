// The strong protocol's byte form: every message kind round-trips, and damaged payloads are
// refused (never read past the end, never crash).
import MeridianCore
import MeridianPaxos
import MeridianWire
import Testing

@Suite struct PaxosCodecTests {
    static let entry = StrongEntry(
        request: RequestID(origin: 1, sequence: 99), timeMs: 1_700_000_000_123,
        command: StrongCommand(transaction: [
            .set(key: Array("{a}x".utf8), value: Array("v".utf8), options: SetOptions(condition: .ifEqual(Array("old".utf8)), expiry: .afterMs(500), fence: 7, returnPrevious: true)),
            .set(key: Array("{a}y".utf8), value: [], options: SetOptions(condition: .ifAbsent, expiry: .keep)),
            .delete(key: Array("{a}z".utf8)), .incrementBy(key: Array("{a}n".utf8), amount: -5),
            .expire(key: Array("{a}x".utf8), ttlMs: nil), .expire(key: Array("{a}x".utf8), ttlMs: 10),
            .get(key: Array("{a}x".utf8)), .exists(key: Array("{a}x".utf8)), .timeToLive(key: Array("{a}x".utf8)),
            .lock(name: Array("a".utf8), ttlMs: 1_000, owner: Array("me".utf8)), .unlock(name: Array("a".utf8), token: 3),
            .version(key: Array("{a}x".utf8)),
        ], watched: [WatchedKey(key: Array("{a}x".utf8), version: 12)]))

    static let messages: [PaxosMessage] = [
        .prepare(partition: 3, ballot: Ballot(round: 7, voter: 2), fromSlot: 11, sentAt: -5),
        .promise(partition: 3, ballot: Ballot(round: 7, voter: 2), accepted: [AcceptedEntry(slot: 12, ballot: Ballot(round: 6, voter: 0), entry: entry)],
                 chosen: [ChosenEntry(slot: 11, entry: .noop(timeMs: 5))], applied: 10, sentAt: 44, part: 1, parts: 3),
        .accept(partition: 0, ballot: Ballot(round: 1, voter: 0), slot: 1, entry: entry, chosenThrough: 0, truncateThrough: 0, sentAt: 1),
        .accepted(partition: 0, ballot: Ballot(round: 1, voter: 0), slot: 1, applied: 0, sentAt: 1),
        .nack(partition: 1, ballot: .zero, promised: Ballot(round: 9, voter: 1), leaseHolder: 1, leaseRemainingMs: 1_500, behindFrom: nil),
        .nack(partition: 1, ballot: .zero, promised: .zero, leaseHolder: nil, leaseRemainingMs: 0, behindFrom: 77),
        .commit(partition: 2, entries: [ChosenEntry(slot: 5, entry: entry)], chosenThrough: 5, truncateThrough: 4),
        .learned(partition: 2, applied: 5), .learn(partition: 2, fromSlot: 6),
        .renew(partition: 2, ballot: Ballot(round: 3, voter: 0), truncateThrough: 2, sentAt: 8),
        .renewed(partition: 2, ballot: Ballot(round: 3, voter: 0), applied: 9, sentAt: 8),
        .release(partition: 2, ballot: Ballot(round: 3, voter: 1)),
        .forward(partition: 2, request: RequestID(origin: 1, sequence: 2), command: StrongCommand(.get(key: Array("k".utf8)))),
        .forwardReply(request: RequestID(origin: 1, sequence: 2), outcome: .reply(.array([.ok, .null, .bulk([1, 2]), .integer(-1), .error("ERR x"), .nullArray]))),
        .forwardReply(request: RequestID(origin: 1, sequence: 3), outcome: .notLeader),
        .forwardReply(request: RequestID(origin: 1, sequence: 4), outcome: .uncertain),
    ]

    @Test func everyMessageRoundTrips() throws {
        for message in Self.messages {
            #expect(try PaxosCodec.decode(PaxosCodec.encode(message)) == message)
        }
    }

    @Test func snapshotsRoundTrip() throws {
        var state = StrongState()
        _ = state.apply(Self.entry, slot: 3)
        _ = state.apply(StrongEntry(request: RequestID(origin: 0, sequence: 5), timeMs: 9, command: StrongCommand(.set(key: [1], value: [2], options: SetOptions(expiry: .afterMs(50))))), slot: 4)
        let bytes = PaxosCodec.encode(snapshotAt: 4, state.snapshot())
        let decoded = try PaxosCodec.decodeSnapshot(bytes)
        #expect(decoded.slot == 4 && decoded.snapshot == state.snapshot())
        #expect(StrongState(decoded.snapshot) == state)
        for length in 0..<bytes.count {
            #expect(throws: WireError.self) { try PaxosCodec.decodeSnapshot(Array(bytes[0..<length])) }
        }
    }

    @Test func damagedPayloadsAreRefused() {
        for message in Self.messages {
            let bytes = PaxosCodec.encode(message)
            // Every truncation is refused.
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try PaxosCodec.decode(Array(bytes[0..<length])) }
            }
            #expect(throws: WireError.self) { try PaxosCodec.decode(bytes + [0]) }
        }
        #expect(throws: WireError.self) { try PaxosCodec.decode([200]) }
        // A count far beyond the payload is refused before anything is allocated for it.
        #expect(throws: WireError.self) { try PaxosCodec.decode([6, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]) }
        // Random bytes: an error or a message, never a crash.
        var random = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let count = Int(random.next() % 40)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if !bytes.isEmpty { bytes[0] = UInt8(1 + random.next() % 13) }
            _ = try? PaxosCodec.decode(bytes)
        }
    }
}
