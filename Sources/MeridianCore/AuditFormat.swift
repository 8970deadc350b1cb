/// The audit export's lines (docs/AUDIT.md): JSON objects with their keys in a fixed order,
/// each ending with the hash chain `,"prev":"…","hash":"…"}`. Pure: the node that exports and
/// `meridian audit verify` share it; files, sockets and compression are the callers'.
public enum AuditFormat {
    public static let version = 1
    /// `prev` of the first line.
    public static let chainStart = [UInt8](repeating: 0, count: 32)

    /// Builds one line: append fields in order, then `finish` with the previous line's hash.
    public struct LineBuilder {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        var first = true

        public init(type: String) {
            string("type", type)
        }

        mutating func key(_ name: String) {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            AuditFormat.appendJSONString(name, to: &bytes)
            bytes.append(UInt8(ascii: ":"))
        }

        public mutating func string(_ name: String, _ value: String?) {
            key(name)
            if let value { AuditFormat.appendJSONString(value, to: &bytes) } else { bytes.append(contentsOf: "null".utf8) }
        }

        /// A string field whose value is base64 of `value` (nil: `null`).
        public mutating func base64(_ name: String, _ value: [UInt8]?) {
            unescapedString(name, value, AuditFormat.appendBase64)
        }

        /// A string field whose value is lowercase hex of `value` (nil: `null`).
        public mutating func hex(_ name: String, _ value: [UInt8]?) {
            unescapedString(name, value, SHA256.appendHex)
        }

        /// A string field holding Unix milliseconds as RFC 3339 (nil: `null`).
        public mutating func time(_ name: String, unixMs: Int64?) {
            unescapedString(name, unixMs) { AuditFormat.appendRFC3339(unixMs: $0, to: &$1) }
        }

        /// A string field whose characters need no escape, written straight into the line by
        /// `write` (nil: `null`).
        mutating func unescapedString<Value>(_ name: String, _ value: Value?, _ write: (Value, inout [UInt8]) -> Void) {
            key(name)
            guard let value else { return bytes.append(contentsOf: "null".utf8) }
            bytes.append(UInt8(ascii: "\""))
            write(value, &bytes)
            bytes.append(UInt8(ascii: "\""))
        }

        public mutating func number(_ name: String, _ value: Int) {
            key(name)
            bytes += Array(String(value).utf8)
        }

        public mutating func bool(_ name: String, _ value: Bool) {
            key(name)
            bytes += Array((value ? "true" : "false").utf8)
        }

