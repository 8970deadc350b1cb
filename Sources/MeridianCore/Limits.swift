/// Hard limits of a Meridian node. Every input that crosses a trust boundary is checked
/// against one of these before anything is allocated for it, and each has its unit last.
public enum Limits {
    /// Longest key accepted by any command.
    public static let keyBytesMax = 256
    /// Largest value accepted by any command (1 MiB).
    public static let valueBytesMax = 1_048_576
    /// Largest single RESP bulk string the decoder buffers. It is larger than `valueBytesMax`
    /// on purpose: a value slightly too large is answered with a clear error and the
    /// connection stays usable; only a bulk beyond this bound is a protocol error.
    public static let bulkBytesMax = 8 * 1_048_576
    /// Most arguments one command may carry (Redis accepts up to 2^31; nobody needs that).
    public static let argumentCountMax = 1_048_576
    /// Longest inline (telnet-style) command line, as Redis's PROTO_INLINE_MAX_SIZE.
    public static let inlineBytesMax = 64 * 1024
    /// Most bytes one connection may have buffered for a command that is not complete yet.
    public static let queryBufferBytesMax = 64 * 1_048_576
    /// Longest glob pattern accepted by KEYS, SCAN MATCH and `strong_keys`.
    public static let patternBytesMax = 1024
    /// Most tokens (literals, `?`, classes, collapsed `*` runs) a compiled glob may hold: as
    /// many as its bytes, so that any key (256 bytes) can be written as a pattern.
    public static let patternTokensMax = 1024
    /// Largest reply one command may produce (MGET of many large values, KEYS over a large
    /// keyspace). Beyond it the command answers an error instead of buffering the reply; the
    /// output buffer of a connection could not hold 4 GiB anyway.
    public static let replyBytesMax = 256 * 1_048_576
    /// Largest COUNT hint honoured by one SCAN call; larger hints are clamped.
    public static let scanCountMax = 100_000
    /// Bytes of bookkeeping charged to every entry on top of its key and value bytes: the
    /// slot, its share of the hash index and side indexes, the value array's header and
    /// allocator rounding, and the arrays' growth slack. Calibrated so that `maxmemory`
    /// bounds the process's resident memory: measured at 195–197 bytes per entry over 1 M
    /// keys (docs/PERFORMANCE.md, "Memory per key").
    public static let entryOverheadBytes = 200
    /// Default most client connections at once (`maxclients`, as Redis's default).
    public static let clientsMaxDefault = 10_000
    /// Longest client name accepted by CLIENT SETNAME / HELLO SETNAME.
    public static let clientNameBytesMax = 256
}

/// Why a key or value was refused. The descriptions are the exact client replies.
public enum LimitError: Error, Equatable, Sendable, CustomStringConvertible {
    case keyEmpty
    case keyTooLong
    case valueTooLarge

    public var description: String {
        switch self {
        case .keyEmpty: return "ERR empty keys are not allowed"
        case .keyTooLong: return "ERR key too long (max \(Limits.keyBytesMax) bytes)"
        case .valueTooLarge: return "ERR value too large (max \(Limits.valueBytesMax) bytes)"
        }
    }
}

extension Limits {
    /// Checks a key's length against `1...keyBytesMax`.
    @inlinable
    public static func checkKey(byteCount: Int) throws(LimitError) {
        if byteCount == 0 { throw .keyEmpty }
        if byteCount > keyBytesMax { throw .keyTooLong }
    }

    /// Checks a value's length against `0...valueBytesMax`.
    @inlinable
    public static func checkValue(byteCount: Int) throws(LimitError) {
        if byteCount > valueBytesMax { throw .valueTooLarge }
    }
}
