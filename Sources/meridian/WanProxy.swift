import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `meridian wan-proxy`: a WAN emulator for tests and benchmarks (docs/CONSISTENCY.md, "WAN
/// emulator"). Each link listens on a loopback address and forwards every TCP connection to a
/// target, delaying each direction by the link's one-way delay; a control port cuts, heals,
/// resets and re-times links while they carry traffic. Not a request path: Foundation is fine.
struct WanProxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wan-proxy",
        abstract: "Forwards TCP between addresses with a one-way delay per link, and cuts links on command.",
        discussion: """
            Each --link is NAME=LISTEN,TARGET,DELAY, e.g. east-west=127.0.0.1:9201,127.0.0.1:7202,35ms \
            (port 0 picks a free port). Bytes are delivered in order, each DELAY after it arrived, in \
            both directions. Prints one line per link with its bound address, then "control on ADDR". \
            The control port takes one command per line: `cut NAME` (drop everything both ways, also \
            on new connections, like a partition), `heal NAME`, `reset NAME` (close the link's \
            connections), `delay NAME MS`, `links`; it answers `OK`, `ERR ...` or one line per link.
            """)

    @Option(name: .customLong("link"), help: "NAME=LISTEN,TARGET,DELAY (repeatable).")
    var links: [String]

    @Option(help: "Where the control port listens.")
    var control: String = "127.0.0.1:0"

    func run() throws {
        let specs = try links.map(LinkSpec.init(parsing:))
        guard Set(specs.map(\.name)).count == specs.count else { throw ValidationError("link names must differ") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        var states: [String: LinkState] = [:]
        for spec in specs {
            let state = LinkState(spec: spec)
            states[spec.name] = state
            let channel = try ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { inbound in Self.relay(inbound, link: state, on: loop) }
                .bind(host: spec.listen.host, port: spec.listen.port).wait()
            print("link \(spec.name) on \(channel.localAddress.map(Self.text) ?? "?") > \(spec.target.host):\(spec.target.port) delay \(spec.delayMs) ms")
        }
        let controlAddress = try HostPortText(parsing: control)
        let controlChannel = try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.addHandler(ControlHandler(links: states))
            }
            .bind(host: controlAddress.host, port: controlAddress.port).wait()
        print("control on \(controlChannel.localAddress.map(Self.text) ?? "?")")
        fflush(nil)  // the lines above are how a test learns the ports
        let stop = DispatchSemaphore(value: 0)
        // Kept until the end: a signal source that is released stops listening.
        let sources = [SIGINT, SIGTERM].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            return source
        }
        stop.wait()
        sources.forEach { $0.cancel() }
        try? group.syncShutdownGracefully()
    }

    static func text(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }

    /// Pairs an accepted connection with one to the link's target, on the same event loop.
    static func relay(_ inbound: Channel, link: LinkState, on loop: EventLoop) -> EventLoopFuture<Void> {
        let toTarget = Direction(link: link, loop: inbound.eventLoop)
        let toClient = Direction(link: link, loop: inbound.eventLoop)
        toClient.destination = inbound
        link.register(inbound)
        inbound.closeFuture.whenComplete { _ in link.unregister(inbound) }
        return inbound.pipeline.addHandler(ForwardHandler(direction: toTarget, reverse: toClient)).flatMap {
            // Cut links take connections and then say nothing, like a partition.
            guard !link.isCut else { return inbound.eventLoop.makeSucceededVoidFuture() }
            ClientBootstrap(group: inbound.eventLoop)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { outbound in outbound.pipeline.addHandler(ForwardHandler(direction: toClient, reverse: toTarget)) }
                .connect(host: link.spec.target.host, port: link.spec.target.port)
                .whenComplete { result in
                    switch result {
                    case .success(let outbound):
                        link.register(outbound)
                        outbound.closeFuture.whenComplete { _ in link.unregister(outbound) }
                        toTarget.destination = outbound
                        toTarget.deliverDue()
                    case .failure:
                        inbound.close(promise: nil)
                    }
                }
            return inbound.eventLoop.makeSucceededVoidFuture()
        }
    }
}

/// `NAME=LISTEN,TARGET,DELAY` (commas: no shell quoting needed).
struct LinkSpec {
    var name: String
    var listen: HostPortText
    var target: HostPortText
    var delayMs: Int64

    init(parsing text: String) throws {
        let usage = "\(text): expected NAME=LISTEN,TARGET,DELAY, e.g. east-west=127.0.0.1:0,127.0.0.1:7202,35ms"
        guard let equals = text.firstIndex(of: "=") else { throw ValidationError(usage) }
        let parts = text[text.index(after: equals)...].split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw ValidationError(usage) }
        name = String(text[..<equals])
        listen = try HostPortText(parsing: String(parts[0]))
        target = try HostPortText(parsing: String(parts[1]))
        let delay = parts[2]
        guard !name.isEmpty, let ms = Int64(delay.hasSuffix("ms") ? delay.dropLast(2) : delay), ms >= 0, ms <= 60_000 else {
            throw ValidationError("\(text): the delay is milliseconds from 0 to 60000, e.g. 35ms")
        }
        delayMs = ms
    }
}

