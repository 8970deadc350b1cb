import CZstd

/// Streaming zstd for files of any size in constant memory (the audit export): one frame,
/// with zstd's content checksum, fed and drained in pieces.
public final class ZstdCompressor {
    private let context: OpaquePointer
    private var output = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())

    public init(level: Int32 = Zstd.levelDefault) {
        context = ZSTD_createCCtx()
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, max(1, min(level, ZSTD_maxCLevel())))
        _ = ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `bytes`; returns what zstd has ready so far (possibly nothing).
    public func compress(_ bytes: [UInt8]) -> [UInt8] { run(bytes, end: false) }

    /// Ends the frame; returns the rest. The compressor is done afterwards.
    public func finish() -> [UInt8] { run([], end: true) }

    private func run(_ bytes: [UInt8], end: Bool) -> [UInt8] {
        var result: [UInt8] = []
        bytes.withUnsafeBytes { source in
            var input = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            while true {
                let remaining: Int = output.withUnsafeMutableBytes { destination in
                    var out = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
                    let code = ZSTD_compressStream2(context, &out, &input, end ? ZSTD_e_end : ZSTD_e_continue)
                    precondition(ZSTD_isError(code) == 0, "zstd stream compress failed: \(String(cString: ZSTD_getErrorName(code)))")
                    result.append(contentsOf: UnsafeRawBufferPointer(rebasing: destination[0..<out.pos]))
                    return code
                }
                if end ? remaining == 0 : input.pos == input.size { break }
            }
        }
        return result
    }
}

/// Streaming zstd decompression: a frame (or several, one after another) fed in pieces;
/// `finish` says whether the input ended at a frame's end.
public final class ZstdDecompressor {
    private let context: OpaquePointer
    private var output = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
    /// zstd's hint after the last call: 0 once a frame is complete.
    private var lastHint = 0
    private var sawInput = false

    public init() {
        context = ZSTD_createDCtx()
    }

    deinit { ZSTD_freeDCtx(context) }

    /// Decompresses `bytes`; returns the bytes they complete.
    public func decompress(_ bytes: [UInt8]) throws(WireError) -> [UInt8] {
        var result: [UInt8] = []
        try decompress(bytes) { result += $0 }
        return result
    }

    /// Decompresses `bytes`, handing the output to `consume` one buffer (at most 128 KiB) at a
    /// time, so that a caller can bound what it keeps however much a piece expands.
    public func decompress(_ bytes: [UInt8], _ consume: (ArraySlice<UInt8>) throws(WireError) -> Void) throws(WireError) {
        if !bytes.isEmpty { sawInput = true }
        var failure: WireError?
        bytes.withUnsafeBytes { source in
            var input = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            while true {
                var produced = 0
                let code: Int = output.withUnsafeMutableBytes { destination in
                    var out = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
                    let code = ZSTD_decompressStream(context, &out, &input)
                    produced = out.pos
                    return code
                }
                if ZSTD_isError(code) != 0 {
                    failure = .compression(String(cString: ZSTD_getErrorName(code)))
                    return
                }
                if produced > 0 {
                    do throws(WireError) {
                        try consume(output[0..<produced])
                    } catch {
                        failure = error
                        return
                    }
                }
                lastHint = code
                // A frame ended and the input is used up: stop here (another call would start
                // reading a next frame's header and forget that this one was complete).
                if code == 0 && input.pos == input.size { return }
                // Done with this piece once the input is used up and zstd has no more output.
                if input.pos == input.size && produced < output.count { return }
            }
        }
        if let failure { throw failure }
    }

    /// Checks that the input ended at the end of a frame (not truncated).
    public func finish() throws(WireError) {
        guard sawInput, lastHint == 0 else { throw .compression("the compressed input ends inside a frame (truncated)") }
    }
}
