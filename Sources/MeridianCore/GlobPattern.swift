/// A compiled Redis-style glob (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), matched in time linear in
/// the subject without recursion or backtracking, so that `KEYS` and `SCAN MATCH` cannot be
/// turned into a denial of service (Redis's own matcher recurses and backtracks).
///
/// The pattern is compiled into a bit-parallel NFA (the Shift-And algorithm): state `i` means
/// "the first `i` tokens matched". Each subject byte costs a few word operations per 64 tokens.
public struct GlobPattern: Sendable, Equatable {
    /// Why a pattern was refused.
    public enum CompileError: Error, Equatable, Sendable {
        case tooLong(bytes: Int)
        case tooManyTokens(tokens: Int)
    }

    /// The pattern as written.
    public let source: [UInt8]
    /// Words per state set: `(tokenCount + 1 + 63) / 64`.
    private let wordCount: Int
    /// Number of tokens; the match state is bit `tokenCount`.
    private let tokenCount: Int
    /// For each byte value, the states reachable by consuming that byte from the previous
    /// state: bit `i + 1` is set when token `i` is a literal, `?` or class that accepts it.
    private let advanceMasks: [UInt64]  // 256 * wordCount
    /// Bit `i + 1` is set when token `i` is `*`: that state loops on any byte.
    private let loopMask: [UInt64]
    /// Bit `i` is set when token `i` is `*`: reaching state `i` also reaches `i + 1`.
    private let starEntryMask: [UInt64]
    /// Fast path: a pattern that is only `*` runs matches everything.
    private let matchesEverything: Bool

    public init(_ pattern: [UInt8]) throws(CompileError) {
        guard pattern.count <= Limits.patternBytesMax else { throw .tooLong(bytes: pattern.count) }
        // Tokenise: each token is either a star or a set of accepted bytes.
        var tokens: [Token] = []
        var index = 0
        while index < pattern.count {
            let byte = pattern[index]
            switch byte {
            case UInt8(ascii: "*"):
                if case .star = tokens.last {} else { tokens.append(.star) }
                index += 1
            case UInt8(ascii: "?"):
                tokens.append(.set(ByteSet.all))
                index += 1
            case UInt8(ascii: "["):
                let (set, next) = Self.parseClass(pattern, from: index + 1)
                tokens.append(.set(set))
                index = next
            case UInt8(ascii: "\\") where index + 1 < pattern.count:
                tokens.append(.set(ByteSet(single: pattern[index + 1])))
                index += 2
            default:
                tokens.append(.set(ByteSet(single: byte)))
                index += 1
            }
        }
        guard tokens.count <= Limits.patternTokensMax else { throw .tooManyTokens(tokens: tokens.count) }

        self.source = pattern
        self.tokenCount = tokens.count
        let words = (tokens.count + 1 + 63) / 64
        self.wordCount = words
        var advance = [UInt64](repeating: 0, count: 256 * words)
        var loop = [UInt64](repeating: 0, count: words)
        var starEntry = [UInt64](repeating: 0, count: words)
        for (position, token) in tokens.enumerated() {
            let next = position + 1
            switch token {
            case .star:
                loop[next >> 6] |= 1 << UInt64(next & 63)
                starEntry[position >> 6] |= 1 << UInt64(position & 63)
            case .set(let set):
                for byte in 0..<256 where set.contains(UInt8(byte)) {
                    advance[byte * words + (next >> 6)] |= 1 << UInt64(next & 63)
                }
            }
        }
        self.advanceMasks = advance
        self.loopMask = loop
        self.starEntryMask = starEntry
        self.matchesEverything = tokens.allSatisfy { if case .star = $0 { return true } else { return false } } && !tokens.isEmpty
    }

    /// Compiles a pattern given as text.
    public init(_ pattern: String) throws(CompileError) {
        try self.init(Array(pattern.utf8))
    }

