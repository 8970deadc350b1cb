// Proves the connection handler's contract in-process, on NIO's EmbeddedChannel: pipelined
// commands are all answered in order in one flush, a command split across reads is answered
// once complete, a protocol error is answered and then the channel closes, limits refuse
// oversized keys and values without storing anything, and eviction and OOM follow the
// namespaces' policies. (Tests/integration covers the same ground over real sockets.)
import Logging
import MeridianCore
import NIOCore
import NIOEmbedded
import Testing

@testable import MeridianServer

@Suite struct ConnectionHandlerTests {
    static func makeContext(namespaces: [NamespaceConfig] = [.defaultNamespace], maxmemory: Int = 0) -> ServerContext {
        var configuration = MeridianConfiguration.standalone()
        configuration.namespaces = namespaces
        configuration.maxmemoryBytes = maxmemory
        return ServerContext(
            configuration: configuration, nodeName: "test-1", datacenterName: "test",
            origin: ReplicaID(datacenter: 0, node: 0), listenAddress: HostPort(host: "127.0.0.1", port: 0),
            configFile: nil, dataDirectory: "/nonexistent", processID: 1, logger: Logger(label: "test"),
            eventLoopCount: 1)
    }

    /// A client on an embedded channel: send bytes, read back everything the handler wrote.
    final class Client {
        let channel: EmbeddedChannel

