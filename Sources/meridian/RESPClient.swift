import Glibc

/// A small blocking RESP client for the command line's own requests (`meridian export`):
/// one connection, one command at a time, replies parsed whole.
final class RESPClient {
    enum Reply: Equatable {
        case simple(String)
        case error(String)
        case integer(Int64)
        case bulk([UInt8]?)
        case array([Reply]?)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private let socket: Int32
    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// Longest bulk string accepted (a chunk of an export is about 1 MiB compressed at most).
    static let bulkBytesMax = 512 << 20

    /// Connects to `host:port` (a name or an address, IPv4 or IPv6).
    init(address: String) throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw Failure(description: "\(address): expected HOST:PORT")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0, let first = results else {
            throw Failure(description: "\(address): cannot resolve: \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(results) }
        var lastError = "no address"
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            let fd = Glibc.socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0 {
                if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                    socket = fd
                    return
                }
                lastError = String(cString: strerror(errno))
                close(fd)
            }
            candidate = info.pointee.ai_next
        }
        throw Failure(description: "\(address): cannot connect: \(lastError)")
    }

    deinit { close(socket) }

    /// Sends one command and reads its reply.
    func call(_ arguments: [String]) throws -> Reply {
        var request = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            request += Array("$\(argument.utf8.count)\r\n".utf8)
            request += argument.utf8
            request += [13, 10]
        }
        var sent = 0
        while sent < request.count {
            let written = request[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else {
                if written < 0 && errno == EINTR { continue }
                throw Failure(description: "sending failed: \(String(cString: strerror(errno)))")
            }
            sent += written
        }
        return try readReply()
    }

    private func readReply() throws -> Reply {
        let line = try readLine()
        guard let type = line.first else { throw Failure(description: "empty reply line") }
        let text = String(decoding: line.dropFirst(), as: UTF8.self)
        switch type {
        case UInt8(ascii: "+"): return .simple(text)
        case UInt8(ascii: "-"): return .error(text)
        case UInt8(ascii: ":"):
            guard let value = Int64(text) else { throw Failure(description: "bad integer reply \(text)") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(text), length >= -1, length <= Self.bulkBytesMax else { throw Failure(description: "bad bulk length \(text)") }
            if length == -1 { return .bulk(nil) }
            let bytes = try readBytes(length + 2)
            guard bytes.suffix(2).elementsEqual([13, 10]) else { throw Failure(description: "bulk string not ended by CRLF") }
            return .bulk(Array(bytes.dropLast(2)))
        case UInt8(ascii: "*"):
            guard let count = Int(text), count >= -1, count <= 1 << 20 else { throw Failure(description: "bad array length \(text)") }
            if count == -1 { return .array(nil) }
            var items: [Reply] = []
            for _ in 0..<count { items.append(try readReply()) }
            return .array(items)
        default:
            throw Failure(description: "unexpected reply type \(Character(Unicode.Scalar(type)))")
        }
    }

    /// The next line, without its CRLF.
    private func readLine() throws -> ArraySlice<UInt8> {
        // Bytes after `readIndex` already searched (`fill` may move the buffer, not them).
        var searched = 0
        while true {
            if let end = buffer[(readIndex + searched)...].firstIndex(of: 10), end > readIndex, buffer[end - 1] == 13 {
                let line = buffer[readIndex..<(end - 1)]
                readIndex = end + 1
                return line
            }
            searched = max(0, buffer.count - readIndex - 1)
            guard searched < 64 * 1024 else { throw Failure(description: "reply line too long") }
            try fill()
        }
    }

    private func readBytes(_ count: Int) throws -> ArraySlice<UInt8> {
        while buffer.count - readIndex < count { try fill() }
        let bytes = buffer[readIndex..<(readIndex + count)]
        readIndex += count
        return bytes
    }

    /// Reads more from the socket (dropping what was consumed first).
    private func fill() throws {
        if readIndex > 0 {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
        let chunk = 256 * 1024
        let start = buffer.count
        buffer += [UInt8](repeating: 0, count: chunk)
        let received = buffer[start...].withUnsafeMutableBytes { recv(socket, $0.baseAddress, chunk, 0) }
        if received < 0 && errno == EINTR {
            buffer.removeSubrange(start...)
            return
        }
        guard received > 0 else {
            buffer.removeSubrange(start...)
            throw Failure(description: received == 0 ? "the server closed the connection" : "receiving failed: \(String(cString: strerror(errno)))")
        }
        buffer.removeSubrange((start + received)...)
    }
}
