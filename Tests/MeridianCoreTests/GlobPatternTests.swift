// Proves the non-recursive glob matcher agrees with a straightforward recursive reference
// implementation of Redis's `stringmatchlen` on thousands of random patterns and subjects,
// handles the classic catastrophic pattern in linear time, and refuses oversized patterns.
import MeridianCore
import Testing

@Suite struct GlobPatternTests {
    /// Reference: a line-by-line port of Redis's recursive `stringmatchlen` (util.c), for
    /// small inputs only. (Like Redis's, it never matches an empty subject against `*`;
    /// keys are never empty, so the random test below draws non-empty subjects.)
    static func reference(_ p: [UInt8], _ s: [UInt8]) -> Bool {
        func match(_ startPattern: Int, _ startSubject: Int) -> Bool {
            var pi = startPattern, si = startSubject
            while pi < p.count && si < s.count {
                switch p[pi] {
                case UInt8(ascii: "*"):
                    while pi + 1 < p.count && p[pi + 1] == UInt8(ascii: "*") { pi += 1 }
                    if pi + 1 == p.count { return true }
                    var k = si
                    while k < s.count {
                        if match(pi + 1, k) { return true }
                        k += 1
                    }
                    return false
                case UInt8(ascii: "?"):
                    si += 1
                case UInt8(ascii: "["):
                    pi += 1
                    let negate = pi < p.count && p[pi] == UInt8(ascii: "^")
                    if negate { pi += 1 }
                    var matched = false
                    while true {
                        let remaining = p.count - pi
                        if remaining >= 2 && p[pi] == UInt8(ascii: "\\") {
                            pi += 1
                            if p[pi] == s[si] { matched = true }
                        } else if remaining >= 1 && p[pi] == UInt8(ascii: "]") {
                            break
                        } else if remaining <= 0 {
                            pi -= 1
                            break
                        } else if remaining >= 3 && p[pi + 1] == UInt8(ascii: "-") {
                            let low = min(p[pi], p[pi + 2]), high = max(p[pi], p[pi + 2])
                            pi += 2
                            if s[si] >= low && s[si] <= high { matched = true }
                        } else if p[pi] == s[si] {
                            matched = true
                        }
                        pi += 1
                    }
                    if negate { matched = !matched }
                    if !matched { return false }
                    si += 1
                default:
                    if p[pi] == UInt8(ascii: "\\") && p.count - pi >= 2 { pi += 1 }
                    if p[pi] != s[si] { return false }
                    si += 1
                }
                pi += 1
                if si == s.count {
                    while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
                    break
                }
            }
            return pi == p.count && si == s.count
        }
        return match(0, 0)
    }

    @Test(arguments: [
        ("*", "anything", true), ("h?llo", "hello", true), ("h?llo", "hllo", false),
        ("h*llo", "heeeello", true), ("h[ae]llo", "hallo", true), ("h[ae]llo", "hillo", false),
        ("h[^e]llo", "hallo", true), ("h[^e]llo", "hello", false), ("h[a-b]llo", "hbllo", true),
        ("user:*:email", "user:42:email", true), ("user:*:email", "user:42:name", false),
        ("\\*", "*", true), ("\\*", "a", false), ("", "a", false), ("a*", "b", false),
        // Redis's quirk: `a-]` is a range that swallows the bracket, and `b` joins the class.
        ("[a-]b", "a", true), ("[a-]b", "]", true), ("[a-]b", "b", true), ("[a-]b", "ab", false), ("[a-]b", "-b", false),
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
            let subject = (0..<Int.random(in: 1...8, using: &generator)).map { _ in subjectAlphabet.randomElement(using: &generator)! }
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
    }

    @Test func anyKeyCanBeWrittenAsAPattern() throws {
        let key = Array(String(repeating: "k", count: Limits.keyBytesMax).utf8)
        #expect(try GlobPattern(key).matches(key))
        // Stars between every byte: 512 tokens, crossing eight words of state.
        let spread = Array(String(repeating: "k*", count: Limits.keyBytesMax).utf8)
        #expect(try GlobPattern(spread).matches(key))
        #expect(!(try GlobPattern(spread).matches(Array(key.dropLast()))))
    }
}