        init(_ context: ServerContext) throws {
            let handler = ConnectionHandler(
                server: context, clientID: context.clients.nextID(), remote: "test", local: "test", seed: 1,
                loopCounters: context.database.statistics.loops[0])
            channel = EmbeddedChannel(handler: handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func send(_ text: String) throws -> String {
            try channel.writeInbound(ByteBuffer(string: text))
            var reply = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { reply += String(buffer: buffer) }
            return reply
        }

        static func command(_ parts: String...) -> String {
            "*\(parts.count)\r\n" + parts.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        }
    }

    @Test func pipelinedCommandsAreAnsweredInOrderInOneFlush() throws {
        let client = try Client(Self.makeContext())
        let pipeline = Client.command("SET", "a", "1") + Client.command("INCR", "a") + Client.command("GET", "a")
            + Client.command("GET", "missing") + "PING\r\n"
        try client.channel.writeInbound(ByteBuffer(string: pipeline))
        let first = try client.channel.readOutbound(as: ByteBuffer.self)
        #expect(first.map { String(buffer: $0) } == "+OK\r\n:2\r\n$1\r\n2\r\n$-1\r\n+PONG\r\n")
        #expect(try client.channel.readOutbound(as: ByteBuffer.self) == nil, "one write for the whole batch")
    }

    @Test func commandSplitAcrossReadsIsAnsweredOnceComplete() throws {
        let client = try Client(Self.makeContext())
        let frame = Client.command("SET", "key", "value")
        var replies = ""
        for byte in frame.utf8 { replies += try client.send(String(UnicodeScalar(byte))) }
        #expect(replies == "+OK\r\n")
        #expect(try client.send(Client.command("GET", "key")) == "$5\r\nvalue\r\n")
    }

    @Test func protocolErrorIsAnsweredThenTheConnectionCloses() throws {
        let context = Self.makeContext()
        let client = try Client(context)
        let reply = try client.send(Client.command("SET", "kept", "1") + "*1\r\n:oops\r\n" + Client.command("SET", "lost", "1"))
        #expect(reply == "+OK\r\n-ERR Protocol error: expected '$', got ':'\r\n")
        client.channel.embeddedEventLoop.run()
        #expect(!client.channel.isActive)
        // Another connection still works and sees the acknowledged write, not the later one.
        let other = try Client(context)
        #expect(try other.send(Client.command("EXISTS", "kept", "lost")) == ":1\r\n")
    }

    @Test func oversizedKeysAndValuesAreRefusedAndNothingIsStored() throws {
        let client = try Client(Self.makeContext())
        let longKey = String(repeating: "k", count: Limits.keyBytesMax + 1)
        let bigValue = String(repeating: "v", count: Limits.valueBytesMax + 1)
        #expect(try client.send(Client.command("SET", longKey, "v")) == "-ERR key too long (max 256 bytes)\r\n")
        #expect(try client.send(Client.command("SET", "k", bigValue)) == "-ERR value too large (max 1048576 bytes)\r\n")
        #expect(try client.send(Client.command("SET", "", "v")) == "-ERR empty keys are not allowed\r\n")
        #expect(try client.send(Client.command("DBSIZE")) == ":0\r\n")
        #expect(try client.send(Client.command("SET", "k", String(repeating: "v", count: Limits.valueBytesMax))) == "+OK\r\n")
    }

    /// A node whose strong engine is not running (only a test builds one like that) answers
    /// every command on strong keys with an error rather than applying it eventually.
    @Test func strongKeysWithoutAnEngineAnswerAnError() throws {
        let namespaces = [
            NamespaceConfig.defaultNamespace,
            NamespaceConfig(name: "config", prefix: Array("config:".utf8), consistency: .strong),
            NamespaceConfig(name: "profile", prefix: Array("profile:".utf8), strongKeys: [try GlobPattern("profile:*:email")]),
        ]
        let client = try Client(Self.makeContext(namespaces: namespaces))
        #expect(try client.send(Client.command("SET", "config:flags", "1")).hasPrefix("-ERR strong consistency is not configured"))
        #expect(try client.send(Client.command("GET", "profile:1:email")).hasPrefix("-ERR strong consistency is not configured"))
        #expect(try client.send(Client.command("MSET", "profile:1:email", "a", "x", "1")).hasPrefix("-ERR 'mset' mixes strong and eventual keys"))
        #expect(try client.send(Client.command("SET", "profile:1:name", "ann")) == "+OK\r\n")
        #expect(try client.send(Client.command("DBSIZE")) == ":1\r\n")
    }

    @Test func evictionDropsLRUNamespacesAndOOMProtectsTheOthers() throws {
        let namespaces = [
            NamespaceConfig.defaultNamespace,
            NamespaceConfig(name: "pinned", prefix: Array("pinned:".utf8), durability: .memory, eviction: .none),
        ]
        let entryBytes = Keyspace.accountedBytes(keyCount: 8, valueCount: 100)
        let context = Self.makeContext(namespaces: namespaces, maxmemory: entryBytes * 20)
        let client = try Client(context)
        let value = String(repeating: "x", count: 100)
        for index in 0..<10 { _ = try client.send(Client.command("SET", "pinned:\(index)", value)) }
        for index in 0..<100 { #expect(try client.send(Client.command("SET", "c" + String(repeating: "0", count: 7 - String(index).count) + String(index), value)) == "+OK\r\n") }
        #expect(context.database.usedBytes <= entryBytes * 21)
        #expect(entryBytes == 8 + 100 + Limits.entryOverheadBytes)
        #expect(context.database.namespaceCounters()[0].evictedKeys > 0)
        #expect(context.database.namespaceCounters()[1].keys == 10, "eviction: none keys are never evicted")
        // Fill the rest with pinned keys: once nothing evictable is left, writes get -OOM.
        var replies: [String] = []
        for index in 10..<40 { replies.append(try client.send(Client.command("SET", "pinned:\(index)", value))) }
        #expect(replies.last == "-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        #expect(try client.send(Client.command("GET", "pinned:0")) == "$100\r\n\(value)\r\n")
        #expect(try client.send(Client.command("DEL", "pinned:0")) == ":1\r\n", "deletes are allowed over the limit")
    }

    @Test func unknownCommandKeepsTheConnectionUsable() throws {
        let client = try Client(Self.makeContext())
        #expect(try client.send(Client.command("NOPE", "a", "b")) == "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n")
        #expect(try client.send("PING\r\n") == "+PONG\r\n")
    }

    @Test func resp3AfterHello() throws {
        let client = try Client(Self.makeContext())
        let hello = try client.send(Client.command("HELLO", "3"))
        #expect(hello.hasPrefix("%7\r\n$6\r\nserver\r\n$8\r\nmeridian\r\n"))
        #expect(try client.send(Client.command("GET", "missing")) == "_\r\n")
        #expect(try client.send(Client.command("CONFIG", "GET", "maxmemory")) == "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n")
    }
}
