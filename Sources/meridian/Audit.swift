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
                if let previous, previous.until.members != summary.since.members {
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
            // Bytes of the line being assembled; lines are checked as soon as they end, so
            // memory stays bounded by the longest line whatever the file's size.
            var pending: [UInt8] = []
            var lines = 0
            var problem: String?
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            func take(_ plain: ArraySlice<UInt8>) throws(WireError) {
                var start = plain.startIndex
                while let newline = plain[start...].firstIndex(of: 0x0A) {
                    pending += plain[start..<newline]
                    start = newline + 1
                    lines += 1
                    if pending.count > lineBytesMax {
                        problem = "line \(lines): longer than \(lineBytesMax) bytes"
                        throw .malformed("line too long")
                    }
                    do {
                        try verifier.consume(pending[...])
                    } catch {
                        problem = "\(error)"
                        throw .malformed("bad line")
                    }
                    pending.removeAll(keepingCapacity: true)
                }
                pending += plain[start...]
                if pending.count > lineBytesMax {
                    problem = "line \(lines + 1): longer than \(lineBytesMax) bytes"
                    throw .malformed("line too long")
                }
            }
            var total = 0
            while true {
                let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, handle) }
                if count == 0 {
                    if ferror(handle) != 0 { throw Failure(message: "read error") }
                    break
                }
                total += count
                do {
                    try decompressor.decompress(Array(chunk[0..<count]), take)
                } catch {
                    throw Failure(message: problem ?? "line \(lines + 1): the compressed data is damaged (\(error))")
                }
            }
            if total == 0 { throw Failure(message: "the file is empty") }
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
