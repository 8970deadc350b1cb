import ArgumentParser
import Glibc
import MeridianCore
import MeridianWire

extension Meridian {
    /// `meridian export`: streams a node's audit log into a file (docs/AUDIT.md, "Export").
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exports every change to audited namespaces (and every resolved conflict) into a zstd-compressed NDJSON file.",
            discussion: """
                Asks the node with AUDIT EXPORT, one chunk at a time, and appends each chunk (an independent zstd \
                frame) to FILE.partial, renamed to FILE once the trailer arrived and the file is synced. \
                SINCE/UNTIL: a version vector from an export's trailer ({"0.0":"123"}), an RFC 3339 time \
                (2026-11-29T09:00:00Z), or Unix milliseconds. Without --since, the export starts at the oldest \
                entry retention kept; without --until, it ends at the last entry recorded when it starts. \
                --since-export FILE continues where FILE (a previous export, verified first) ended.
                """)

        @Option(help: "The node to export from (HOST:PORT, its client port).")
        var node: String

        @Option(name: .customLong("namespace"), help: "A namespace to export (repeatable; all audited ones when absent).")
        var namespaces: [String] = []

        @Option(help: "Start after this vector, or at this time.")
        var since: String?

        @Option(help: "Continue where this previous export ended (its trailer's until).")
        var sinceExport: String?

        @Option(help: "End at this vector, or before this time.")
        var until: String?

        @Flag(help: "Write values' SHA-256 digests instead of their bytes.")
        var digestOnly = false

        @Option(help: "Pace the export to this many lines per second (0: as fast as the node goes).")
        var rate: UInt32 = 0

        @Option(help: "The file to write (.ndjson.zst).")
        var out: String

        @Flag(help: "Replace FILE when it exists.")
        var force = false

        func validate() throws {
            if since != nil && sinceExport != nil { throw ValidationError("give --since or --since-export, not both") }
        }

        func run() throws {
            if !force && access(out, F_OK) == 0 { throw ValidationError("\(out) exists (--force replaces it)") }
            var arguments = ["AUDIT", "EXPORT"]
            for name in namespaces { arguments += ["NAMESPACE", name] }
            if let sinceExport {
                let summary: AuditVerifier.Summary
                do {
                    summary = try Audit.Verify.verify(file: sinceExport)
                } catch let failure as Audit.Verify.Failure {
                    throw ValidationError("\(sinceExport) does not verify, so it cannot say where to continue: \(failure.message)")
                }
                // Resuming with another filter would leave the other namespaces' changes in
                // between out of both files.
                guard Set(summary.namespaces) == Set(namespaces) else {
                    let previous = summary.namespaces.isEmpty ? "every audited namespace" : summary.namespaces.joined(separator: ", ")
                    throw ValidationError("\(sinceExport) exported \(previous); continue it with the same --namespace options")
                }
                var vector: [UInt8] = []
                summary.until.canonicalBytes(into: &vector)
                arguments += ["SINCE", String(decoding: vector, as: UTF8.self)]
            } else if let since {
                arguments += ["SINCE", try Self.bound(since)]
            }
            if let until { arguments += ["UNTIL", try Self.bound(until)] }
            if digestOnly { arguments.append("DIGEST-ONLY") }
            if rate > 0 { arguments += ["RATE", String(rate)] }

            let client: RESPClient
            do {
                client = try RESPClient(address: node)
            } catch {
                throw ExportFailure(message: "\(error)")
            }
            let partial = out + ".partial"
            guard let handle = fopen(partial, "wb") else {
                throw ExportFailure(message: "cannot create \(partial): \(String(cString: strerror(errno)))")
            }
            var closed = false
            defer { if !closed { fclose(handle); unlink(partial) } }
            var bytes = 0
            var frames = 0
            var lastFrame: [UInt8] = []
            while true {
                let reply: RESPClient.Reply
                do {
                    reply = try client.call(arguments)
                } catch {
                    throw ExportFailure(message: "\(node): \(error)")
                }
                guard case .array(let items?) = reply, items.count == 2,
                      case .bulk(let cursorBytes?) = items[0], case .bulk(let frame?) = items[1] else {
                    if case .error(let message) = reply { throw ExportFailure(message: "\(node): \(message)") }
                    throw ExportFailure(message: "\(node): unexpected reply to AUDIT EXPORT: \(reply)")
                }
                let written = frame.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, handle) }
                guard written == frame.count else { throw ExportFailure(message: "writing \(partial) failed: \(String(cString: strerror(errno)))") }
                bytes += frame.count
                frames += 1
                lastFrame = frame
                let cursor = String(decoding: cursorBytes, as: UTF8.self)
                if cursor == "0" { break }
                arguments = ["AUDIT", "EXPORT", "CURSOR", cursor]
            }
            guard fflush(handle) == 0, fsync(fileno(handle)) == 0 else {
                throw ExportFailure(message: "syncing \(partial) failed: \(String(cString: strerror(errno)))")
            }
            fclose(handle)
            closed = true
            guard rename(partial, out) == 0 else {
                unlink(partial)
                throw ExportFailure(message: "renaming \(partial) to \(out) failed: \(String(cString: strerror(errno)))")
            }
            // The rename is durable once the directory is synced.
            let directory = open(out.contains("/") ? String(out[..<out.lastIndex(of: "/")!]).nonEmpty ?? "/" : ".", O_RDONLY)
            if directory >= 0 {
                _ = fsync(directory)
                close(directory)
            }
            print("\(out): \(bytes) bytes in \(frames) frames; \(Self.trailerSummary(lastFrame))")
        }

        struct ExportFailure: Error, CustomStringConvertible {
            var message: String
            var description: String { message }
        }

        /// A bound as the command takes it: vectors pass as they are, times become Unix ms.
        static func bound(_ text: String) throws -> String {
            if text.hasPrefix("{") || Int64(text) != nil { return text }
            guard let ms = AuditFormat.unixMs(rfc3339: text) else {
                throw ValidationError("\(text): expected a version vector ({\"0.0\":\"123\"}), an RFC 3339 time or Unix milliseconds")
            }
            return String(ms)
        }

        /// The trailer's counts and range end, read from the last frame (which ends with it).
        static func trailerSummary(_ frame: [UInt8]) -> String {
            guard let plain = try? ZstdDecompressor().decompress(frame),
                  let start = plain.dropLast().lastIndex(of: 0x0A).map({ $0 + 1 }) ?? (plain.isEmpty ? nil : 0),
                  let trailer = try? JSONValue(parsing: plain[start..<(plain.count - 1)]),
                  let deltas = trailer["deltas"]?.intValue, let conflicts = trailer["conflicts"]?.intValue,
                  let until = trailer["until"] else { return "trailer not readable" }
            return "\(deltas) deltas, \(conflicts) conflicts, until \(Audit.Verify.text(until))"
        }
    }
}

extension String {
    /// Nil for the empty string.
    var nonEmpty: String? { isEmpty ? nil : self }
}
