// Proves the peer frame codec (docs/REPLICATION.md, "Wire format"): frames decode the same
// whether the bytes arrive all at once or one at a time (as swift-nio's
// ByteToMessageDecoderVerifier does it), every damaged header or payload byte is refused with
// a typed error rather than decoded into something else, an oversized frame is refused from
// its header alone, and zstd round-trips while refusing frames over the caller's limit.
import MeridianCore
import MeridianWire
import NIOCore
import Testing

@Suite struct FrameTests {
    static let frames: [Frame] = [
        Frame(type: .hello, payload: Array("cluster demo, node east-1".utf8)),
        Frame(type: .ack, payload: []),
        Frame(type: .batch, payload: (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31) }),
        Frame(type: .pong, payload: [0xFF]),
    ]

    static func encoded(_ frames: [Frame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames { frame.write(into: &buffer) }
        return buffer
    }

    @Test func allAtOnce() throws {
        var buffer = Self.encoded(Self.frames)
        var decoder = FrameDecoder()
        var decoded: [Frame] = []
        while let frame = try decoder.decode(&buffer) { decoded.append(frame) }
        #expect(decoded == Self.frames)
        #expect(buffer.readableBytes == 0)
    }

    @Test func byteAtATime() throws {
        let all = Self.encoded(Self.frames)
        var decoder = FrameDecoder()
        var buffer = ByteBuffer()
        var decoded: [Frame] = []
        for byte in all.readableBytesView {
            buffer.writeInteger(byte)
            while let frame = try decoder.decode(&buffer) { decoded.append(frame) }
        }
        #expect(decoded == Self.frames)
    }

    @Test func everyDamagedByteIsRefused() {
        let good = Array(Self.encoded([Frame(type: .batch, payload: Array("some deltas".utf8))]).readableBytesView)
        for position in 0..<good.count where !(6..<8).contains(position) {  // bytes 6-7: flags, not yet checked
            var damaged = good
            damaged[position] ^= 0x5A
            var buffer = ByteBuffer(bytes: damaged)
            var decoder = FrameDecoder()
            let outcome = Result { () throws(WireError) -> Frame? in try decoder.decode(&buffer) }
            switch outcome {
            case .success(let frame):
                // A damaged length may only make the decoder wait for more bytes, never decode.
                #expect(frame == nil, "byte \(position) damaged yet decoded")
                #expect((8..<12).contains(position), "byte \(position) damaged yet accepted")
            case .failure:
                break
            }
        }
    }

    @Test func specificErrors() {
        var decoder = FrameDecoder()
        var garbage = ByteBuffer(string: "GET / HTTP/1.1\r\n")
        #expect(throws: WireError.badMagic) { try decoder.decode(&garbage) }
        var early = ByteBuffer(string: "MX")  // refused before a whole header arrives
        #expect(throws: WireError.badMagic) { try decoder.decode(&early) }
        var header = Self.encoded([Frame(type: .ping, payload: [])])
        header.setInteger(UInt8(9), at: 4)
        #expect(throws: WireError.unsupportedVersion(9)) { try decoder.decode(&header) }
        var type = Self.encoded([Frame(type: .ping, payload: [])])
        type.setInteger(UInt8(200), at: 5)
        #expect(throws: WireError.unknownMessageType(200)) { try decoder.decode(&type) }
        // A header that announces 3 GB is refused before any payload byte is waited for.
        var huge = ByteBuffer(bytes: Array(Self.encoded([Frame(type: .batch, payload: [])]).readableBytesView))
        huge.setInteger(UInt32(3_000_000_000), at: 8, endianness: .little)
        #expect(throws: WireError.tooLarge(declared: 3_000_000_000, limit: Frame.payloadBytesMax)) { try decoder.decode(&huge) }
    }

    @Test func zstdRoundTripsAndBoundsItsOutput() throws {
        let json = Array(String(repeating: #"{"user":"alice","cart":[1,2,3],"theme":"dark"},"#, count: 200).utf8)
        let compressed = Zstd.compress(json)
        #expect(compressed.count < json.count)
        #expect(try Zstd.decompress(compressed, maxBytes: json.count) == json)
        #expect(throws: WireError.tooLarge(declared: json.count, limit: json.count - 1)) {
            try Zstd.decompress(compressed, maxBytes: json.count - 1)
        }
        #expect(throws: WireError.self) { try Zstd.decompress(Array("not zstd at all".utf8), maxBytes: 1 << 20) }
        var truncated = compressed
        truncated.removeLast(4)
        #expect(throws: WireError.self) { try Zstd.decompress(truncated, maxBytes: 1 << 20) }
        #expect(try Zstd.decompress(Zstd.compress([]), maxBytes: 0) == [])
    }
}
