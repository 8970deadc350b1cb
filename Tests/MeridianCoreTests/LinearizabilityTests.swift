// Proves the linearizability checker the strong namespaces' tests will use
// (docs/CONSISTENCY.md): known linearizable histories pass (sequential, overlapping, CAS,
// operations of unknown outcome), known violations are caught (a stale read after a completed
// write, new-then-old reads, a CAS that reports the wrong outcome, a lost write of unknown
// outcome that reappears), and randomized histories produced by a real register at random
// linearization points inside random intervals always pass, while the same histories with one
// read changed to a value never written always fail.
import MeridianCore
import Testing

@Suite struct LinearizabilityTests {
    typealias Op = Linearizability.Operation

    static func v(_ n: Int) -> [UInt8] { Array("\(n)".utf8) }

    static func isLinearizable(_ history: [Op], initial: [UInt8]? = nil) -> Bool {
        if case .linearizable = Linearizability.check(history, initial: initial) { return true }
        return false
    }

    @Test func sequentialAndOverlappingHistoriesPass() {
        let sequential = [
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 10),
            Op(.read(observed: Self.v(1)), invokedAt: 20, completedAt: 30),
            Op(.write(nil), invokedAt: 40, completedAt: 50),
            Op(.read(observed: nil), invokedAt: 60, completedAt: 70),
        ]
        #expect(Self.isLinearizable(sequential))
        // A read overlapping a write may see either value.
        for observed in [nil, Self.v(1)] {
            #expect(Self.isLinearizable([
                Op(.write(Self.v(1)), invokedAt: 0, completedAt: 100),
                Op(.read(observed: observed), invokedAt: 10, completedAt: 20),
            ]))
        }
        // Two concurrent writes, then reads that agree on which came last.
        #expect(Self.isLinearizable([
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 50),
            Op(.write(Self.v(2)), invokedAt: 10, completedAt: 40),
            Op(.read(observed: Self.v(1)), invokedAt: 60, completedAt: 70),
            Op(.read(observed: Self.v(1)), invokedAt: 80, completedAt: 90),
        ]))
    }

    @Test func knownViolationsAreCaught() {
        // A read after a completed write that does not see it.
        #expect(!Self.isLinearizable([
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 10),
            Op(.read(observed: nil), invokedAt: 20, completedAt: 30),
        ]))
        // New, then old, in real-time order, while the write is still running.
        #expect(!Self.isLinearizable([
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 100),
            Op(.read(observed: Self.v(1)), invokedAt: 10, completedAt: 20),
            Op(.read(observed: nil), invokedAt: 30, completedAt: 40),
        ]))
        // Two reads after both writes completed, disagreeing on the last one.
        #expect(!Self.isLinearizable([
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 50),
            Op(.write(Self.v(2)), invokedAt: 10, completedAt: 40),
            Op(.read(observed: Self.v(1)), invokedAt: 60, completedAt: 70),
            Op(.read(observed: Self.v(2)), invokedAt: 80, completedAt: 90),
        ]))
        // A value nobody wrote.
        #expect(!Self.isLinearizable([Op(.read(observed: Self.v(9)), invokedAt: 0, completedAt: 1)]))
    }

    @Test func compareAndSetOutcomesMustFit() {
        let base = [
            Op(.write(Self.v(1)), invokedAt: 0, completedAt: 10),
            Op(.compareAndSet(expected: Self.v(1), new: Self.v(2), succeeded: true), invokedAt: 20, completedAt: 30),
            Op(.read(observed: Self.v(2)), invokedAt: 40, completedAt: 50),
        ]
        #expect(Self.isLinearizable(base))
        // Told it failed, but the value was what it expected.
        var failed = base
        failed[1] = Op(.compareAndSet(expected: Self.v(1), new: Self.v(2), succeeded: false), invokedAt: 20, completedAt: 30)
        #expect(!Self.isLinearizable(failed))
        // Two CASes from the same value, both told they won (a lock granted twice).
        #expect(!Self.isLinearizable([
            Op(.compareAndSet(expected: nil, new: Self.v(1), succeeded: true), invokedAt: 0, completedAt: 10),
            Op(.compareAndSet(expected: nil, new: Self.v(2), succeeded: true), invokedAt: 5, completedAt: 15),
        ]))
    }

    @Test func operationsOfUnknownOutcomeMayOrMayNotHaveHappened() {
        let pending = Op(.write(Self.v(5)), invokedAt: 0, completedAt: nil)
        #expect(Self.isLinearizable([pending, Op(.read(observed: Self.v(5)), invokedAt: 10, completedAt: 20)]))
        #expect(Self.isLinearizable([pending, Op(.read(observed: nil), invokedAt: 10, completedAt: 20)]))
        #expect(Self.isLinearizable([
            pending,
            Op(.read(observed: nil), invokedAt: 10, completedAt: 20),
            Op(.read(observed: Self.v(5)), invokedAt: 30, completedAt: 40),
        ]))
        // Once seen, it cannot be unseen.
        #expect(!Self.isLinearizable([
            pending,
            Op(.read(observed: Self.v(5)), invokedAt: 10, completedAt: 20),
            Op(.read(observed: nil), invokedAt: 30, completedAt: 40),
        ]))
        // It cannot have happened before it was invoked.
        #expect(!Self.isLinearizable([
            Op(.read(observed: Self.v(5)), invokedAt: 0, completedAt: 5),
            Op(.write(Self.v(5)), invokedAt: 10, completedAt: nil),
        ]))
    }

    /// Random clients against a real register: each operation takes effect at a random point
    /// inside its own random interval; outcomes are what the register said at that point.
    static func randomHistory(seed: UInt64, operations count: Int) -> [Op] {
        var generator = SplitMix64(seed: seed)
        var events: [(point: UInt64, index: Int)] = []
        var intervals: [(invoked: UInt64, point: UInt64, completed: UInt64?)] = []
        var kinds: [Int] = []
        for index in 0..<count {
            let invoked = generator.next() % 1_000
            let point = invoked + generator.next() % 50
            let completed: UInt64? = generator.next() % 10 == 0 ? nil : point + generator.next() % 50
            intervals.append((invoked, point, completed))
            kinds.append(Int(generator.next() % 3))
            events.append((point, index))
        }
        events.sort { ($0.point, $0.index) < ($1.point, $1.index) }
        var register: [UInt8]?
        var history = [Op?](repeating: nil, count: count)
        for (_, index) in events {
            let interval = intervals[index]
            let kind: Op.Kind
            switch kinds[index] {
            case 0:
                kind = .read(observed: register)
            case 1:
                let value = generator.next() % 4 == 0 ? nil : Self.v(index)
                register = value
                kind = .write(value)
            default:
                let expected = generator.next() % 2 == 0 ? register : Self.v(Int(generator.next() % UInt64(count)))
                let succeeded = expected == register
                if succeeded { register = Self.v(1_000 + index) }
                kind = .compareAndSet(expected: expected, new: Self.v(1_000 + index), succeeded: succeeded)
            }
            history[index] = Op(kind, invokedAt: interval.invoked, completedAt: interval.completed)
        }
        return history.map { $0! }
    }

    @Test func randomRealHistoriesPassAndForgedReadsFail() {
        for seed: UInt64 in 1...200 {
            let history = Self.randomHistory(seed: seed, operations: 40)
            let verdict = Linearizability.check(history)
            guard case .linearizable(let order) = verdict else {
                Issue.record("seed \(seed): a real register's history was refused: \(verdict)")
                continue
            }
            #expect(Set(order).count == order.count)
            // One completed read changed to a value nobody wrote: refused.
            if let read = history.firstIndex(where: { if case .read = $0.kind, $0.completedAt != nil { return true } else { return false } }) {
                var forged = history
                forged[read].kind = .read(observed: Array("never written".utf8))
                #expect(Linearizability.check(forged) != verdict, "seed \(seed)")
                if case .linearizable = Linearizability.check(forged) { Issue.record("seed \(seed): a forged read passed") }
            }
        }
    }

    @Test func historiesAreCheckedKeyByKey() {
        let good = [Op(.write(Self.v(1)), invokedAt: 0, completedAt: 10), Op(.read(observed: Self.v(1)), invokedAt: 20, completedAt: 30)]
        let bad = [Op(.write(Self.v(1)), invokedAt: 0, completedAt: 10), Op(.read(observed: nil), invokedAt: 20, completedAt: 30)]
        let problems = Linearizability.check(byKey: ["a": good, "b": bad])
        #expect(Array(problems.keys) == ["b"])
        guard case .notLinearizable(let prefix)? = problems["b"] else {
            Issue.record("b should not be linearizable")
            return
        }
        #expect(prefix == [0])  // the write could go first; nothing could follow it
    }
}