    /// Whether `subject` matches the whole pattern.
    public func matches(_ subject: UnsafeRawBufferPointer) -> Bool {
        if matchesEverything { return true }
        let words = wordCount
        // State sets live on the stack for the common case of patterns under 64 tokens.
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: words * 2) { scratch in
            let state = UnsafeMutableBufferPointer(rebasing: scratch[0..<words])
            let next = UnsafeMutableBufferPointer(rebasing: scratch[words..<(2 * words)])
            for w in 0..<words { state[w] = 0 }
            state[0] = 1
            // A byte moves the highest state up by at most two positions (one for the byte,
            // one for a star after it), so only words up to one past the highest non-zero
            // word can change: a long pattern costs little until the subject progresses in it.
            var highWord = 0
            closeOverStars(state, upTo: Swift.min(words - 1, 1))
            for byte in subject {
                let limit = Swift.min(words - 1, highWord + 1)
                var carry: UInt64 = 0
                var any: UInt64 = 0
                let base = Int(byte) * words
                for w in 0...limit {
                    let shifted = (state[w] << 1) | carry
                    carry = state[w] >> 63
                    let value = (shifted & advanceMasks[base + w]) | (state[w] & loopMask[w])
                    next[w] = value
                    any |= value
                }
                if any == 0 { return false }
                for w in 0...limit { state[w] = next[w] }
                closeOverStars(state, upTo: limit)
                highWord = limit
                while highWord > 0 && state[highWord] == 0 { highWord -= 1 }
            }
            let final = tokenCount
            return state[final >> 6] & (1 << UInt64(final & 63)) != 0
        }
    }

    /// Whether the bytes of `subject` match the whole pattern.
    public func matches(_ subject: [UInt8]) -> Bool {
        subject.withUnsafeBytes { matches($0) }
    }

    /// A state before a star also stands after it (the star may match nothing). Runs of stars
    /// are collapsed at compile time, so one pass reaches the closure.
    private func closeOverStars(_ state: UnsafeMutableBufferPointer<UInt64>, upTo highWord: Int) {
        var carry: UInt64 = 0
        for w in 0...highWord {
            let entering = state[w] & starEntryMask[w]
            let shifted = (entering << 1) | carry
            carry = entering >> 63
            state[w] |= shifted
        }
    }

    private enum Token {
        case star
        case set(ByteSet)
    }

    /// Parses a `[...]` class starting after the `[`; returns the set and the index after it.
    /// The rules are Redis's `stringmatchlen`, quirks included, so KEYS answers as Redis does:
    /// `\\x` is a literal; `x-y` is a range whenever two more bytes follow `x`, even when `y`
    /// is `]` (so `[a-]b` is one class holding `]`...`a` and `b`); an unterminated class runs
    /// to the end of the pattern.
    private static func parseClass(_ pattern: [UInt8], from start: Int) -> (ByteSet, Int) {
        var index = start
        var negate = false
        if index < pattern.count && pattern[index] == UInt8(ascii: "^") {
            negate = true
            index += 1
        }
        var set = ByteSet()
        while true {
            let remaining = pattern.count - index
            if remaining >= 2 && pattern[index] == UInt8(ascii: "\\") {
                set.insert(pattern[index + 1])
                index += 2
            } else if remaining >= 1 && pattern[index] == UInt8(ascii: "]") {
                index += 1
                break
            } else if remaining <= 0 {
                index = pattern.count
                break
            } else if remaining >= 3 && pattern[index + 1] == UInt8(ascii: "-") {
                var low = pattern[index]
                var high = pattern[index + 2]
                if low > high { swap(&low, &high) }
                for byte in low...high { set.insert(byte) }
                index += 3
            } else {
                set.insert(pattern[index])
                index += 1
            }
        }
        return (negate ? set.complement : set, index)
    }
}

/// A set of byte values as a 256-bit bitmap.
struct ByteSet: Equatable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static var all: ByteSet { ByteSet(words: (~0, ~0, ~0, ~0)) }

    init() {}
    init(words: (UInt64, UInt64, UInt64, UInt64)) { self.words = words }
    init(single byte: UInt8) { insert(byte) }

    mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    func contains(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        default: return words.3 & bit != 0
        }
    }

    var complement: ByteSet { ByteSet(words: (~words.0, ~words.1, ~words.2, ~words.3)) }

    static func == (lhs: ByteSet, rhs: ByteSet) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2 && lhs.words.3 == rhs.words.3
    }
}
