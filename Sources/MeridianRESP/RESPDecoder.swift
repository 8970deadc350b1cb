import MeridianCore
import NIOCore

/// A framing error in a client's byte stream. Its `message` is the exact reply sent before
/// the connection is closed (Redis's wording).
public enum RESPProtocolError: Error, Equatable, Sendable {
    case invalidMultibulkLength
    case invalidBulkLength
    case expectedDollar(got: UInt8)
    case tooBigMultibulkCountString
    case tooBigBulkCountString
    case tooBigInlineRequest
    case unbalancedQuotes
    case queryBufferLimitExceeded

    /// The error reply, without the leading `-` and the trailing CRLF.
    public var message: String {
        switch self {
        case .invalidMultibulkLength: return "ERR Protocol error: invalid multibulk length"
        case .invalidBulkLength: return "ERR Protocol error: invalid bulk length"
        case .expectedDollar(let got): return "ERR Protocol error: expected '$', got '\(Character(Unicode.Scalar(got)))'"
        case .tooBigMultibulkCountString: return "ERR Protocol error: too big mbulk count string"
        case .tooBigBulkCountString: return "ERR Protocol error: too big bulk count string"
        case .tooBigInlineRequest: return "ERR Protocol error: too big inline request"
        case .unbalancedQuotes: return "ERR Protocol error: unbalanced quotes in request"
        case .queryBufferLimitExceeded:
            return "ERR Protocol error: query buffer limit exceeded (max \(Limits.queryBufferBytesMax) bytes)"
        }
    }
}

/// Splits a client's byte stream into commands: RESP multibulk arrays (`*2\r\n$3\r\nGET...`)
/// and inline commands (`PING\r\n`), as Redis does.
///
/// The decoder is resumable: a command that arrives in pieces is parsed once, not again from
/// its start on every read, and nothing is allocated for a length before its bytes arrived
/// (a header announcing a million arguments costs nothing until they come). Progress is
/// kept as offsets relative to the buffer's reader index, which only moves when a command is
/// complete; the caller may therefore compact or extend the buffer between calls.
///
/// Arguments are returned as slices of the input buffer: no copy and no allocation beyond
/// reference counting. The caller must drop them before it writes more bytes into the same
/// buffer, or the write would copy the buffer.
public struct RESPCommandDecoder: Sendable {
    /// Arguments of the multibulk being parsed, as (offset, length) from the reader index.
    private var argumentBounds: [(offset: Int, length: Int)] = []
    /// Arguments announced by the multibulk header being parsed; -1 when between commands.
    private var expectedArguments = -1
    /// Where parsing resumes, relative to the reader index.
    private var resumeOffset = 0

    public init() {}

    /// Whether a command is partly parsed (the buffer must be kept for it).
    public var isMidCommand: Bool { expectedArguments >= 0 }

    /// Parses the next complete command from `buffer` into `arguments` (replacing its contents)
    /// and moves the buffer's reader index past it. Returns false when more bytes are needed.
    public mutating func decode(_ buffer: inout ByteBuffer, into arguments: inout [ByteBuffer]) throws(RESPProtocolError) -> Bool {
        while true {
            switch try step(buffer) {
            case .needMoreData:
                if buffer.readableBytes > Limits.queryBufferBytesMax { throw .queryBufferLimitExceeded }
                return false
            case .emptyCommand(let consumed):
                buffer.moveReaderIndex(forwardBy: consumed)
                reset()
            case .multibulk(let consumed):
                arguments.removeAll(keepingCapacity: true)
                let base = buffer.readerIndex
                for bound in argumentBounds {
                    arguments.append(buffer.getSlice(at: base + bound.offset, length: bound.length)!)
                }
                buffer.moveReaderIndex(forwardBy: consumed)
                reset()
                return true
            case .inline(let consumed, let parsed):
                buffer.moveReaderIndex(forwardBy: consumed)
                reset()
                if parsed.isEmpty { continue }
                arguments.removeAll(keepingCapacity: true)
                for argument in parsed { arguments.append(ByteBuffer(bytes: argument)) }
                return true
            }
        }
    }

    private enum Step {
        case needMoreData
        case emptyCommand(consumed: Int)
        case multibulk(consumed: Int)
        case inline(consumed: Int, arguments: [[UInt8]])
    }

    private mutating func reset() {
        expectedArguments = -1
        resumeOffset = 0
        argumentBounds.removeAll(keepingCapacity: true)
    }