struct HostPortText {
    var host: String
    var port: Int

    init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw ValidationError("\(text): expected HOST:PORT")
        }
        host = String(text[..<colon])
        self.port = port
    }
}

/// A link's settings and connections, changed by the control port while traffic flows. All
/// access is on the one event loop, except what the lock guards.
final class LinkState: @unchecked Sendable {
    let spec: LinkSpec
    private let lock = NIOLock()
    private var cut = false
    private var delay: Int64
    private var channels: [ObjectIdentifier: Channel] = [:]

    init(spec: LinkSpec) {
        self.spec = spec
        self.delay = spec.delayMs
    }

    var isCut: Bool { lock.withLock { cut } }
    var delayMs: Int64 { lock.withLock { delay } }
    func setCut(_ value: Bool) { lock.withLock { cut = value } }
    func setDelay(_ ms: Int64) { lock.withLock { delay = ms } }
    func register(_ channel: Channel) { lock.withLock { channels[ObjectIdentifier(channel)] = channel } }
    func unregister(_ channel: Channel) { _ = lock.withLock { channels.removeValue(forKey: ObjectIdentifier(channel)) } }
    /// Closes every connection of the link.
    func reset() { for channel in lock.withLock({ Array(channels.values) }) { channel.close(promise: nil) } }
    var connectionCount: Int { lock.withLock { channels.count } }
}

/// One direction of one connection: bytes waiting for their delivery time, in arrival order
/// (one queue and one timer per direction keep the order whatever the delays).
final class Direction: @unchecked Sendable {
    let link: LinkState
    let loop: EventLoop
    var destination: Channel?
    private var queue: [(due: NIODeadline, bytes: ByteBuffer?)] = []  // nil bytes: close
    private var timer: Scheduled<Void>?

    init(link: LinkState, loop: EventLoop) {
        self.link = link
        self.loop = loop
    }

    func enqueue(_ bytes: ByteBuffer?) {
        if link.isCut && bytes != nil { return }
        queue.append((NIODeadline.now() + .milliseconds(link.delayMs), bytes))
        schedule()
    }

    private func schedule() {
        guard timer == nil, let first = queue.first else { return }
        timer = loop.scheduleTask(deadline: first.due) { [self] in
            timer = nil
            deliverDue()
        }
    }

    /// Writes everything due, in order, once the destination is connected.
    func deliverDue() {
        guard let destination else { return }
        let now = NIODeadline.now()
        var wrote = false
        while let first = queue.first, first.due <= now {
            queue.removeFirst()
            guard let bytes = first.bytes else {
                destination.close(promise: nil)
                queue.removeAll()
                return
            }
            if link.isCut { continue }  // in flight when the link was cut: lost
            destination.write(bytes, promise: nil)
            wrote = true
        }
        if wrote { destination.flush() }
        schedule()
    }
}

/// Reads one side of a connection into the direction toward the other side.
final class ForwardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let direction: Direction
    let reverse: Direction

    init(direction: Direction, reverse: Direction) {
        self.direction = direction
        self.reverse = reverse
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        direction.enqueue(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The other side closes once what was in flight has arrived.
        direction.enqueue(nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// The control port: one command per line.
final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let links: [String: LinkState]
    private var pending = ""

    init(links: [String: LinkState]) {
        self.links = links
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending += String(buffer: unwrapInboundIn(data))
        while let newline = pending.firstIndex(of: "\n") {
            let line = pending[..<newline].trimmingCharacters(in: .whitespacesAndNewlines)
            pending = String(pending[pending.index(after: newline)...])
            let reply = answer(line.split(separator: " ").map(String.init))
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply + "\n")), promise: nil)
        }
        if pending.utf8.count > 4_096 { context.close(promise: nil) }
    }

    func answer(_ words: [String]) -> String {
        guard let command = words.first?.lowercased() else { return "ERR empty command" }
        if command == "links" {
            return links.keys.sorted().map { name in
                let link = links[name]!
                return "\(name) delay \(link.delayMs) ms \(link.isCut ? "cut" : "up") connections \(link.connectionCount)"
            }.joined(separator: "\n")
        }
        guard words.count >= 2, let link = links[words[1]] else { return "ERR no link named '\(words.count >= 2 ? words[1] : "")'" }
        switch (command, words.count) {
        case ("cut", 2): link.setCut(true)
        case ("heal", 2): link.setCut(false)
        case ("reset", 2): link.reset()
        case ("delay", 3):
            guard let ms = Int64(words[2].hasSuffix("ms") ? String(words[2].dropLast(2)) : words[2]), (0...60_000).contains(ms) else {
                return "ERR the delay is milliseconds from 0 to 60000"
            }
            link.setDelay(ms)
        default: return "ERR unknown command: cut NAME | heal NAME | reset NAME | delay NAME MS | links"
        }
        return "OK"
    }
}