        public mutating func strings(_ name: String, _ values: [String]) {
            key(name)
            bytes.append(UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                AuditFormat.appendJSONString(value, to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        }

        /// A version vector as `{"<dc>.<node>":"<sequence>",...}`.
        public mutating func vector(_ name: String, _ vector: VersionVector) {
            key(name)
            bytes.append(UInt8(ascii: "{"))
            for (index, entry) in vector.entries.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                AuditFormat.appendJSONString("\(entry.origin.datacenter).\(entry.origin.node)", to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                AuditFormat.appendJSONString(String(entry.sequence), to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }

        /// Closes the line with the chain: returns its bytes (with the final newline) and its hash.
        public consuming func finish(prev: [UInt8]) -> (line: [UInt8], hash: [UInt8]) {
            hex("prev", prev)
            let hash = SHA256.digest(bytes)
            hex("hash", hash)
            bytes.append(UInt8(ascii: "}"))
            bytes.append(UInt8(ascii: "\n"))
            return (bytes, hash)
        }
    }

    // MARK: Text

    /// Appends `text` as a JSON string (RFC 8259 escapes).
    public static func appendJSONString(_ text: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        let utf8 = text.utf8
        // Most strings need no escape: copy them whole.
        if !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            bytes.append(contentsOf: utf8)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                bytes.append(contentsOf: "\\u00".utf8)
                bytes.append(SHA256.hexDigit(byte >> 4))
                bytes.append(SHA256.hexDigit(byte & 15))
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public static func hex(_ bytes: [UInt8]) -> String { SHA256.hex(bytes) }

    /// Standard base64 with padding (RFC 4648).
    public static func base64(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        appendBase64(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Appends standard base64 of `bytes` (RFC 4648, with padding).
    public static func appendBase64(_ bytes: [UInt8], to out: inout [UInt8]) {
        out.reserveCapacity(out.count + (bytes.count + 2) / 3 * 4)
        base64Alphabet.withUnsafeBufferPointer { alphabet in
            var index = 0
            while index + 3 <= bytes.count {
                let n = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
                out.append(alphabet[Int((n >> 18) & 63)])
                out.append(alphabet[Int((n >> 12) & 63)])
                out.append(alphabet[Int((n >> 6) & 63)])
                out.append(alphabet[Int(n & 63)])
                index += 3
            }
            let rest = bytes.count - index
            if rest > 0 {
                let n = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
                out.append(alphabet[Int((n >> 18) & 63)])
                out.append(alphabet[Int((n >> 12) & 63)])
                out.append(rest == 2 ? alphabet[Int((n >> 6) & 63)] : UInt8(ascii: "="))
                out.append(UInt8(ascii: "="))
            }
        }
    }

    /// The range RFC 3339 can write (years 0001 to 9999); times outside are clamped to it.
    public static let rfc3339UnixMsRange: ClosedRange<Int64> = -62_135_596_800_000...253_402_300_799_999

    /// Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-29T07:02:23.123Z`.
    public static func rfc3339(unixMs: Int64) -> String {
        var bytes: [UInt8] = []
        appendRFC3339(unixMs: unixMs, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends `rfc3339(unixMs:)`'s text, without building a string.
    public static func appendRFC3339(unixMs unclamped: Int64, to bytes: inout [UInt8]) {
        let unixMs = min(max(unclamped, rfc3339UnixMsRange.lowerBound), rfc3339UnixMsRange.upperBound)
        let ms = ((unixMs % 1000) + 1000) % 1000
        let seconds = (unixMs - ms) / 1000
        let secondOfDay = ((seconds % 86_400) + 86_400) % 86_400
        let days = (seconds - secondOfDay) / 86_400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                bytes.append(UInt8(48 + (value / divisor) % 10))
                divisor /= 10
            }
        }
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2)
        bytes.append(UInt8(ascii: "."))
        digits(ms, 3)
        bytes.append(UInt8(ascii: "Z"))
    }

    /// Parses an RFC 3339 time (`2026-11-29T07:02:23Z`, `2026-11-29T08:02:23.5+01:00`) into Unix
    /// milliseconds (fractions beyond milliseconds are cut); nil when it is not one.
    public static func unixMs(rfc3339 text: String) -> Int64? {
        let bytes = Array(text.utf8)
        var index = 0
        func digits(_ count: Int) -> Int64? {
            guard index + count <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[index..<(index + count)] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            }
            index += count
            return value
        }
        func expect(_ allowed: String) -> Bool {
            guard index < bytes.count, allowed.utf8.contains(bytes[index]) else { return false }
            index += 1
            return true
        }
        guard let year = digits(4), expect("-"), let month = digits(2), expect("-"), let day = digits(2), expect("Tt "),
              let hour = digits(2), expect(":"), let minute = digits(2), expect(":"), let second = digits(2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var ms: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var scale: Int64 = 100
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                ms += Int64(bytes[index] - UInt8(ascii: "0")) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        var offsetMinutes: Int64 = 0
        if expect("Zz") {
        } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign: Int64 = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let offsetHours = digits(2), expect(":"), let offsetMinutesPart = digits(2), offsetHours < 24, offsetMinutesPart < 60 else { return nil }
            offsetMinutes = sign * (offsetHours * 60 + offsetMinutesPart)
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let monthDays: [Int64] = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard day <= monthDays[Int(month) - 1] else { return nil }
        // Days since 1970-01-01 from the civil date (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return ((days * 86_400 + hour * 3600 + minute * 60 + second) - offsetMinutes * 60) * 1000 + ms
    }

    // MARK: Chain

    /// Splits a line (without its newline) into the bytes its hash covers and the hash it
    /// states, or nil when it does not end like a chained line.
    public static func chainParts(of line: ArraySlice<UInt8>) -> (covered: ArraySlice<UInt8>, stated: String)? {
        let marker = Array(",\"hash\":\"".utf8)
        // `,"hash":"` + 64 hex digits + `"}`.
        let tail = marker.count + 64 + 2
        guard line.count >= tail else { return nil }
        let start = line.endIndex - tail
        guard Array(line[start..<(start + marker.count)]) == marker,
              line[line.endIndex - 2] == UInt8(ascii: "\""), line[line.endIndex - 1] == UInt8(ascii: "}") else { return nil }
        let stated = String(decoding: line[(start + marker.count)..<(line.endIndex - 2)], as: UTF8.self)
        return (line[line.startIndex..<start], stated)
    }
}
