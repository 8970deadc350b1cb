/// A key's bytes as a keyspace slot stores them: up to `inlineBytesMax` bytes inside the slot
/// itself, longer keys in an array of their own.
///
/// Why: a lookup compares the probed key with the stored one. An out-of-line key costs a
/// cache miss before the first byte can be compared; most keys (`session:8f3a...`,
/// `user:42:cart`) are short enough to sit in the slot, whose cache line the lookup reads anyway.
struct StoredKey: Sendable {
    /// Keys up to this many bytes are stored inline.
    static let inlineBytesMax = 32

    private var inline: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var heap: [UInt8] = []
    /// Number of bytes in the key.
    private(set) var count: Int = 0

    /// The empty key of a free slot.
    static let empty = StoredKey()

    private init() {}

    init(_ bytes: UnsafeRawBufferPointer) {
        count = bytes.count
        if count <= Self.inlineBytesMax {
            withUnsafeMutableBytes(of: &inline) { storage in
                storage.copyMemory(from: bytes)
            }
        } else {
            heap = Array(bytes)
        }
    }

    /// Calls `body` with the key's bytes.
    @inline(__always)
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if count <= Self.inlineBytesMax {
            var copy = inline
            return Swift.withUnsafeBytes(of: &copy) { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return heap.withUnsafeBytes(body)
    }

    /// The key's bytes as an array.
    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}
