// Proves the audit export's format and its verifier (docs/AUDIT.md): the text helpers (base64,
// RFC 3339, JSON strings) against known values, a written export verifies with the right
// counts, and every kind of tampering — a changed byte in any line, a dropped line, two lines
// swapped, a truncated file, a wrong count — is refused with the line it happened on.
import MeridianCore
import Testing

@Suite struct AuditFormatTests {
    @Test func base64FollowsRFC4648() {
        let cases = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in cases { #expect(AuditFormat.base64(Array(plain.utf8)) == encoded) }
        #expect(AuditFormat.base64([0xFF, 0xFE, 0x00]) == "//4A")
    }

    @Test func timesAreRFC3339UTC() {
        #expect(AuditFormat.rfc3339(unixMs: 0) == "1970-01-01T00:00:00.000Z")
        #expect(AuditFormat.rfc3339(unixMs: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(AuditFormat.rfc3339(unixMs: 1_795_849_343_123) == "2026-11-28T07:02:23.123Z")
        #expect(AuditFormat.rfc3339(unixMs: -1) == "1969-12-31T23:59:59.999Z")
    }

    @Test func rfc3339TimesParseBack() {
        #expect(AuditFormat.unixMs(rfc3339: "1970-01-01T00:00:00Z") == 0)
        #expect(AuditFormat.unixMs(rfc3339: "2026-11-28T07:02:23.123Z") == 1_795_849_343_123)
        #expect(AuditFormat.unixMs(rfc3339: "2026-11-28T08:02:23.1239+01:00") == 1_795_849_343_123)
        #expect(AuditFormat.unixMs(rfc3339: "2026-11-28 02:02:23-05:00") == 1_795_849_343_000)
        #expect(AuditFormat.unixMs(rfc3339: "2000-02-29T00:00:00.000Z") == 951_782_400_000)
        #expect(AuditFormat.unixMs(rfc3339: "2024-02-29T00:00:00Z") != nil)
        for bad in ["", "2026-11-28", "2026-11-28T07:02:23", "2026-13-01T00:00:00Z", "2026-11-28T24:00:00Z", "2026-11-28T07:02:23.Z",
                    "2026-11-28T07:02:23Zjunk", "2026-11-28T07:02:23+0100", "yesterday", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z"] {
            #expect(AuditFormat.unixMs(rfc3339: bad) == nil, "\(bad)")
        }
        // Whatever the formatter writes parses back to the same millisecond.
        var generator = SplitMix64(seed: 7)
        for _ in 0..<2_000 {
            let ms = Int64(generator.next() % 253_402_300_799_999)
            #expect(AuditFormat.unixMs(rfc3339: AuditFormat.rfc3339(unixMs: ms)) == ms)
        }
    }

    @Test func exportCursorsRoundTripAndDamageIsRefused() throws {
        var cursor = AuditExportCursor(node: ReplicaID(datacenter: 2, node: 1), since: 5, until: 1 << 60, digestOnly: true, namespaces: ["orders", "ünï"], linesPerSecond: 5_000)
        #expect(cursor.isAtStart)
        cursor.after = 77
        cursor.deltas = 4_000
        cursor.conflicts = 3
        cursor.previousHash = SHA256.digest(Array("line".utf8))
        #expect(!cursor.isAtStart)
        let text = cursor.encoded()
        #expect(try AuditExportCursor(decoding: text) == cursor)
        #expect(try AuditExportCursor(decoding: AuditExportCursor(node: ReplicaID(datacenter: 0, node: 0), since: 0, until: 0, digestOnly: false, namespaces: []).encoded()).namespaces == [])
        // Truncated, extended, not hex, another format version, a range out of order.
        for bad in [String(text.dropLast(2)), text + "00", text.uppercased(), "02" + text.dropFirst(2), "zz", ""] {
            #expect(throws: AuditExportCursor.DecodingError.self) { try AuditExportCursor(decoding: bad) }
        }
        var backwards = cursor
        backwards.after = 1
        #expect(throws: AuditExportCursor.DecodingError.self) { try AuditExportCursor(decoding: backwards.encoded()) }
    }

    @Test func jsonStringsRoundTrip() throws {
        for text in ["plain", "quote \" and \\ backslash", "line\nbreak\ttab\r", "\u{01}\u{1F}", "ünïcödé ✓"] {
            var bytes: [UInt8] = []
            AuditFormat.appendJSONString(text, to: &bytes)
            #expect(try JSONValue(parsing: bytes[...]) == .string(text))
        }
        #expect(throws: JSONValue.ParseError.self) { try JSONValue(parsing: Array("{\"a\":1} x".utf8)[...]) }
        for bad in ["01", "-01", "+1", "1.", ".5", "1.e5", "1-2", "--1", "1e", "\"\\u+041\"", "\"\\ud83d\"", "\"\\u12\""] {
            #expect(throws: JSONValue.ParseError.self, "\(bad)") { try JSONValue(parsing: Array(bad.utf8)[...]) }
        }
        for (good, value) in [("0", JSONValue.number("0")), ("-0.5e+3", .number("-0.5e+3")), ("\"\\ud83d\\ude00\"", .string("😀")), ("\"\\u0041\"", .string("A"))] {
            #expect(try JSONValue(parsing: Array(good.utf8)[...]) == value, "\(good)")
        }
        #expect(throws: JSONValue.ParseError.self) { try JSONValue(parsing: Array("{\"a\":".utf8)[...]) }
    }

    /// A small export: header, deltas of every operation, a conflict, trailer.
    static func export(deltas count: Int = 5) -> [[UInt8]] {
        let east = ReplicaID(datacenter: 0, node: 0)
        let west = ReplicaID(datacenter: 1, node: 0)
        var lines: [[UInt8]] = []
        var prev = AuditFormat.chainStart
        func add(_ builder: consuming AuditFormat.LineBuilder) {
            let (line, hash) = builder.finish(prev: prev)
            lines.append(line)
            prev = hash
        }
        add(AuditFormat.header(cluster: "demo", node: "east-1", since: VersionVector(), until: VersionVector([(east, UInt64(count))]), namespaces: ["default"], digestOnly: false))
        let operations = ["set", "delete", "expire", "counter", "set"]
        for index in 0..<count {
            let stamp = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_795_849_343_000 + UInt64(index), logical: 0), origin: east)
            let operation = operations[index % operations.count]
            add(AuditFormat.delta(
                namespace: "default", key: Array("key:\(index)".utf8), operation: operation,
                value: operation == "delete" ? nil : Array("value \(index) \"quoted\"".utf8), digestOnly: false,
                counter: operation == "counter" ? 42 : nil, stamp: stamp, originDatacenter: "east", originNode: "east-1",
                dot: Dot(origin: east, sequence: UInt64(index + 1)), expiryUnixMs: operation == "expire" ? 1_795_849_999_000 : nil))
        }
        let winner = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_795_849_343_500, logical: 1), origin: west)
        let loser = LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_795_849_343_400, logical: 0), origin: east)
        add(AuditFormat.conflict(namespace: "default", key: Array("key:0".utf8), winner: winner, loser: loser, loserValueDigest: SHA256.digest([1]), detectedUnixMs: 1_795_849_343_600))
        let head = prev
        add(AuditFormat.trailer(deltas: count, conflicts: 1, until: VersionVector([(east, UInt64(count))]), chainHead: head))
        return lines
    }

    static func verify(_ lines: [[UInt8]]) -> Result<AuditVerifier.Summary, AuditVerifier.Problem> {
        var verifier = AuditVerifier()
        do {
            for line in lines {
                #expect(line.last == 0x0A)
                try verifier.consume(line.dropLast())
            }
            return .success(try verifier.finish())
        } catch let problem as AuditVerifier.Problem {
            return .failure(problem)
        } catch {
            Issue.record("unexpected error \(error)")
            return .failure(AuditVerifier.Problem(line: 0, message: "\(error)"))
        }
    }

    @Test func aWrittenExportVerifies() throws {
        let lines = Self.export()
        let summary = try Self.verify(lines).get()
        #expect(summary.lines == 8 && summary.deltas == 5 && summary.conflicts == 1)
        // Every line is JSON with its keys in the documented order.
        for line in lines {
            let json = try JSONValue(parsing: line.dropLast())
            #expect(json.keys == AuditFormat.keys[json["type"]!.stringValue!])
        }
        let delta = try JSONValue(parsing: lines[1].dropLast())
        #expect(delta["key"] == .string(AuditFormat.base64(Array("key:0".utf8))))
        #expect(delta["time"] == .string("2026-11-28T07:02:23.000Z"))
        #expect(delta["dot"] == .string("0.0#1"))
    }

    @Test func aChangedByteAnywhereIsFoundOnItsLine() {
        let lines = Self.export()
        for (index, line) in lines.enumerated() {
            // Every position but the newline, a few bits each.
            for position in stride(from: 0, to: line.count - 1, by: 7) {
                var damaged = lines
                damaged[index][position] ^= 0x04
                guard case .failure(let problem) = Self.verify(damaged) else {
                    Issue.record("line \(index + 1), byte \(position): the change went unnoticed")
                    return
                }
                #expect(problem.line == index + 1, "line \(index + 1), byte \(position): \(problem)")
            }
        }
    }

    @Test func droppedSwappedAndTruncatedAreFound() {
        let lines = Self.export()
        for index in 1..<lines.count {
            var dropped = lines
            dropped.remove(at: index)
            guard case .failure(let problem) = Self.verify(dropped) else {
                Issue.record("dropping line \(index + 1) went unnoticed")
                continue
            }
            #expect(problem.line == min(index + 1, dropped.count), "\(problem)")
        }
        for index in 1..<(lines.count - 1) {
            var swapped = lines
            swapped.swapAt(index, index + 1)
            guard case .failure(let problem) = Self.verify(swapped) else {
                Issue.record("swapping lines \(index + 1) and \(index + 2) went unnoticed")
                continue
            }
            #expect(problem.line == index + 1, "\(problem)")
        }
        guard case .failure(let truncated) = Self.verify(Array(lines.dropLast())) else {
            Issue.record("a missing trailer went unnoticed")
            return
        }
        #expect(truncated.message.contains("no trailer"))
    }

    @Test func onlyTheCanonicalFormIsAccepted() {
        let lines = Self.export()
        // Whitespace, a CRLF ending, an empty line, a field of the wrong type: each refused on its line.
        var spaced = lines
        spaced[2] = Array(String(decoding: lines[2], as: UTF8.self).replacingFirst("\",\"op\":", with: "\", \"op\":").utf8)
        var crlf = lines
        crlf[2].insert(0x0D, at: crlf[2].count - 1)
        var empty = lines
        empty.insert([0x0A], at: 3)
        var typed = lines
        typed[2] = Array(String(decoding: lines[2], as: UTF8.self).replacingFirst("\"op\":\"delete\"", with: "\"op\":null").utf8)
        for (name, damaged, line) in [("whitespace", spaced, 3), ("CRLF", crlf, 3), ("empty line", empty, 4), ("wrong type", typed, 3)] {
            guard case .failure(let problem) = Self.verify(damaged) else {
                Issue.record("\(name) went unnoticed")
                continue
            }
            #expect(problem.line == line, "\(name): \(problem)")
        }
    }

    @Test func countsMustMatch() {
        var lines = Self.export()
        // A trailer that claims one delta more, correctly chained: the counts catch it.
        let head = Array(lines[lines.count - 2].dropLast())
        let headHash = AuditFormat.chainParts(of: head[...])!.stated
        var prev: [UInt8] = []
        var index = headHash.startIndex
        while index < headHash.endIndex {
            let next = headHash.index(index, offsetBy: 2)
            prev.append(UInt8(headHash[index..<next], radix: 16)!)
            index = next
        }
        lines[lines.count - 1] = AuditFormat.trailer(deltas: 6, conflicts: 1, until: VersionVector(), chainHead: prev).finish(prev: prev).line
        guard case .failure(let problem) = Self.verify(lines) else {
            Issue.record("a wrong count went unnoticed")
            return
        }
        #expect(problem.line == lines.count && problem.message.contains("6 deltas"))
    }
}

extension String {
    /// The string with the first occurrence of `target` replaced (the test must find it).
    func replacingFirst(_ target: String, with replacement: String) -> String {
        let characters = Array(self)
        let pattern = Array(target)
        for start in 0...(characters.count - pattern.count) where Array(characters[start..<(start + pattern.count)]) == pattern {
            return String(characters[..<start]) + replacement + String(characters[(start + pattern.count)...])
        }
        Issue.record("\(target) not found")
        return self
    }
}
