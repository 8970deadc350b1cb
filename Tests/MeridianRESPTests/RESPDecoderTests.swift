// Proves the command decoder frames RESP multibulk and inline commands identically whether
// the bytes arrive all at once or one byte at a time (swift-nio's ByteToMessageDecoderVerifier
// idea), answers each malformed frame with Redis's exact protocol error, bounds what it
// buffers before allocating, and survives random garbage without crashing (a small fuzzer).
import MeridianCore
import MeridianRESP
import NIOCore
import Testing

@Suite struct RESPDecoderTests {
    /// Decodes everything in `chunks`, fed one chunk at a time, the way the connection does.
    static func decodeAll(_ chunks: [[UInt8]]) throws(RESPProtocolError) -> [[String]] {
        var decoder = RESPCommandDecoder()
        var pending: ByteBuffer?
        var arguments: [ByteBuffer] = []
        var commands: [[String]] = []
        for chunk in chunks {
            var incoming = ByteBuffer(bytes: chunk)
            if pending == nil { pending = incoming } else { pending!.writeBuffer(&incoming) }
            while try decoder.decode(&pending!, into: &arguments) {
                commands.append(arguments.map { String(decoding: $0.readableBytesView, as: UTF8.self) })
                arguments.removeAll()
            }
            if pending!.readableBytes == 0 { pending = nil } else if !decoder.isMidCommand { pending!.discardReadBytes() }
        }
        return commands
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    static let sample = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
        + "PING\r\n"
        + "*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
        + "set \"a b\" 'c\\'d' \"\\x41\\n\"\n"
        + "*0\r\n"
        + "\r\n"
        + "*1\r\n$4\r\nPING\r\n"

    static let expected: [[String]] = [["SET", "key", "value"], ["PING"], ["GET", ""], ["set", "a b", "c'd", "A\n"], ["PING"]]

    @Test func allAtOnce() throws {
        #expect(try Self.decodeAll([Self.bytes(Self.sample)]) == Self.expected)
    }

    @Test func byteAtATime() throws {
        #expect(try Self.decodeAll(Self.bytes(Self.sample).map { [$0] }) == Self.expected)
    }

    @Test func randomChunking() throws {
        var generator = SplitMix64(seed: 5)
        let all = Self.bytes(Self.sample)
        for _ in 0..<200 {
            var chunks: [[UInt8]] = []
            var index = 0
            while index < all.count {
                let size = Int.random(in: 1...9, using: &generator)
                chunks.append(Array(all[index..<min(all.count, index + size)]))
                index += size
            }
            #expect(try Self.decodeAll(chunks) == Self.expected)
        }
    }

    @Test func binarySafeBulkStrings() throws {
        let value: [UInt8] = [0, 13, 10, 255, 36, 42]
        let frame = Self.bytes("*2\r\n$4\r\nECHO\r\n$6\r\n") + value + Self.bytes("\r\n")
        var decoder = RESPCommandDecoder()
        var buffer = ByteBuffer(bytes: frame)
        var arguments: [ByteBuffer] = []
        #expect(try decoder.decode(&buffer, into: &arguments))
        #expect(Array(arguments[1].readableBytesView) == value)
    }

    @Test(arguments: [
        ("*abc\r\n", RESPProtocolError.invalidMultibulkLength),
        ("*2000000\r\n", .invalidMultibulkLength),
        ("*1\r\n$-5\r\n", .invalidBulkLength),
        ("*1\r\n$99999999999\r\n", .invalidBulkLength),
        ("*1\r\n$\(Limits.bulkBytesMax + 1)\r\n", .invalidBulkLength),
        ("*1\r\n:5\r\n", .expectedDollar(got: UInt8(ascii: ":"))),
        ("set \"unbalanced\n", .unbalancedQuotes),
        ("set \"a\"b\n", .unbalancedQuotes),
    ])
    func protocolErrors(frame: String, error: RESPProtocolError) {
        #expect(throws: error) { try Self.decodeAll([Self.bytes(frame)]) }
        #expect(throws: error) { try Self.decodeAll(Self.bytes(frame).map { [$0] }) }
    }

    @Test func errorMessagesAreRedisWording() {
        #expect(RESPProtocolError.invalidMultibulkLength.message == "ERR Protocol error: invalid multibulk length")
        #expect(RESPProtocolError.invalidBulkLength.message == "ERR Protocol error: invalid bulk length")
        #expect(RESPProtocolError.expectedDollar(got: UInt8(ascii: ":")).message == "ERR Protocol error: expected '$', got ':'")
        #expect(RESPProtocolError.tooBigInlineRequest.message == "ERR Protocol error: too big inline request")
        #expect(RESPProtocolError.unbalancedQuotes.message == "ERR Protocol error: unbalanced quotes in request")
    }

    @Test func inlineLineIsBounded() {
        let line = [UInt8](repeating: UInt8(ascii: "a"), count: Limits.inlineBytesMax + 1)
        #expect(throws: RESPProtocolError.tooBigInlineRequest) { try Self.decodeAll([line]) }
    }

    @Test func headerAnnouncingManyArgumentsAllocatesNothingUpFront() throws {
        // A million announced arguments with none sent: the decoder just waits.
        #expect(try Self.decodeAll([Self.bytes("*1000000\r\n$1\r\na\r\n")]).isEmpty)
    }

    @Test func partialCommandsAreBoundedByTheQueryBufferLimit() {
        // Many complete bulk strings of a command that never ends.
        let bulk = Self.bytes("$\(Limits.bulkBytesMax)\r\n") + [UInt8](repeating: 120, count: Limits.bulkBytesMax) + Self.bytes("\r\n")
        let chunks = [Self.bytes("*100\r\n")] + Array(repeating: bulk, count: Limits.queryBufferBytesMax / Limits.bulkBytesMax + 1)
        #expect(throws: RESPProtocolError.queryBufferLimitExceeded) { try Self.decodeAll(chunks) }
    }

    @Test func fuzzRandomBytesNeverCrash() {
        var generator = SplitMix64(seed: 77)
        let alphabet = Self.bytes("*$\r\n0123456789-abc \"'\\x")
        for _ in 0..<5_000 {
            let length = Int.random(in: 0...64, using: &generator)
            let input = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            // Either frames decode or a protocol error is thrown; nothing else may happen.
            _ = try? Self.decodeAll([input])
            _ = try? Self.decodeAll(input.map { [$0] })
        }
    }

    @Test func encoderWritesIntegersAndNulls() {
        var out = ByteBuffer()
        out.writeIntegerReply(0)
        out.writeIntegerReply(-1234567890123)
        out.writeIntegerReply(Int.min)
        out.writeNull(.v2)
        out.writeNull(.v3)
        out.writeMapHeader(2, .v2)
        out.writeMapHeader(2, .v3)
        out.writeVerbatimText("hi", .v3)
        #expect(String(buffer: out) == ":0\r\n:-1234567890123\r\n:\(Int.min)\r\n$-1\r\n_\r\n*4\r\n%2\r\n=6\r\ntxt:hi\r\n")
    }

    @Test func commandLookupIsCaseInsensitive() {
        #expect(Self.bytes("gEt").withUnsafeBytes { CommandTable.lookup($0) } == .get)
        #expect(Self.bytes("INCRBYFLOAT").withUnsafeBytes { CommandTable.lookup($0) } == .incrbyfloat)
        #expect(Self.bytes("nosuch").withUnsafeBytes { CommandTable.lookup($0) } == nil)
        #expect(Self.bytes("").withUnsafeBytes { CommandTable.lookup($0) } == nil)
        for spec in CommandTable.specs {
            #expect(Self.bytes(spec.name).withUnsafeBytes { CommandTable.lookup($0) } == spec.id)
        }
    }
}
