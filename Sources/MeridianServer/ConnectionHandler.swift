import MeridianCore
import MeridianRESP
import NIOCore

/// One client connection: decodes commands, executes them and writes replies, all in this
/// one handler (passing parsed commands down a pipeline would box them in `NIOAny`).
///
/// Replies of one read batch accumulate in one buffer that is flushed once, in
/// `channelReadComplete`, so a pipeline of 16 commands costs one write system call.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Replies are written out early once the batch's buffer passes this size, so a pipeline
    /// of large GETs does not hold all its replies in memory at once.
    static let outboundFlushBytes = 1 << 20

    private let server: ServerContext
    private var executor: CommandExecutor
    private var decoder = RESPCommandDecoder()
    /// Bytes received but not yet consumed (a partial command); nil when everything was used.
    private var pending: ByteBuffer?
    /// Arguments of the command being executed (slices of `pending` or of the read buffer).
    private var arguments: [ByteBuffer] = []
    /// Replies of the current read batch.
    private var outbound: ByteBuffer
    /// Set once the connection will close (QUIT, protocol error, shutdown): reads are ignored.
    private var closing = false
    /// The last write's completion, so a graceful close waits for the replies in flight.
    private var lastWrite: EventLoopFuture<Void>?
    private let record: ClientRecord
    private let shutdownBox: WeakHandlerBox
    private var context: ChannelHandlerContext?

    init(server: ServerContext, clientID: Int, remote: String, local: String, seed: UInt64) {
        self.server = server
        self.executor = CommandExecutor(server: server, session: SessionState(clientID: clientID), seed: seed)
        self.outbound = ByteBufferAllocator().buffer(capacity: 0)
        let now = SystemClock.nowUnixMs()
        let snapshot = ClientSnapshot(id: clientID, address: remote, localAddress: local, createdUnixMs: now, lastInteractionUnixMs: now)
        // The closure is called from the shutdown path on another thread; it hops to the loop.
        let box = WeakHandlerBox()
        self.shutdownBox = box
        self.record = ClientRecord(snapshot: snapshot) { box.closeGracefully() }
        box.handler = self
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.outbound = context.channel.allocator.buffer(capacity: 512)
        self.shutdownBox.eventLoop = context.eventLoop
    }

    func channelActive(context: ChannelHandlerContext) {
        server.clients.register(record)
        server.database.statistics.connectionsReceived.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.clients.unregister(id: record.id)
        executor.flushStatistics()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        var incoming = unwrapInboundIn(data)
        if pending == nil {
            pending = incoming
        } else {
            // No argument slices are alive here, so this appends without copying the buffer.
            pending!.writeBuffer(&incoming)
        }
        processPending(context: context)
    }

    private func processPending(context: ChannelHandlerContext) {
        while !closing {
            let complete: Bool
            do {
                complete = try decoder.decode(&pending!, into: &arguments)
            } catch {
                // A framing error: answer it, then close. Everything before it was executed.
                outbound.writeErrorReply(error.message)
                executor.errorsTally += 1
                closing = true
                break
            }
            if !complete { break }
            let outcome = executor.execute(arguments, into: &outbound)
            arguments.removeAll(keepingCapacity: true)
            if case .closeAfterReply = outcome { closing = true }
            if outbound.readableBytes >= Self.outboundFlushBytes {
                lastWrite = context.writeAndFlush(wrapOutboundOut(outbound))
                outbound = context.channel.allocator.buffer(capacity: 512)
            }
        }
        if let buffer = pending {
            if buffer.readableBytes == 0 {
                pending = nil
            } else if buffer.readerIndex > 64 * 1024 && !decoder.isMidCommand {
                pending!.discardReadBytes()
            }
        }
        if closing { finishAndClose(context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context: context)
        executor.flushStatistics()
        let lastCommand = executor.lastCommand.map { CommandTable.spec($0).name } ?? "NULL"
        let session = executor.session
        let queued = pending?.readableBytes ?? 0
        record.snapshot.withLockedValue { snapshot in
            snapshot.lastInteractionUnixMs = SystemClock.nowUnixMs()
            snapshot.lastCommand = lastCommand
            snapshot.name = session.name
            snapshot.protocolVersion = session.protocolVersion
            snapshot.libraryName = session.libraryName
            snapshot.libraryVersion = session.libraryVersion
            snapshot.queryBufferBytes = queued
        }
        context.fireChannelReadComplete()
    }

    /// Stops reading while the peer does not read its replies (output backpressure).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        if context.channel.isWritable { context.read() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Connection resets and similar: nothing to answer, just close.
        context.close(promise: nil)
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        lastWrite = context.writeAndFlush(wrapOutboundOut(outbound))
        outbound = context.channel.allocator.buffer(capacity: 512)
    }

    /// Writes what is left and closes once every reply in flight has been written.
    private func finishAndClose(context: ChannelHandlerContext) {
        closing = true
        pending = nil
        flushReplies(context: context)
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    /// Called on the event loop by graceful shutdown.
    fileprivate func closeGracefullyOnLoop() {
        guard let context else { return }
        finishAndClose(context: context)
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
