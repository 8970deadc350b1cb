#if canImport(Glibc)
import Glibc
#endif
import MeridianCore
import MeridianWire
import NIOCore

/// A reply computed off the event loop (it blocks on the disk); the connection sends it in
/// order with the replies around it.
public struct OffLoopReply: Sendable {
    public let run: @Sendable () -> ByteBuffer
}

extension CommandExecutor {
    /// AUDIT EXPORT [NAMESPACE name]... [SINCE bound] [UNTIL bound] [DIGEST-ONLY] [RATE lines-per-second]
    /// | AUDIT EXPORT CURSOR cursor | AUDIT HELP (docs/AUDIT.md, "The AUDIT EXPORT command").
    /// Replies `[next cursor or "0", one zstd frame of export lines]`.
    mutating func audit(_ a: [ByteBuffer], into out: inout ByteBuffer) -> CommandOutcome {
        if a.count == 2 && Self.matches(a[1], Array("HELP".utf8)) {
            out.writeArrayHeader(Self.auditHelp.count)
            for line in Self.auditHelp { out.writeSimpleString(line) }
            return .keepOpen
        }
        guard Self.matches(a[1], Array("EXPORT".utf8)) else {
            error("ERR unknown subcommand '\(String(buffer: a[1]))'. Try AUDIT HELP.", into: &out)
            return .keepOpen
        }
        guard database.auditRetentionMs > 0, server.diskReader != nil else {
            error("ERR no namespace is audited on this node (audit_retention of a durable namespace)", into: &out)
            return .keepOpen
        }
        let exporter = AuditExporter(server: server)
        // Continuing an export: the cursor carries all of it.
        if a.count >= 3 && Self.matches(a[2], Array("CURSOR".utf8)) {
            guard a.count == 4 else {
                syntaxError(into: &out)
                return .keepOpen
            }
            let cursor: AuditExportCursor
            do {
                cursor = try AuditExportCursor(decoding: String(buffer: a[3]))
            } catch {
                self.error("ERR invalid export cursor", into: &out)
                return .keepOpen
            }
            return .replyOffLoop(OffLoopReply { Self.exportChunk(exporter, cursor: cursor) })
        }
        var namespaces: [String] = []
        var since: AuditExporter.Bound?
        var until: AuditExporter.Bound?
        var digestOnly = false
        var linesPerSecond: UInt32 = 0
        var index = 2
        do throws(AuditExporter.Failure) {
            while index < a.count {
                if Self.matches(a[index], Array("DIGEST-ONLY".utf8)) {
                    digestOnly = true
                    index += 1
                    continue
                }
                guard index + 1 < a.count else { throw AuditExporter.Failure(message: "syntax error") }
                let value = String(buffer: a[index + 1])
                if Self.matches(a[index], Array("NAMESPACE".utf8)) {
                    namespaces.append(value)
                } else if Self.matches(a[index], Array("SINCE".utf8)) {
                    since = try exporter.parseBound(value)
                } else if Self.matches(a[index], Array("UNTIL".utf8)) {
                    until = try exporter.parseBound(value)
                } else if Self.matches(a[index], Array("RATE".utf8)) {
                    guard let rate = UInt32(value) else {
                        throw AuditExporter.Failure(message: "RATE is lines per second: a whole number from 0 (unpaced) to \(UInt32.max)")
                    }
                    linesPerSecond = rate
                } else {
                    throw AuditExporter.Failure(message: "syntax error")
                }
                index += 2
            }
        } catch {
            self.error("ERR \(error.message)", into: &out)
            return .keepOpen
        }
        return .replyOffLoop(OffLoopReply { [namespaces, since, until, digestOnly, linesPerSecond] in
            do throws(AuditExporter.Failure) {
                let cursor = try exporter.start(
                    namespaces: namespaces, since: since, until: until, digestOnly: digestOnly, linesPerSecond: linesPerSecond,
                    nowUnixMs: SystemClock.nowUnixMs())
                return Self.exportChunk(exporter, cursor: cursor)
            } catch {
                return Self.errorReply(error.message)
            }
        })
    }

    static let auditHelp = [
        "AUDIT <subcommand> [<arg> ...]. Subcommands are:",
        "EXPORT [NAMESPACE <name>]... [SINCE <vector|unix-ms>] [UNTIL <vector|unix-ms>] [DIGEST-ONLY] [RATE <lines/s>]",
        "    Start an export of the audit log; replies [cursor, zstd frame of NDJSON lines].",
        "EXPORT CURSOR <cursor>",
        "    Continue an export; cursor 0 in a reply means the export is complete.",
        "HELP",
        "    Print this help.",
    ]

    /// The reply for the next chunk of an export: `[cursor, frame]`.
    static func exportChunk(_ exporter: AuditExporter, cursor: AuditExportCursor) -> ByteBuffer {
        let started = SystemClock.monotonicNs()
        let chunk: (lines: [UInt8], lineCount: Int, next: AuditExportCursor?)
        do {
            chunk = try exporter.nextChunk(cursor)
        } catch {
            return errorReply(error.message)
        }
        if cursor.linesPerSecond > 0 {
            // Paced: the chunk takes at least the time its lines are worth at the rate (the
            // export thread sleeps; other exports wait their turn meanwhile).
            let dueNs = UInt64(chunk.lineCount) * 1_000_000_000 / UInt64(cursor.linesPerSecond)
            let spentNs = SystemClock.monotonicNs() - started
            if dueNs > spentNs { usleep(UInt32(min((dueNs - spentNs) / 1000, 10_000_000))) }
        }
        // One independent frame per reply: the client appends them, and concatenated frames
        // are one zstd stream.
        let compressor = ZstdCompressor()
        var frame = compressor.compress(chunk.lines)
        frame += compressor.finish()
        var reply = ByteBuffer()
        reply.reserveCapacity(frame.count + 512)
        reply.writeArrayHeader(2)
        reply.writeBulkString(chunk.next?.encoded() ?? "0")
        reply.writeBulkString(frame)
        return reply
    }

    static func errorReply(_ message: String) -> ByteBuffer {
        var reply = ByteBuffer()
        reply.writeErrorReply("ERR \(message)")
        return reply
    }
}

extension AuditExporter {
    /// An exporter of this node's log, naming origins as the configuration does.
    init(server: ServerContext) {
        let datacenters = server.configuration.cluster.datacenters
        self.init(
            database: server.database, clusterName: server.configuration.cluster.name, nodeName: server.nodeName,
            originNames: { origin in
                let dc = Int(origin.datacenter) < datacenters.count ? datacenters[Int(origin.datacenter)] : nil
                let node = dc.flatMap { Int(origin.node) < $0.nodes.count ? $0.nodes[Int(origin.node)].name : nil }
                return (dc?.name ?? "dc\(origin.datacenter)", node ?? "node\(origin.node)")
            })
    }
}
