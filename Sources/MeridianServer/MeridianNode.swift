import Logging
import MeridianCore
import NIOCore
import NIOPosix

/// A running Meridian node: the client listener on every core, the active expiry timer and
/// graceful shutdown.
public final class MeridianNode: Sendable {
    /// How often active expiry runs (Redis's default `hz` of 10).
    public static let activeExpiryIntervalMs: Int64 = 100
    /// How long graceful shutdown waits for connections to finish their replies.
    public static let shutdownGraceMs: Int64 = 5_000

    public let context: ServerContext
    private let group: MultiThreadedEventLoopGroup
    private let serverChannel: Channel
    private let expiryTask: RepeatedTask
    /// Trims the audit log to its retention (docs/AUDIT.md); nil when nothing is audited.
    private let auditTrimTask: RepeatedTask?
    /// How often the audit log is trimmed.
    public static let auditTrimIntervalSeconds: Int64 = 60

    /// Starts listening on `bind:port` (port 0 picks a free port; `boundAddress` tells which).
    public init(context: ServerContext, bind: String, port: Int) throws {
        self.context = context
        let group = MultiThreadedEventLoopGroup(numberOfThreads: context.eventLoopCount)
        self.group = group
        let server = context
        // Each loop gets its own counters block; connections find theirs by their loop.
        var loopIndexes: [ObjectIdentifier: Int] = [:]
        var syncWaiters: [ObjectIdentifier: LoopSyncWaiters] = [:]
        for (index, loop) in group.makeIterator().enumerated() {
            loopIndexes[ObjectIdentifier(loop)] = index
            syncWaiters[ObjectIdentifier(loop)] = LoopSyncWaiters(loop: loop)
        }
        let countersByLoop = loopIndexes
        let syncWaitersByLoop = syncWaiters
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ClientIDAssigner(clients: server.clients))
                }
            }
            .childChannelInitializer { channel in
                let id = server.clients.takeID(for: ObjectIdentifier(channel))
                let handler = ConnectionHandler(
                    server: server, clientID: id,
                    remote: channel.remoteAddress.map(Self.describe) ?? "?",
                    local: channel.localAddress.map(Self.describe) ?? "?",
                    seed: UInt64(id) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(bitPattern: SystemClock.nowUnixMs()),
                    loopCounters: server.database.statistics.loops[countersByLoop[ObjectIdentifier(channel.eventLoop)] ?? 0],
                    syncWaiters: syncWaitersByLoop[ObjectIdentifier(channel.eventLoop)])
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        do {
            self.serverChannel = try bootstrap.bind(host: bind, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        if let local = serverChannel.localAddress, let boundPort = local.port {
            context.listenAddress.withLockedValue { $0 = HostPort(host: bind, port: boundPort) }
        }
        var generator = SplitMix64(seed: UInt64(bitPattern: SystemClock.nowUnixMs()))
        let database = context.database
        self.expiryTask = group.next().scheduleRepeatedTask(
            initialDelay: .milliseconds(Self.activeExpiryIntervalMs), delay: .milliseconds(Self.activeExpiryIntervalMs)
        ) { _ in
            _ = database.activeExpirePass(
                nowUnixMs: SystemClock.nowUnixMs(), monotonicNs: SystemClock.monotonicNs, using: &generator)
        }
        self.auditTrimTask = database.auditRetentionMs <= 0 ? nil : group.next().scheduleRepeatedTask(
            initialDelay: .seconds(Self.auditTrimIntervalSeconds), delay: .seconds(Self.auditTrimIntervalSeconds)
        ) { _ in
            database.trimAuditLog(nowUnixMs: SystemClock.nowUnixMs())
        }
    }

    /// The address the listener is bound to.
    public var boundAddress: HostPort { context.listenAddress.withLockedValue { $0 } }

    /// Stops accepting, lets every connection finish the replies it owes, then stops the loops.
    public func shutdownGracefully() {
        context.logger.info("shutting down: no new connections, finishing in-flight replies")
        try? serverChannel.close().wait()
        expiryTask.cancel()
        auditTrimTask?.cancel()
        context.clients.closeAllGracefully()
        let deadline = SystemClock.monotonicNs() + UInt64(Self.shutdownGraceMs) * 1_000_000
        while context.clients.count > 0 && SystemClock.monotonicNs() < deadline {
            usleep(10_000)
        }
        try? group.syncShutdownGracefully()
        // Connections are gone: write what write-back still holds, then close the store.
        context.diskReader?.shutdown()
        if let storage = context.database.storage {
            storage.shutdown()
            context.logger.info("durable store flushed and closed")
        }
        context.logger.info("stopped")
    }

    /// Blocks until the listener closes.
    public func waitUntilClosed() throws {
        try serverChannel.closeFuture.wait()
    }

    private static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v4, .v6: return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        case .unixDomainSocket: return address.pathname ?? "unix"
        }
    }
}

/// Sits on the listening channel and numbers accepted connections in accept order.
private final class ClientIDAssigner: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let clients: ClientRegistry

    init(clients: ClientRegistry) { self.clients = clients }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clients.reserveID(for: ObjectIdentifier(unwrapInboundIn(data)))
        context.fireChannelRead(data)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
