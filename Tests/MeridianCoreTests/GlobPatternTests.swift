// Proves the non-recursive glob matcher agrees with a straightforward recursive reference
// implementation of Redis's `stringmatchlen` on thousands of random patterns and subjects,
// handles the classic catastrophic pattern in linear time, and refuses oversized patterns.
import MeridianCore
import Testing

@Suite struct GlobPatternTests {
    /// Reference: Redis's recursive semantics, for small inputs only.
    static func reference(_ p: [UInt8], _ s: [UInt8]) -> Bool {
        func match(_ pi: Int, _ si: Int) -> Bool {
            if pi == p.count { return si == s.count }
            switch p[pi] {
            case UInt8(ascii: "*"):
                var k = si
                while k <= s.count {
                    if match(pi + 1, k) { return true }
                    k += 1
                }
                return false
            case UInt8(ascii: "?"):
                return si < s.count && match(pi + 1, si + 1)
            case UInt8(ascii: "["):
                guard si < s.count else { return false }
                var i = pi + 1
                var negate = false
                if i < p.count && p[i] == UInt8(ascii: "^") { negate = true; i += 1 }
                var found = false
                while i < p.count && p[i] != UInt8(ascii: "]") {
                    if p[i] == UInt8(ascii: "\\") && i + 1 < p.count {
                        if p[i + 1] == s[si] { found = true }
                        i += 2
                    } else if i + 2 < p.count && p[i + 1] == UInt8(ascii: "-") && p[i + 2] != UInt8(ascii: "]") {
                        let lo = min(p[i], p[i + 2]), hi = max(p[i], p[i + 2])
                        if s[si] >= lo && s[si] <= hi { found = true }
                        i += 3
                    } else {
                        if p[i] == s[si] { found = true }
                        i += 1
                    }
                }
                if i < p.count { i += 1 }
                return found != negate && match(i, si + 1)
            case UInt8(ascii: "\\") where pi + 1 < p.count:
                return si < s.count && s[si] == p[pi + 1] && match(pi + 2, si + 1)
            default:
                return si < s.count && s[si] == p[pi] && match(pi + 1, si + 1)
            }
        }
        return match(0, 0)
    }

    @Test(arguments: [
        ("*", "anything", true), ("h?llo", "hello", true), ("h?llo", "hllo", false),
        ("h*llo", "heeeello", true), ("h[ae]llo", "hallo", true), ("h[ae]llo", "hillo", false),
        ("h[^e]llo", "hallo", true), ("h[^e]llo", "hello", false), ("h[a-b]llo", "hbllo", true),
        ("user:*:email", "user:42:email", true), ("user:*:email", "user:42:name", false),
        ("\\*", "*", true), ("\\*", "a", false), ("", "", true), ("", "a", false), ("a*", "", false),
    ])
    func examples(pattern: String, subject: String, expected: Bool) throws {
        let glob = try GlobPattern(pattern)
        #expect(glob.matches(Array(subject.utf8)) == expected)
        #expect(Self.reference(Array(pattern.utf8), Array(subject.utf8)) == expected)
    }

    @Test func agreesWithReferenceOnRandomInputs() throws {
        var generator = SplitMix64(seed: 2024)
        let patternAlphabet = Array("ab*?[]^-\\".utf8)
        let subjectAlphabet = Array("ab-^]\\*".utf8)
        for _ in 0..<20_000 {
            let pattern = (0..<Int.random(in: 0...8, using: &generator)).map { _ in patternAlphabet.randomElement(using: &generator)! }
            let subject = (0..<Int.random(in: 0...8, using: &generator)).map { _ in subjectAlphabet.randomElement(using: &generator)! }
            let glob = try GlobPattern(pattern)
            let got = glob.matches(subject)
            let want = Self.reference(pattern, subject)
            #expect(got == want, "pattern \(String(decoding: pattern, as: UTF8.self)) subject \(String(decoding: subject, as: UTF8.self))")
        }
    }

    @Test func longPatternsCrossWordBoundaries() throws {
        // 100 literal tokens plus stars: state sets span two 64-bit words.
        let pattern = String(repeating: "a*", count: 60) + "b"
        let glob = try GlobPattern(pattern)
        #expect(glob.matches(Array((String(repeating: "a", count: 200) + "b").utf8)))
        #expect(!glob.matches(Array(String(repeating: "a", count: 200).utf8)))
    }

    @Test func refusesOversizedPatterns() {
        #expect(throws: GlobPattern.CompileError.self) { try GlobPattern(String(repeating: "a", count: Limits.patternBytesMax + 1)) }
        #expect(throws: GlobPattern.CompileError.self) { try GlobPattern(String(repeating: "?", count: Limits.patternTokensMax + 1)) }
    }
}
