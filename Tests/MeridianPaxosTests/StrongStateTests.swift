// The applied state of strong keys: what each operation does, CAS, transactions all or
// nothing, WATCH versions, locks and fencing tokens, expiry measured in entry stamps.
import MeridianCore
import MeridianPaxos
import Testing

@Suite struct StrongStateTests {
    static func entry(_ operation: StrongOperation, at timeMs: Int64 = 1_000) -> StrongEntry {
        StrongEntry(request: RequestID(origin: 0, sequence: UInt64.random(in: 1...UInt64.max)), timeMs: timeMs, command: StrongCommand(operation))
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func setGetDeleteIncrement() {
        var state = StrongState()
        #expect(state.apply(Self.entry(.set(key: Self.bytes("a"), value: Self.bytes("1"), options: .init())), slot: 1) == .ok)
        #expect(state.read(StrongCommand(.get(key: Self.bytes("a"))), nowMs: 0) == .bulk(Self.bytes("1")))
        #expect(state.apply(Self.entry(.incrementBy(key: Self.bytes("a"), amount: 41)), slot: 2) == .integer(42))
        #expect(state.apply(Self.entry(.incrementBy(key: Self.bytes("new"), amount: -3)), slot: 3) == .integer(-3))
        #expect(state.apply(Self.entry(.set(key: Self.bytes("s"), value: Self.bytes("x"), options: .init())), slot: 4) == .ok)
        #expect(state.apply(Self.entry(.incrementBy(key: Self.bytes("s"), amount: 1)), slot: 5) == .error("ERR value is not an integer or out of range"))
        #expect(state.apply(Self.entry(.delete(key: Self.bytes("a"))), slot: 6) == .integer(1))
        #expect(state.apply(Self.entry(.delete(key: Self.bytes("a"))), slot: 7) == .integer(0))
        #expect(state.read(StrongCommand(.exists(key: Self.bytes("a"))), nowMs: 0) == .integer(0))
    }

    @Test func compareAndSetAndConditions() {
        var state = StrongState()
        let ifEqual = { (old: String) in SetOptions(condition: .ifEqual(Self.bytes(old))) }
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("b"), options: ifEqual("a"))), slot: 1) == .null)
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("a"), options: SetOptions(condition: .ifAbsent))), slot: 2) == .ok)
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("z"), options: SetOptions(condition: .ifAbsent))), slot: 3) == .null)
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("b"), options: ifEqual("a"))), slot: 4) == .ok)
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("c"), options: ifEqual("a"))), slot: 5) == .null)
        #expect(state.read(StrongCommand(.get(key: Self.bytes("k"))), nowMs: 0) == .bulk(Self.bytes("b")))
        var previous = SetOptions(condition: .ifPresent)
        previous.returnPrevious = true
        #expect(state.apply(Self.entry(.set(key: Self.bytes("k"), value: Self.bytes("d"), options: previous)), slot: 6) == .bulk(Self.bytes("b")))
    }

    @Test func expiryIsMeasuredInEntryStamps() {
        var state = StrongState()
        let ttl = SetOptions(expiry: .afterMs(500))
        _ = state.apply(Self.entry(.set(key: Self.bytes("t"), value: Self.bytes("v"), options: ttl), at: 1_000), slot: 1)
        #expect(state.read(StrongCommand(.timeToLive(key: Self.bytes("t"))), nowMs: 1_200) == .integer(300))
        #expect(state.read(StrongCommand(.get(key: Self.bytes("t"))), nowMs: 1_499) == .bulk(Self.bytes("v")))
        #expect(state.read(StrongCommand(.get(key: Self.bytes("t"))), nowMs: 1_500) == .null)
        // A later entry's stamp passes the expiry for every learner alike.
        #expect(state.apply(Self.entry(.incrementBy(key: Self.bytes("t"), amount: 1), at: 1_600), slot: 2) == .integer(1))
        // Time never goes back: an entry stamped earlier than the state counts from the state's
        // time (1,600 here), not from its own stamp.
        _ = state.apply(Self.entry(.set(key: Self.bytes("u"), value: Self.bytes("v"), options: SetOptions(expiry: .afterMs(100))), at: 1_000), slot: 3)
        #expect(state.read(StrongCommand(.exists(key: Self.bytes("u"))), nowMs: 0) == .integer(1))
        #expect(state.read(StrongCommand(.timeToLive(key: Self.bytes("u"))), nowMs: 1_650) == .integer(50))
        #expect(state.read(StrongCommand(.exists(key: Self.bytes("u"))), nowMs: 1_700) == .integer(0))
    }

    /// TTLs come from clients: the largest ones saturate instead of trapping the state machine.
    @Test func hugeTTLsSaturate() {
        var state = StrongState()
        #expect(state.apply(Self.entry(.set(key: Self.bytes("a"), value: Self.bytes("1"), options: SetOptions(expiry: .afterMs(.max)))), slot: 1) == .ok)
        #expect(state.read(StrongCommand(.timeToLive(key: Self.bytes("a"))), nowMs: 0) == .integer(.max - 1_000))
        #expect(state.apply(Self.entry(.expire(key: Self.bytes("a"), ttlMs: .max)), slot: 2) == .integer(1))
        #expect(state.apply(Self.entry(.lock(name: Self.bytes("l"), ttlMs: .max, owner: [])), slot: 3) == .integer(3))
        #expect(state.read(StrongCommand(.get(key: Self.bytes("a"))), nowMs: .max - 1) == .bulk(Self.bytes("1")))
    }

    @Test func transactionsApplyAllOrNothingAndHonourWatch() {
        var state = StrongState()
        _ = state.apply(Self.entry(.set(key: Self.bytes("{t}a"), value: Self.bytes("1"), options: .init())), slot: 1)
        #expect(state.version(of: Self.bytes("{t}a")) == 1)
        let transaction = StrongCommand(transaction: [
            .incrementBy(key: Self.bytes("{t}a"), amount: 1),
            .set(key: Self.bytes("{t}b"), value: Self.bytes("x"), options: .init()),
        ], watched: [WatchedKey(key: Self.bytes("{t}a"), version: 1)])
        let entry = StrongEntry(request: RequestID(origin: 0, sequence: 2), timeMs: 1_000, command: transaction)
        #expect(state.apply(entry, slot: 2) == .array([.integer(2), .ok]))
        // The same request chosen a second time (a retried proposal, a duplicated forward)
        // does not apply twice, and answers what it answered the first time.
        #expect(state.apply(entry, slot: 3) == .array([.integer(2), .ok]))
        #expect(state.read(StrongCommand(.get(key: Self.bytes("{t}a"))), nowMs: 0) == .bulk(Self.bytes("2")))
        // The same transaction as a new request: {t}a changed since the WATCH (version 2).
        var again = entry
        again.request.sequence += 1
        #expect(state.apply(again, slot: 3) == .nullArray)
        // A failing operation rolls the whole transaction back.
        let failing = StrongCommand(transaction: [
            .set(key: Self.bytes("{t}a"), value: Self.bytes("changed"), options: .init()),
            .incrementBy(key: Self.bytes("{t}b"), amount: 1),
        ])
        let reply = state.apply(StrongEntry(request: RequestID(origin: 0, sequence: 100), timeMs: 1_000, command: failing), slot: 4)
        guard case .error(let message) = reply else { Issue.record("expected an error, got \(reply)"); return }
        #expect(message.hasPrefix("EXECABORT"))
        #expect(state.read(StrongCommand(.get(key: Self.bytes("{t}a"))), nowMs: 0) == .bulk(Self.bytes("2")))
    }

    @Test func locksGrantIncreasingTokensAndFenceStaleWriters() {
        var state = StrongState()
        let lock = { (slot: UInt64, at: Int64) -> StrongReply in
            state.apply(Self.entry(.lock(name: Self.bytes("acct"), ttlMs: 1_000, owner: Self.bytes("me")), at: at), slot: slot)
        }
        let fenced = { (token: UInt64) in SetOptions(fence: token) }
        // FENCE before any grant is refused.
        guard case .error = state.apply(Self.entry(.set(key: Self.bytes("{acct}:x"), value: Self.bytes("0"), options: fenced(1))), slot: 1) else {
            Issue.record("FENCE without a lock must fail"); return
        }
        #expect(lock(2, 1_000) == .integer(2))
        #expect(lock(3, 1_500) == .null)  // held
        #expect(state.apply(Self.entry(.set(key: Self.bytes("{acct}:x"), value: Self.bytes("1"), options: fenced(2))), slot: 4) == .ok)
        #expect(lock(5, 2_100) == .integer(5))  // the first grant ran out
        // The first holder's token is stale now.
        let stale = state.apply(Self.entry(.set(key: Self.bytes("{acct}:x"), value: Self.bytes("2"), options: fenced(2)), at: 2_100), slot: 6)
        #expect(stale == .error("ERR stale fencing token 2: lock 'acct' was granted again with token 5"))
        #expect(state.apply(Self.entry(.unlock(name: Self.bytes("acct"), token: 2), at: 2_100), slot: 7) == .integer(0))
        #expect(state.apply(Self.entry(.unlock(name: Self.bytes("acct"), token: 5), at: 2_100), slot: 8) == .integer(1))
        #expect(lock(9, 2_200) == .integer(9))
        #expect(StrongState.lockName(forKey: Self.bytes("plain")) == Self.bytes("plain"))
    }
}
