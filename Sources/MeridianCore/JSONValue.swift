/// A parsed JSON value (RFC 8259), for reading audit exports back. Small and strict: one value
/// per input, no trailing bytes, nesting bounded.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// Numbers keep their text: the audit format's integers are compared, not computed with.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Keys in the order they appeared.
    case object([(key: String, value: JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// The value of `key` in an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    public var intValue: Int? {
        if case .number(let text) = self { return Int(text) }
        return nil
    }

    /// The value written the way the audit writer writes it: no whitespace, keys in their
    /// order, strings escaped as `AuditFormat.appendJSONString` does, numbers as they were.
    public func canonicalBytes(into bytes: inout [UInt8]) {
        switch self {
        case .null: bytes += Array("null".utf8)
        case .bool(let value): bytes += Array((value ? "true" : "false").utf8)
        case .number(let text): bytes += Array(text.utf8)
        case .string(let text): AuditFormat.appendJSONString(text, to: &bytes)
        case .array(let items):
            bytes.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                item.canonicalBytes(into: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let members):
            bytes.append(UInt8(ascii: "{"))
            for (index, member) in members.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                AuditFormat.appendJSONString(member.key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                member.value.canonicalBytes(into: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// An object's members as a dictionary (for comparing version vectors in any key order).
    public var members: [String: JSONValue] {
        guard case .object(let members) = self else { return [:] }
        return Dictionary(members.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    /// The keys of an object, in order.
    public var keys: [String] {
        if case .object(let members) = self { return members.map(\.key) }
        return []
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    static let depthMax = 64

    public init(parsing bytes: ArraySlice<UInt8>) throws(ParseError) {
        var parser = Parser(bytes: bytes, offset: bytes.startIndex)
        self = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.offset == bytes.endIndex else { throw parser.error("bytes after the value") }
    }

    struct Parser {
        let bytes: ArraySlice<UInt8>
        var offset: Int

        func error(_ reason: String) -> ParseError { ParseError(offset: offset - bytes.startIndex, reason: reason) }

        mutating func skipWhitespace() {
            while offset < bytes.endIndex, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
        }

        mutating func expect(_ literal: String) throws(ParseError) {
            for byte in literal.utf8 {
                guard offset < bytes.endIndex, bytes[offset] == byte else { throw error("expected \(literal)") }
                offset += 1
            }
        }

        mutating func value(depth: Int) throws(ParseError) -> JSONValue {
            guard depth < JSONValue.depthMax else { throw error("nested too deep") }
            skipWhitespace()
            guard offset < bytes.endIndex else { throw error("unexpected end") }
            switch bytes[offset] {
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                offset += 1
                var items: [JSONValue] = []
                skipWhitespace()
                if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipWhitespace()
                    guard offset < bytes.endIndex else { throw error("unterminated array") }
                    if bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array(items) }
                    try expect(",")
                }
            case UInt8(ascii: "{"):
                offset += 1
                var members: [(key: String, value: JSONValue)] = []
                skipWhitespace()
                if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object(members) }
                while true {
                    skipWhitespace()
                    guard offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "\"") else { throw error("expected a key") }
                    let key = try string()
                    skipWhitespace()
                    try expect(":")
                    members.append((key, try value(depth: depth + 1)))
                    skipWhitespace()
                    guard offset < bytes.endIndex else { throw error("unterminated object") }
                    if bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object(members) }
                    try expect(",")
                }
            default:
                return .number(try number())
            }
        }

        /// RFC 8259's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
        mutating func number() throws(ParseError) -> String {
            let start = offset
            func isDigit(_ index: Int) -> Bool {
                index < bytes.endIndex && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index])
            }
            func digits() throws(ParseError) {
                guard isDigit(offset) else { throw error("malformed number") }
                while isDigit(offset) { offset += 1 }
            }
            if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "-") { offset += 1 }
            guard isDigit(offset) else { throw error(offset == start ? "unexpected byte" : "malformed number") }
            if bytes[offset] == UInt8(ascii: "0") {
                offset += 1
                if isDigit(offset) { throw error("a number with a leading zero") }
            } else {
                try digits()
            }
            if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: ".") {
                offset += 1
                try digits()
            }
            if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E") {
                offset += 1
                if offset < bytes.endIndex, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") { offset += 1 }
                try digits()
            }
            return String(decoding: bytes[start..<offset], as: UTF8.self)
        }

        /// Four hex digits of a `\u` escape, exactly.
        mutating func hexQuad() throws(ParseError) -> UInt32 {
            guard bytes.endIndex - offset >= 4 else { throw error("malformed \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[offset]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw error("malformed \\u escape")
                }
                value = value << 4 | UInt32(digit)
                offset += 1
            }
            return value
        }

        mutating func string() throws(ParseError) -> String {
            offset += 1
            var out: [UInt8] = []
            while true {
                guard offset < bytes.endIndex else { throw error("unterminated string") }
                let byte = bytes[offset]
                offset += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let text = String(validating: out, as: UTF8.self) else { throw error("a string that is not UTF-8") }
                    return text
                case UInt8(ascii: "\\"):
                    guard offset < bytes.endIndex else { throw error("unterminated escape") }
                    let escape = bytes[offset]
                    offset += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "u"):
                        var code = try hexQuad()
                        if (0xD800...0xDBFF).contains(code) {
                            // A surrogate pair: the low half must follow as another escape.
                            guard bytes.endIndex - offset >= 2, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") else {
                                throw error("a lone surrogate")
                            }
                            offset += 2
                            let low = try hexQuad()
                            guard (0xDC00...0xDFFF).contains(low) else { throw error("a lone surrogate") }
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw error("a \\u escape that is not a scalar") }
                        out += Array(String(Character(scalar)).utf8)
                    default: throw error("unknown escape")
                    }
                case 0..<0x20: throw error("a control character in a string")
                default: out.append(byte)
                }
            }
        }
    }
}
