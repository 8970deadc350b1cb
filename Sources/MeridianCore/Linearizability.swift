/// A linearizability checker for histories of one register (one key), for the strong
/// namespaces' tests (docs/CONSISTENCY.md, "Invariants"): Wing & Gong's search, with Lowe's
/// memoization of (operations done, register state) as Porcupine does it. Histories of many
/// keys are checked key by key (linearizability is local: Herlihy & Wing, theorem 1).
///
/// A history is what clients saw: each operation's invocation and completion times (any
/// monotonic clock shared by the clients) and its outcome. An operation whose outcome is
/// unknown (the client timed out or crashed) has no completion: it may have taken effect at
/// any point after its invocation, or never.
public enum Linearizability {
    public struct Operation: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            /// A read that returned `observed` (nil: the key did not exist).
            case read(observed: [UInt8]?)
            /// A write of `value` (nil: a delete).
            case write([UInt8]?)
            /// Compare-and-set: when the register holds `expected`, it becomes `new`;
            /// `succeeded` is what the client was told (ignored when the outcome is unknown).
            case compareAndSet(expected: [UInt8]?, new: [UInt8]?, succeeded: Bool)
            /// `INCRBY`: the register holds a decimal integer (missing = 0) and becomes itself
            /// plus `amount`; `result` is the new value the client was told (nil: not known).
            /// On a value that is not an integer it fails and changes nothing.
            case increment(amount: Int64, result: Int64?)
        }

        public var kind: Kind
        public var invokedAt: UInt64
        /// nil: the outcome is unknown.
        public var completedAt: UInt64?

        public init(_ kind: Kind, invokedAt: UInt64, completedAt: UInt64?) {
            self.kind = kind
            self.invokedAt = invokedAt
            self.completedAt = completedAt
        }
    }

    public enum Verdict: Equatable, Sendable {
        /// The history is linearizable; `order` is one linearization (indexes into the history;
        /// operations of unknown outcome that never took effect are left out).
        case linearizable(order: [Int])
        /// No linearization exists. `longestPrefix` is the longest sequence the search could
        /// build (what went wrong comes right after it).
        case notLinearizable(longestPrefix: [Int])
        /// The search gave up after `stepLimit` steps (a history with too much concurrency).
        case undecided
    }

    /// Checks one register's history, starting from `initial` (nil: the key does not exist).
    /// The search recurses once per operation: keep histories to a few thousand operations
    /// per key (split longer runs by key).
    public static func check(_ history: [Operation], initial: [UInt8]? = nil, stepLimit: Int = 5_000_000) -> Verdict {
        // Reads of unknown outcome say nothing about the register: leave them out.
        let indexes = history.indices.filter { index in
            if history[index].completedAt == nil, case .read = history[index].kind { return false }
            return true
        }
        let operations = indexes.map { history[$0] }
        let count = operations.count
        let mustComplete = operations.map { $0.completedAt != nil }
        var done = [Bool](repeating: false, count: count)
        var doneBits = Bitset(count: count)
        var order: [Int] = []
        var longest: [Int] = []
        var visited = Set<Memo>()
        var steps = 0
        var remainingRequired = mustComplete.filter { $0 }.count

        // The operations that may come next: invoked before every remaining operation completed.
        func candidates() -> [Int] {
            var earliestCompletion = UInt64.max
            for index in 0..<count where !done[index] {
                if let completed = operations[index].completedAt { earliestCompletion = min(earliestCompletion, completed) }
            }
            return (0..<count).filter { !done[$0] && operations[$0].invokedAt <= earliestCompletion }
        }

        /// The state after `operation` at `state`, or nil when its outcome contradicts it.
        func apply(_ operation: Operation, to state: [UInt8]?) -> [UInt8]?? {
            switch operation.kind {
            case .read(let observed):
                return observed == state ? .some(state) : nil
            case .write(let value):
                return .some(value)
            case .compareAndSet(let expected, let new, let succeeded):
                let matches = state == expected
                if operation.completedAt == nil { return .some(matches ? new : state) }
                guard matches == succeeded else { return nil }
                return .some(matches ? new : state)
            case .increment(let amount, let result):
                let current: Int64
                if let state {
                    guard let parsed = PNCounter.parseDecimal(state) else { return result == nil ? .some(state) : nil }
                    current = parsed
                } else {
                    current = 0
                }
                let (sum, overflow) = current.addingReportingOverflow(amount)
                if overflow { return result == nil ? .some(state) : nil }
                if let result, operation.completedAt != nil, result != sum { return nil }
                return .some(Array(String(sum).utf8))
            }
        }

        func search(_ state: [UInt8]?) -> Bool? {
            if remainingRequired == 0 { return true }
            steps += 1
            if steps > stepLimit { return nil }
            guard visited.insert(Memo(done: doneBits, state: state)).inserted else { return false }
            for candidate in candidates() {
                guard let next = apply(operations[candidate], to: state) else { continue }
                done[candidate] = true
                doneBits.set(candidate)
                order.append(candidate)
                if mustComplete[candidate] { remainingRequired -= 1 }
                if order.count > longest.count { longest = order }
                let found = search(next)
                if found != false { return found }
                if mustComplete[candidate] { remainingRequired += 1 }
                order.removeLast()
                doneBits.clear(candidate)
                done[candidate] = false
            }
            return false
        }

        switch search(initial) {
        case true?: return .linearizable(order: order.map { indexes[$0] })
        case false?: return .notLinearizable(longestPrefix: longest.map { indexes[$0] })
        case nil: return .undecided
        }
    }

    /// Checks every key's history on its own (linearizability is local); returns the keys
    /// whose histories are not linearizable, or could not be decided.
    public static func check<Key: Hashable>(byKey histories: [Key: [Operation]], stepLimit: Int = 5_000_000) -> [Key: Verdict] {
        var problems: [Key: Verdict] = [:]
        for (key, history) in histories {
            let verdict = check(history, stepLimit: stepLimit)
            if case .linearizable = verdict { continue }
            problems[key] = verdict
        }
        return problems
    }

    struct Memo: Hashable {
        var done: Bitset
        var state: [UInt8]?
    }

    struct Bitset: Hashable {
        var words: [UInt64]

        init(count: Int) { words = [UInt64](repeating: 0, count: (count + 63) / 64) }
        mutating func set(_ index: Int) { words[index / 64] |= 1 << UInt64(index % 64) }
        mutating func clear(_ index: Int) { words[index / 64] &= ~(1 << UInt64(index % 64)) }
    }
}