    private mutating func step(_ buffer: ByteBuffer) throws(RESPProtocolError) -> Step {
        try buffer.withUnsafeReadableBytes { (bytes: UnsafeRawBufferPointer) throws(RESPProtocolError) -> Step in
            let count = bytes.count
            if expectedArguments < 0 {
                guard count > 0 else { return .needMoreData }
                if bytes[0] != UInt8(ascii: "*") { return try Self.parseInline(bytes) }
                guard let cr = Self.findCR(bytes, from: 1) else {
                    if count > Limits.inlineBytesMax { throw .tooBigMultibulkCountString }
                    return .needMoreData
                }
                guard cr + 1 < count else { return .needMoreData }
                guard let announced = Self.parseInteger(bytes, from: 1, to: cr), announced <= Limits.argumentCountMax else {
                    throw .invalidMultibulkLength
                }
                if announced <= 0 { return .emptyCommand(consumed: cr + 2) }
                expectedArguments = announced
                resumeOffset = cr + 2
            }
            while argumentBounds.count < expectedArguments {
                let start = resumeOffset
                guard start < count else { return .needMoreData }
                guard bytes[start] == UInt8(ascii: "$") else { throw .expectedDollar(got: bytes[start]) }
                guard let cr = Self.findCR(bytes, from: start + 1) else {
                    if count - start > Limits.inlineBytesMax { throw .tooBigBulkCountString }
                    return .needMoreData
                }
                guard let length = Self.parseInteger(bytes, from: start + 1, to: cr), length >= 0, length <= Limits.bulkBytesMax else {
                    throw .invalidBulkLength
                }
                let dataStart = cr + 2
                let end = dataStart + length + 2
                guard end <= count else { return .needMoreData }
                argumentBounds.append((dataStart, length))
                resumeOffset = end
            }
            return .multibulk(consumed: resumeOffset)
        }
    }

    /// Index of the first `\r` at or after `start`, or nil.
    @inline(__always)
    private static func findCR(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\r") { return index }
            index += 1
        }
        return nil
    }

    /// Parses a strict decimal integer (optional `-`, digits, no leading zeros) in `[from, to)`.
    @inline(__always)
    static func parseInteger(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        var index = from
        guard index < to else { return nil }
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
            guard index < to else { return nil }
        }
        guard to - index <= 18 else { return nil }  // stays far from overflow
        if bytes[index] == UInt8(ascii: "0") && to - index > 1 { return nil }
        var value = 0
        while index < to {
            let digit = Int(bytes[index]) &- 48
            guard digit >= 0 && digit <= 9 else { return nil }
            value = value * 10 + digit
            index += 1
        }
        return negative ? -value : value
    }

    /// Parses one inline command line (ends at `\n`, an optional `\r` before it is dropped).
    private static func parseInline(_ bytes: UnsafeRawBufferPointer) throws(RESPProtocolError) -> Step {
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            if bytes.count > Limits.inlineBytesMax { throw .tooBigInlineRequest }
            return .needMoreData
        }
        if newline > Limits.inlineBytesMax { throw .tooBigInlineRequest }
        var end = newline
        if end > 0 && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = UnsafeRawBufferPointer(rebasing: bytes[0..<end])
        guard let arguments = InlineSplitter.split(line) else { throw .unbalancedQuotes }
        return .inline(consumed: newline + 1, arguments: arguments)
    }
}

/// Splits an inline command line into arguments with Redis's `sdssplitargs` rules: spaces
/// separate, double quotes allow `\n \r \t \b \a \\ \" \xHH` escapes, single quotes allow `\'`,
/// and a closing quote must be followed by a space or the end of the line.
enum InlineSplitter {
    static func split(_ line: UnsafeRawBufferPointer) -> [[UInt8]]? {
        var result: [[UInt8]] = []
        var index = 0
        let count = line.count
        func isSpace(_ byte: UInt8) -> Bool {
            byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x0B || byte == 0x0C
        }
        while true {
            while index < count && isSpace(line[index]) { index += 1 }
            if index >= count { return result }
            var current: [UInt8] = []
            var inDouble = false
            var inSingle = false
            var done = false
            while !done {
                if inDouble {
                    guard index < count else { return nil }
                    let byte = line[index]
                    if byte == UInt8(ascii: "\\") && index + 3 < count && line[index + 1] == UInt8(ascii: "x"),
                       let high = hexValue(line[index + 2]), let low = hexValue(line[index + 3]) {
                        current.append(high << 4 | low)
                        index += 3
                    } else if byte == UInt8(ascii: "\\") && index + 1 < count {
                        index += 1
                        switch line[index] {
                        case UInt8(ascii: "n"): current.append(0x0A)
                        case UInt8(ascii: "r"): current.append(0x0D)
                        case UInt8(ascii: "t"): current.append(0x09)
                        case UInt8(ascii: "b"): current.append(0x08)
                        case UInt8(ascii: "a"): current.append(0x07)
                        default: current.append(line[index])
                        }
                    } else if byte == UInt8(ascii: "\"") {
                        if index + 1 < count && !isSpace(line[index + 1]) { return nil }
                        done = true
                    } else {
                        current.append(byte)
                    }
                } else if inSingle {
                    guard index < count else { return nil }
                    let byte = line[index]
                    if byte == UInt8(ascii: "\\") && index + 1 < count && line[index + 1] == UInt8(ascii: "'") {
                        index += 1
                        current.append(UInt8(ascii: "'"))
                    } else if byte == UInt8(ascii: "'") {
                        if index + 1 < count && !isSpace(line[index + 1]) { return nil }
                        done = true
                    } else {
                        current.append(byte)
                    }
                } else {
                    if index >= count { done = true; continue }
                    let byte = line[index]
                    if isSpace(byte) {
                        done = true
                    } else if byte == UInt8(ascii: "\"") {
                        inDouble = true
                    } else if byte == UInt8(ascii: "'") {
                        inSingle = true
                    } else {
                        current.append(byte)
                    }
                }
                if index < count { index += 1 }
            }
            result.append(current)
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
