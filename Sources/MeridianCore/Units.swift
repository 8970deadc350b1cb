/// Parsing of the human-readable sizes and durations used by the configuration file and by
/// `CONFIG SET`. Sizes follow Redis: `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` powers of 1024.
public enum Units {
    /// Parses a byte size such as `256mb`, `1gb`, `100kb`, `5000` (case-insensitive).
    public static func parseBytes(_ text: String) -> Int? {
        let lower = text.lowercased().trimmingSpaces()
        let suffixes: [(String, Int)] = [
            ("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1),
            ("g", 1_000_000_000), ("m", 1_000_000), ("k", 1_000),
        ]
        for (suffix, multiplier) in suffixes where lower.hasSuffix(suffix) {
            guard let number = Int(lower.dropLast(suffix.count)), number >= 0 else { return nil }
            let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        guard let number = Int(lower), number >= 0 else { return nil }
        return number
    }

    /// Parses a duration such as `30m`, `100ms`, `7d`, `1h`, `45s` into milliseconds.
    /// A bare number is seconds.
    public static func parseDurationMs(_ text: String) -> Int64? {
        let lower = text.lowercased().trimmingSpaces()
        let suffixes: [(String, Int64)] = [
            ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
        ]
        for (suffix, multiplier) in suffixes where lower.hasSuffix(suffix) {
            guard let number = Int64(lower.dropLast(suffix.count)), number >= 0 else { return nil }
            let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        guard let number = Int64(lower), number >= 0 else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: 1_000)
        return overflow ? nil : product
    }

    /// Formats a byte count the way Redis's `*_human` INFO fields do (`1.50M`).
    public static func humanBytes(_ bytes: Int) -> String {
        let units: [(Double, String)] = [(1_099_511_627_776, "T"), (1_073_741_824, "G"), (1_048_576, "M"), (1024, "K")]
        for (size, suffix) in units where Double(bytes) >= size {
            return formatFixed2(Double(bytes) / size) + suffix
        }
        return "\(bytes)B"
    }

    /// Formats a non-negative number with two decimals without Foundation.
    public static func formatFixed2(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded())
        let whole = hundredths / 100
        let fraction = hundredths % 100
        return "\(whole)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }
}

extension String {
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}
