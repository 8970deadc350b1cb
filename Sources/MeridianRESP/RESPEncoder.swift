import NIOCore

/// The protocol a connection speaks: RESP2 by default, RESP3 after `HELLO 3`.
public enum RESPVersion: Int, Sendable {
    case v2 = 2
    case v3 = 3
}

/// Reply writers. Replies are appended to one outbound buffer per read batch and flushed
/// once, so none of these allocate beyond the buffer's own growth.
extension ByteBuffer {
    private static let crlf: StaticString = "\r\n"

    /// `+text\r\n`
    @inlinable
    public mutating func writeSimpleString(_ text: StaticString) {
        writeInteger(UInt8(ascii: "+"))
        writeStaticString(text)
        writeCRLF()
    }

    /// `+text\r\n` for dynamic text; CR and LF become spaces, as Redis does, so that text
    /// quoting a client's bytes cannot forge further replies.
    public mutating func writeSimpleString(_ text: String) {
        writeInteger(UInt8(ascii: "+"))
        writeSingleLine(text)
        writeCRLF()
    }

    /// `-message\r\n`; the message starts with the error code (`ERR`, `WRONGTYPE`, `OOM`...).
    /// CR and LF in the message become spaces (see `writeSimpleString`).
    public mutating func writeErrorReply(_ message: String) {
        writeInteger(UInt8(ascii: "-"))
        writeSingleLine(message)
        writeCRLF()
    }

    private mutating func writeSingleLine(_ text: String) {
        for byte in text.utf8 {
            writeInteger(byte == 0x0D || byte == 0x0A ? UInt8(ascii: " ") : byte)
        }
    }

    /// `-message\r\n` for constant messages.
    @inlinable
    public mutating func writeErrorReply(_ message: StaticString) {
        writeInteger(UInt8(ascii: "-"))
        writeStaticString(message)
        writeCRLF()
    }

    /// `:n\r\n`
    @inlinable
    public mutating func writeIntegerReply(_ value: Int) {
        writeInteger(UInt8(ascii: ":"))
        writeDecimal(value)
        writeCRLF()
    }

    /// `$len\r\nbytes\r\n`
    @inlinable
    public mutating func writeBulkString(_ bytes: UnsafeRawBufferPointer) {
        reserveCapacity(minimumWritableBytes: bytes.count + 16)
        writeInteger(UInt8(ascii: "$"))
        writeDecimal(bytes.count)
        writeCRLF()
        writeBytes(bytes)
        writeCRLF()
    }

    /// `$len\r\nbytes\r\n`
    @inlinable
    public mutating func writeBulkString(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { writeBulkString($0) }
    }

    /// `$len\r\nbytes\r\n`
    @inlinable
    public mutating func writeBulkString(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { writeBulkString($0) }
    }

    /// `$len\r\ntext\r\n`
    public mutating func writeBulkString(_ text: String) {
        var copy = text
        copy.withUTF8 { writeBulkString(UnsafeRawBufferPointer($0)) }
    }

    /// The null reply: `$-1\r\n` in RESP2, `_\r\n` in RESP3.
    @inlinable
    public mutating func writeNull(_ version: RESPVersion) {
        if version == .v3 {
            writeStaticString("_\r\n")
        } else {
            writeStaticString("$-1\r\n")
        }
    }

    /// `*count\r\n`
    @inlinable
    public mutating func writeArrayHeader(_ count: Int) {
        writeInteger(UInt8(ascii: "*"))
        writeDecimal(count)
        writeCRLF()
    }

    /// `%pairs\r\n` in RESP3; a flat array of `2 * pairs` elements in RESP2.
    public mutating func writeMapHeader(_ pairs: Int, _ version: RESPVersion) {
        if version == .v3 {
            writeInteger(UInt8(ascii: "%"))
            writeDecimal(pairs)
            writeCRLF()
        } else {
            writeArrayHeader(pairs * 2)
        }
    }

    /// `~count\r\n` in RESP3; an array in RESP2.
    public mutating func writeSetHeader(_ count: Int, _ version: RESPVersion) {
        if version == .v3 {
            writeInteger(UInt8(ascii: "~"))
            writeDecimal(count)
            writeCRLF()
        } else {
            writeArrayHeader(count)
        }
    }

    /// A verbatim text (`=len\r\ntxt:...`) in RESP3; a bulk string in RESP2. INFO and
    /// CLIENT INFO/LIST reply this way, as Redis does.
    public mutating func writeVerbatimText(_ text: String, _ version: RESPVersion) {
        if version == .v3 {
            let utf8 = text.utf8
            writeInteger(UInt8(ascii: "="))
            writeDecimal(utf8.count + 4)
            writeCRLF()
            writeStaticString("txt:")
            writeString(text)
            writeCRLF()
        } else {
            writeBulkString(text)
        }
    }

    /// `\r\n`
    @inlinable
    public mutating func writeCRLF() {
        writeInteger(UInt16(0x0D0A), endianness: .big)
    }

    /// Writes a signed decimal integer without allocating.
    @inlinable
    public mutating func writeDecimal(_ value: Int) {
        if value >= 0 && value < 10 {
            writeInteger(UInt8(truncatingIfNeeded: value) &+ 48)
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch on the stack
        withUnsafeMutableBytes(of: &digits) { scratch in
            var magnitude = value.magnitude
            var position = scratch.count
            repeat {
                position -= 1
                scratch[position] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 48
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                position -= 1
                scratch[position] = UInt8(ascii: "-")
            }
            writeBytes(UnsafeRawBufferPointer(rebasing: scratch[position...]))
        }
    }
}
