import MeridianCore
import MeridianRESP
import NIOCore

/// Runs the commands other nodes of the data center forwarded to this one, their partition's
/// primary (docs/CLUSTER.md, "Forwarding"), on one event loop with one executor, as a client
/// connection would: the reply is the RESP bytes the coordinator relays to its client, in the
/// client's protocol version. A write's reply waits for its replication (`write_acks`) and for
/// the disk as a local client's would; keys on disk only are loaded first.
public final class ForwardedCommands: @unchecked Sendable {
    private let server: ServerContext
    private let loop: EventLoop
    // Event loop only.
    private var executor: CommandExecutor

    public init(server: ServerContext, loop: EventLoop) {
        self.server = server
        self.loop = loop
        var executor = CommandExecutor(
            server: server, session: SessionState(clientID: 0), seed: 0x5EED_F0_4A4D,
            loopCounters: server.database.statistics.loops[0])
        executor.runsForwardedCommands = true
        self.executor = executor
    }

    /// The engine's `CommandRunner`.
    public func run(_ commands: [[[UInt8]]], protocolVersion: UInt8, reply: @escaping @Sendable ([UInt8]) -> Void) {
        loop.execute { [self] in
            // One command per message today (a transaction's several are not forwarded yet).
            guard commands.count == 1, let command = commands.first else {
                var out = ByteBufferAllocator().buffer(capacity: 64)
                out.writeErrorReply("ERR only one command per forwarded message is supported")
                reply(Array(out.readableBytesView))
                return
            }
            let arguments = command.map { ByteBuffer(bytes: $0) }
            let version: RESPVersion = protocolVersion == 3 ? .v3 : .v2
            guard let cluster = server.cluster,
                  let id = arguments[0].withUnsafeReadableBytes({ CommandTable.lookup($0) }),
                  CommandTable.shape(id).acceptsArgumentCount(arguments.count) else {
                execute(arguments, version: version, reply: reply)
                return
            }
            let keys = CommandExecutor.readQuorumKeys(id, CommandTable.shape(id), arguments, namespaces: server.database.namespaces)
            guard !keys.isEmpty else {
                execute(arguments, version: version, reply: reply)
                return
            }
            // A primary that may be stale (just back, hints not replayed yet) first merges
            // what a read quorum of the owners holds, so the command sees every write
            // acknowledged before it began.
            let loop = self.loop
            cluster.readQuorum(keys: keys) { [self] answered in
                loop.execute {
                    guard answered else {
                        var out = ByteBufferAllocator().buffer(capacity: 96)
                        out.writeErrorReply("TIMEOUT the command did not run (fewer replicas than read_acks answered in time)")
                        reply(Array(out.readableBytesView))
                        return
                    }
                    self.execute(arguments, version: version, reply: reply)
                }
            }
        }
    }

    /// Runs one command in the protocol version its client speaks (set for each run: the
    /// executor is shared by every forwarded command, and a run may resume after a disk load).
    private func execute(_ arguments: [ByteBuffer], version: RESPVersion, reply: @escaping @Sendable ([UInt8]) -> Void) {
        executor.session.protocolVersion = version
        var out = ByteBufferAllocator().buffer(capacity: 64)
        let outcome = executor.execute(arguments, into: &out)
        executor.flushStatistics()
        switch outcome {
        case .keepOpen, .closeAfterReply:
            afterSync(out, reply: reply)
        case .replyLater(let deferred):
            let loop = self.loop
            deferred.start { [self] later, _ in
                loop.execute {
                    var whole = out
                    var later = later
                    whole.writeBuffer(&later)
                    self.afterSync(whole, reply: reply)
                }
            }
        case .loadFromDisk(let keys):
            guard let reader = server.diskReader else {
                out.writeErrorReply("ERR keys on disk without a disk reader")
                reply(Array(out.readableBytesView))
                return
            }
            reader.load(keys, on: loop).whenComplete { [self] result in
                switch result {
                case .success:
                    executor.keysJustLoaded = true
                    execute(arguments, version: version, reply: reply)
                    executor.keysJustLoaded = false
                case .failure(let error):
                    var failed = ByteBufferAllocator().buffer(capacity: 64)
                    failed.writeErrorReply("ERR disk read failed: \(error)")
                    reply(Array(failed.readableBytesView))
                }
            }
        case .replyOffLoop:
            // Keyless commands (AUDIT) are never forwarded.
            out.writeErrorReply("ERR this command is not forwarded")
            reply(Array(out.readableBytesView))
        }
    }

    /// Sends `out` once everything the executor's replies depend on is on disk
    /// (`write-through` namespaces), as a client connection holds its replies.
    private func afterSync(_ out: ByteBuffer, reply: @escaping @Sendable ([UInt8]) -> Void) {
        let bytes = Array(out.readableBytesView)
        let sequence = executor.syncSequence
        guard let storage = server.database.storage, sequence > 0,
              storage.whenDurable(sequence, { reply(bytes) }) else {
            reply(bytes)
            return
        }
    }
}
