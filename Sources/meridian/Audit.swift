import ArgumentParser
import Glibc
import MeridianCore
import MeridianWire

extension Meridian {
    struct Audit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Works with audit exports (docs/AUDIT.md).", subcommands: [Verify.self])
    }
}

extension Meridian.Audit {
    /// `meridian audit verify FILE...`: the checks of docs/AUDIT.md, "Verifying".
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Checks audit exports: format, hash chain, counts, and continuity between consecutive files.",
            discussion: """
                Each FILE is a zstd-compressed NDJSON export. Prints one summary line per file and exits 0 \
                when every check holds; otherwise names the first bad line (file and line number) and exits 1. \
                Give consecutive exports in order: each one's `since` must equal the previous one's `until`.
                """)

        @Argument(help: "The export files, oldest first.")
        var files: [String]

        /// Longest line accepted: a 1 MiB value in base64 plus its key and fields.
        static let lineBytesMax = 4 << 20

        func run() throws {
            var previous: (file: String, until: JSONValue)?
            for file in files {
                let summary: AuditVerifier.Summary
                do {
                    summary = try Self.verify(file: file)
                } catch let failure as Failure {
                    printError("\(file): \(failure.message)")
                    throw ExitCode(1)
                }
                if let previous, previous.until != summary.since {
                    printError("\(file): line 1: its range starts at \(Self.text(summary.since)), but \(previous.file) ended at \(Self.text(previous.until)): an export is missing between them")
                    throw ExitCode(1)
                }
                print("\(file): ok: \(summary.lines) lines, \(summary.deltas) deltas, \(summary.conflicts) conflicts, since \(Self.text(summary.since)) until \(Self.text(summary.until))")
                previous = (file, summary.until)
            }
        }

        struct Failure: Error {
            var message: String
        }

        static func verify(file: String) throws -> AuditVerifier.Summary {
            guard let handle = fopen(file, "rb") else { throw Failure(message: "cannot open: \(String(cString: strerror(errno)))") }
            defer { fclose(handle) }
            let decompressor = ZstdDecompressor()
            var verifier = AuditVerifier()
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            var lines = 0
            while true {
                let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, handle) }
                if count == 0 {
                    if ferror(handle) != 0 { throw Failure(message: "read error") }
                    break
                }
                let plain: [UInt8]
                do {
                    plain = try decompressor.decompress(Array(chunk[0..<count]))
                } catch {
                    throw Failure(message: "line \(lines + 1): the compressed data is damaged (\(error))")
                }
                pending += plain
                var start = 0
                while let newline = pending[start...].firstIndex(of: 0x0A) {
                    lines += 1
                    do {
                        try verifier.consume(pending[start..<newline])
                    } catch {
                        throw Failure(message: "\(error)")
                    }
                    start = newline + 1
                }
                pending.removeFirst(start)
                if pending.count > lineBytesMax { throw Failure(message: "line \(lines + 1): longer than \(lineBytesMax) bytes") }
            }
            do {
                try decompressor.finish()
            } catch {
                throw Failure(message: "line \(lines + 1): \(error)")
            }
            if !pending.isEmpty { throw Failure(message: "line \(lines + 1): the last line has no newline (truncated?)") }
            do {
                return try verifier.finish()
            } catch {
                throw Failure(message: "\(error)")
            }
        }

        static func text(_ vector: JSONValue) -> String {
            guard case .object(let members) = vector else { return "?" }
            return "{" + members.map { "\($0.key):\($0.value.stringValue ?? "?")" }.joined(separator: ",") + "}"
        }

        func printError(_ message: String) {
            var standardError = StandardError()
            print(message, to: &standardError)
        }
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
