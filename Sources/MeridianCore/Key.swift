import NIOCore

/// A key as its bytes, for looking keys up and inserting them: it wraps a slice of the
/// connection's read buffer, so finding a key allocates nothing. A `Keyspace` stores its own
/// exact copy of a key's bytes on insert.
public struct Key: Hashable, Sendable, CustomStringConvertible {
    /// The key's bytes (the readable bytes of the buffer).
    public var bytes: ByteBuffer

    /// Wraps `bytes` without copying.
    @inlinable
    public init(borrowing bytes: ByteBuffer) { self.bytes = bytes }

    /// A key made from bytes, for tests and tools.
    public init<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        self.bytes = ByteBuffer(bytes: Array(bytes))
    }

    /// A key made from UTF-8 text, for tests and tools.
    public init(_ string: String) { self.bytes = ByteBuffer(string: string) }

    /// Number of bytes in the key.
    @inlinable
    public var count: Int { bytes.readableBytes }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeReadableBytes { hasher.combine(bytes: $0) }
    }

    @inlinable
    public static func == (lhs: Key, rhs: Key) -> Bool { lhs.bytes == rhs.bytes }

    /// The key's bytes as an array, for tools and replies that need an owned copy.
    public var byteArray: [UInt8] { Array(bytes.readableBytesView) }

    public var description: String { String(decoding: bytes.readableBytesView, as: UTF8.self) }
}
