import MeridianCore
import MeridianRESP
import MeridianStorage
import NIOCore

/// One client connection: decodes commands, executes them and writes replies, all in this
/// one handler (passing parsed commands down a pipeline would box them in `NIOAny`).
///
/// Replies of one read batch accumulate in one buffer that is flushed once, in
/// `channelReadComplete`, so a pipeline of 16 commands costs one write system call. The
/// buffer is reused across batches: once NIO has written it, it is uniquely ours again and
/// `clear()` keeps its storage.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Replies are written out early once the batch's buffer passes this size, so a pipeline
    /// of large GETs does not hold all its replies in memory at once.
    static let outboundFlushBytes = 1 << 20
    /// CLIENT LIST's view of this connection is refreshed at most this often (and at once
    /// when the session's name or protocol changes).
    static let snapshotRefreshMs: Int64 = 100

    /// What one read batch works on. `processPending` moves it into a local for the batch:
    /// stored properties of a class pay a dynamic exclusivity check on every access, and a
    /// copy left behind would make every append to its arrays and buffers copy them.
    private struct BatchState {
        var executor: CommandExecutor
        var decoder = RESPCommandDecoder()
        /// Arguments of the command being executed (slices of `pending`); kept for its capacity.
        var arguments: [ByteBuffer] = []
        /// Replies of the current read batch.
        var outbound: ByteBuffer
    }

    private let server: ServerContext
    /// Always present outside `processPending`.
    private var batch: BatchState?
    /// Bytes received but not yet consumed (a partial command); nil when everything was used.
    private var pending: ByteBuffer?
    /// Set once the connection will close (QUIT, protocol error, shutdown): reads are ignored.
    private var closing = false
    /// Set while command execution waits for the peer to read its replies: a client that
    /// pipelines large reads without reading them must not grow the server's memory.
    private var pausedForBackpressure = false
    /// Set by graceful shutdown while commands already received still wait for the peer to
    /// read earlier replies: they are executed and answered, then the connection closes.
    private var shutdownRequested = false
    /// Set while the connection waits for the storage engine: for a sync that its replies
    /// depend on (`write-through`), or for keys of its next command to load from disk.
    /// Commands behind it are not executed until it ends, so replies keep their order.
    private var waitingForStorage = false
    /// The command whose keys are loading from disk (copied out of the input buffer).
    private var parkedCommand: [ByteBuffer]?
    /// Set when reads were stopped because too much input piled up during a storage wait.
    private var readsPausedForStorage = false
    /// Cleared when the channel goes inactive: a storage callback arriving later does nothing.
    private var active = true
    /// Input kept while waiting for storage before reading from the socket stops.
    static let inputWhileWaitingBytesMax = 4 << 20
    private let record: ClientRecord
    private let shutdownBox: WeakHandlerBox
    private var context: ChannelHandlerContext?
    private var snapshotRefreshedUnixMs: Int64 = 0

    /// This event loop's connections waiting for syncs (set in `handlerAdded` when not given).
    private var syncWaiters: LoopSyncWaiters?

    init(
        server: ServerContext, clientID: Int, remote: String, local: String, seed: UInt64, loopCounters: LoopCounters,
        syncWaiters: LoopSyncWaiters? = nil
    ) {
        self.server = server
        self.syncWaiters = syncWaiters
        self.batch = BatchState(
            executor: CommandExecutor(
                server: server, session: SessionState(clientID: clientID), seed: seed, loopCounters: loopCounters),
            outbound: ByteBufferAllocator().buffer(capacity: 1024))
        let now = SystemClock.nowUnixMs()
        let snapshot = ClientSnapshot(id: clientID, address: remote, localAddress: local, createdUnixMs: now, lastInteractionUnixMs: now)
        // The registry calls this from the shutdown path on another thread; it hops to the loop.
        let box = WeakHandlerBox()
        self.shutdownBox = box
        self.record = ClientRecord(snapshot: snapshot) { box.closeGracefully() }
        box.handler = self
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if syncWaiters == nil { syncWaiters = LoopSyncWaiters(loop: context.eventLoop) }
        self.shutdownBox.eventLoop = context.eventLoop
    }

    func channelActive(context: ChannelHandlerContext) {
        do {
            try server.clients.register(record, limit: server.maxClients.load(ordering: .relaxed))
        } catch {
            closing = true
            switch error {
            case .tooManyClients:
                // Redis's answer to one connection too many; the others are unaffected.
                var refusal = context.channel.allocator.buffer(capacity: 48)
                refusal.writeErrorReply("ERR max number of clients reached")
                context.writeAndFlush(wrapOutboundOut(refusal)).whenComplete { _ in context.close(promise: nil) }
            case .shuttingDown:
                context.close(promise: nil)
            }
            return
        }
        server.database.statistics.connectionsReceived.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        server.clients.unregister(id: record.id)
        batch?.executor.flushStatistics()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After shutdown began, bytes that were not read before it are not taken on.
        if closing || shutdownRequested { return }
        var incoming = unwrapInboundIn(data)
        if pending == nil {
            pending = incoming
        } else {
            // No argument slices are alive here, so this appends without copying the buffer.
            pending!.writeBuffer(&incoming)
        }
        if waitingForStorage {
            if !readsPausedForStorage && pending!.readableBytes > Self.inputWhileWaitingBytesMax {
                readsPausedForStorage = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
            return
        }
        if !pausedForBackpressure { processPending(context: context) }
    }

    /// Executes every complete command in `pending`; when the disk is backlogged, in steps
    /// that each end by answering (or waiting for the flush the answers depend on).
    private func processPending(context: ChannelHandlerContext) {
        while processPendingUntilBacklog(context: context) {
            finishBatch(context: context)
            if waitingForStorage || pending == nil || closing || pausedForBackpressure { break }
        }
    }

    /// Executes complete commands in `pending` until the input ends or a write finds the
    /// disk backlogged (then returns true).
    private func processPendingUntilBacklog(context: ChannelHandlerContext) -> Bool {
        var stoppedForBacklog = false
        var buffer = pending!
        pending = nil
        var state = batch!
        batch = nil
        var closing = false
        while true {
            let complete: Bool
            do {
                complete = try state.decoder.decode(&buffer, into: &state.arguments)
            } catch {
                // A framing error: answer it, then close. Everything before it was executed.
                state.outbound.writeErrorReply(error.message)
                state.executor.errorsTally += 1
                closing = true
                break
            }
            if !complete { break }
            let outcome = state.executor.execute(state.arguments, into: &state.outbound)
            switch outcome {
            case .keepOpen:
                break
            case .closeAfterReply:
                closing = true
            case .loadFromDisk(let keys):
                // Copied: the slices point into `buffer`, which is compacted and reused.
                parkedCommand = state.arguments.map { ByteBuffer(bytes: $0.readableBytesView) }
                waitingForStorage = true
                loadFromDisk(keys, context: context)
            case .replyOffLoop(let work):
                waitingForStorage = true
                runOffLoop(work, context: context)
            case .replyLater(let deferred):
                waitingForStorage = true
                let loop = context.eventLoop
                let handler = NIOLoopBound(self, eventLoop: loop)
                deferred.start { reply, update in
                    loop.execute { handler.value.resumeAfterDeferred(reply, update) }
                }
            }
            // Drop the slices before the buffer can be appended to again.
            state.arguments.removeAll(keepingCapacity: true)
            if closing || waitingForStorage { break }
            if state.executor.pausedForDiskBacklog {
                // The disk is behind: the rest of the input waits for the flush.
                state.executor.pausedForDiskBacklog = false
                stoppedForBacklog = true
                break
            }
            if state.outbound.readableBytes >= Self.outboundFlushBytes {
                if repliesWaitForSync(state.executor) {
                    // These replies may not leave before the sync: stop here; the batch goes
                    // on once the sync is done.
                    break
                }
                context.writeAndFlush(wrapOutboundOut(state.outbound), promise: nil)
                state.outbound.clear()
                if !context.channel.isWritable {
                    // The peer is not reading: stop executing (and reading) until it catches up.
                    pausedForBackpressure = true
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
                    break
                }
            }
        }
        if !closing && buffer.readableBytes > 0 {
            // The decoder's progress is relative to the reader index, so compacting is safe even
            // in the middle of a command; without it a client that streams without pauses
            // would keep every byte it ever sent.
            if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
            pending = buffer
        }
        batch = state
        if closing || (shutdownRequested && !pausedForBackpressure && !waitingForStorage) {
            finishAndClose(context: context)
            return false
        }
        return stoppedForBacklog
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !waitingForStorage && !closing { finishBatch(context: context) }
        batch!.executor.flushStatistics()
        refreshSnapshot()
        context.fireChannelReadComplete()
    }

    /// Publishes what CLIENT LIST shows of this connection, at most every `snapshotRefreshMs`
    /// unless the session changed.
    private func refreshSnapshot() {
        let now = SystemClock.nowUnixMs()
        guard batch!.executor.sessionChanged || now - snapshotRefreshedUnixMs >= Self.snapshotRefreshMs else { return }
        batch!.executor.sessionChanged = false
        snapshotRefreshedUnixMs = now
        let lastCommand = batch!.executor.lastCommand.map { CommandTable.spec($0).name } ?? "NULL"
        let session = batch!.executor.session
        let queued = pending?.readableBytes ?? 0
        record.snapshot.withLockedValue { snapshot in
            snapshot.lastInteractionUnixMs = now
            snapshot.lastCommand = lastCommand
            snapshot.name = session.name
            snapshot.protocolVersion = session.protocolVersion
            snapshot.libraryName = session.libraryName
            snapshot.libraryVersion = session.libraryVersion
            snapshot.queryBufferBytes = queued
        }
    }

    /// Output backpressure: stops reading while the peer does not read its replies, and
    /// resumes the commands left waiting once it does.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        if writable && pausedForBackpressure && !closing {
            pausedForBackpressure = false
            if pending != nil && !waitingForStorage { processPending(context: context) }
            if !closing && !waitingForStorage {
                finishBatch(context: context)
                if shutdownRequested && !pausedForBackpressure && !waitingForStorage { finishAndClose(context: context) }
            }
        }
        if !pausedForBackpressure && !shutdownRequested && !closing && !readsPausedForStorage {
            context.channel.setOption(ChannelOptions.autoRead, value: writable).whenComplete { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Connection resets and similar: nothing to answer, just close.
        context.close(promise: nil)
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard batch!.outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(batch!.outbound), promise: nil)
        batch!.outbound.clear()
    }

    // MARK: Waiting for storage

    /// Whether replies produced so far must wait for a sync before they leave.
    private func repliesWaitForSync(_ executor: CommandExecutor) -> Bool {
        guard let storage = server.database.storage else { return false }
        return executor.syncSequence > storage.durableSequence.load(ordering: .acquiring)
    }

    /// Ends a read batch: sends the replies, or first waits for the sync they depend on.
    private func finishBatch(context: ChannelHandlerContext) {
        guard let storage = server.database.storage, repliesWaitForSync(batch!.executor) else {
            flushReplies(context: context)
            return
        }
        waitingForStorage = true
        let waiting = syncWaiters!.wait(for: batch!.executor.syncSequence, storage: storage) { [self] in
            resumeAfterStorage()
        }
        if !waiting {
            waitingForStorage = false
            flushReplies(context: context)
        }
    }

    /// Loads `keys` from disk off the event loop, then executes the parked command.
    private func loadFromDisk(_ keys: [[UInt8]], context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        server.diskReader!.load(keys, on: loop).whenComplete { result in
            handler.value.resumeAfterDiskLoad(result)
        }
    }

    /// Computes a reply on the audit export thread, then sends it and goes on with the input.
    private func runOffLoop(_ work: OffLoopReply, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        server.diskReader!.submitExport {
            let reply = work.run()
            loop.execute { handler.value.resumeAfterOffLoop(reply) }
        }
    }

    private func resumeAfterDeferred(_ reply: ByteBuffer, _ update: (@Sendable (inout CommandExecutor) -> Void)?) {
        guard active else { return }
        if let update { update(&batch!.executor) }
        resumeAfterOffLoop(reply)
    }

    private func resumeAfterOffLoop(_ reply: ByteBuffer) {
        guard active else { return }
        var reply = reply
        batch!.outbound.writeBuffer(&reply)
        resumeAfterStorage()
    }

    /// Executes the command that waited for its keys, then goes on with the input.
    private func resumeAfterDiskLoad(_ result: Result<Void, Error>) {
        guard active, let arguments = parkedCommand else { return }
        parkedCommand = nil
        var state = batch!
        batch = nil
        switch result {
        case .success:
            state.executor.keysJustLoaded = true
            let outcome = state.executor.execute(arguments, into: &state.outbound)
            state.executor.keysJustLoaded = false
            switch outcome {
            case .closeAfterReply: closing = true
            case .replyLater(let deferred):
                // A command on keys waits for its primary (a data center of several nodes) or
                // the strong engine, after its load as before it.
                batch = state
                let loop = context!.eventLoop
                let handler = NIOLoopBound(self, eventLoop: loop)
                deferred.start { reply, update in
                    loop.execute { handler.value.resumeAfterDeferred(reply, update) }
                }
                return
            case .keepOpen, .loadFromDisk, .replyOffLoop: break
            }
        case .failure(let error):
            state.executor.error("ERR disk read failed: \(error)", into: &state.outbound)
        }
        batch = state
        resumeAfterStorage()
    }

    /// Goes on after a storage wait: executes the input that queued up meanwhile, then ends
    /// the batch (which may wait again).
    private func resumeAfterStorage() {
        guard active, let context else { return }
        waitingForStorage = false
        if closing {
            finishAndClose(context: context)
            return
        }
        if readsPausedForStorage {
            readsPausedForStorage = false
            if !pausedForBackpressure && !shutdownRequested {
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        }
        if pending != nil && !pausedForBackpressure { processPending(context: context) }
        if !waitingForStorage && !closing {
            finishBatch(context: context)
            batch!.executor.flushStatistics()
            if shutdownRequested && !pausedForBackpressure && !waitingForStorage { finishAndClose(context: context) }
        }
    }

    /// Writes what is left and closes once every reply in flight has been written: writes
    /// complete in order, so the last write's completion means all are out. Replies that
    /// wait for a sync are written once it is done.
    private func finishAndClose(context: ChannelHandlerContext) {
        closing = true
        pending = nil
        if waitingForStorage { return }  // resumeAfterStorage comes back here
        if let storage = server.database.storage, repliesWaitForSync(batch!.executor) {
            waitingForStorage = true
            let waiting = syncWaiters!.wait(for: batch!.executor.syncSequence, storage: storage) { [self] in
                resumeAfterStorage()
            }
            if waiting { return }
            waitingForStorage = false
        }
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(batch!.outbound), promise: written)
        batch!.outbound.clear()
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// Called on the event loop by graceful shutdown: answers every command already received
    /// (waiting for the peer to read, if it is slow), then closes.
    fileprivate func closeGracefullyOnLoop() {
        guard let context, !closing, !shutdownRequested else { return }
        shutdownRequested = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        if !pausedForBackpressure && !waitingForStorage { finishAndClose(context: context) }
    }
}

/// Lets the registry (on any thread) ask a connection to close on its own event loop
/// without keeping the handler alive.
private final class WeakHandlerBox: @unchecked Sendable {
    weak var handler: ConnectionHandler?
    var eventLoop: EventLoop?

    func closeGracefully() {
        guard let loop = eventLoop else { return }
        loop.execute { [self] in handler?.closeGracefullyOnLoop() }
    }
}
