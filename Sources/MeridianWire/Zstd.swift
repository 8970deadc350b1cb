import CZstd

/// zstd compression of delta batches (docs/REPLICATION.md). Every call is one-shot and
/// bounded: decompression refuses frames that do not declare their size or declare more
/// than the caller allows, before allocating.
public enum Zstd {
    /// The default level: a good ratio at a few hundred MB/s.
    public static let levelDefault: Int32 = 3

    /// `bytes` compressed at `level` (clamped to zstd's range), with the content size in
    /// the frame header.
    public static func compress(_ bytes: [UInt8], level: Int32 = levelDefault) -> [UInt8] {
        let clamped = max(1, min(level, ZSTD_maxCLevel()))
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let written = output.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                ZSTD_compress(destination.baseAddress, destination.count, source.baseAddress, source.count, clamped)
            }
        }
        // Compressing into a buffer of ZSTD_compressBound bytes cannot fail.
        precondition(ZSTD_isError(written) == 0, "zstd compress failed: \(String(cString: ZSTD_getErrorName(written)))")
        output.removeSubrange(written...)
        return output
    }

    /// Decompresses one zstd frame of at most `maxBytes` declared content.
    public static func decompress(_ bytes: [UInt8], maxBytes: Int) throws(WireError) -> [UInt8] {
        let declared = bytes.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR are the two largest values.
        guard declared < UInt64.max - 1 else { throw .compression("not a zstd frame with a declared size") }
        guard declared <= UInt64(maxBytes) else { throw .tooLarge(declared: Int(clamping: declared), limit: maxBytes) }
        var output = [UInt8](repeating: 0, count: Int(declared))
        let written = output.withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { source in
                ZSTD_decompress(destination.baseAddress, destination.count, source.baseAddress, source.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw .compression(String(cString: ZSTD_getErrorName(written))) }
        guard written == Int(declared) else { throw .compression("frame declared \(declared) bytes and held \(written)") }
        return output
    }
}
