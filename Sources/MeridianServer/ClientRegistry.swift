import MeridianRESP
import NIOConcurrencyHelpers
import NIOCore

/// What CLIENT LIST and CLIENT INFO report about one connection. The connection updates it
/// once per read batch; other connections read it under its lock.
public struct ClientSnapshot: Sendable {
    public var id: Int
    public var address: String
    public var localAddress: String
    public var name: String = ""
    public var libraryName: String = ""
    public var libraryVersion: String = ""
    public var protocolVersion: RESPVersion = .v2
    public var createdUnixMs: Int64
    public var lastInteractionUnixMs: Int64
    public var lastCommand: String = "NULL"
    public var queryBufferBytes: Int = 0

    /// One line of CLIENT LIST, in Redis's field order (fields that have no meaning here,
    /// such as `fd` or pub/sub counts, report their neutral value).
    public func line(nowUnixMs: Int64) -> String {
        let age = max(0, (nowUnixMs - createdUnixMs) / 1000)
        let idle = max(0, (nowUnixMs - lastInteractionUnixMs) / 1000)
        return "id=\(id) addr=\(address) laddr=\(localAddress) fd=-1 name=\(name) age=\(age) idle=\(idle) flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=\(queryBufferBytes) qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=\(lastCommand) user=default redir=-1 resp=\(protocolVersion.rawValue) lib-name=\(libraryName) lib-ver=\(libraryVersion)"
    }
}

/// One registered connection: its snapshot and a way to close it gracefully.
final class ClientRecord: Sendable {
    let id: Int
    let snapshot: NIOLockedValueBox<ClientSnapshot>
    /// Asks the connection to finish its in-flight replies and close (runs on its loop).
    let closeGracefully: @Sendable () -> Void

    init(snapshot: ClientSnapshot, closeGracefully: @escaping @Sendable () -> Void) {
        self.id = snapshot.id
        self.snapshot = NIOLockedValueBox(snapshot)
        self.closeGracefully = closeGracefully
    }
}

/// The node's open client connections, for CLIENT LIST, INFO clients and graceful shutdown.
public final class ClientRegistry: Sendable {
    private struct State {
        var nextID = 1
        var clients: [Int: ClientRecord] = [:]
        /// Ids given to accepted channels whose handlers are not set up yet.
        var reserved: [ObjectIdentifier: Int] = [:]
        /// Set when graceful shutdown began: no connection registers after that.
        var shuttingDown = false
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// A new, unique client id (Redis ids start at 1 and never repeat).
    func nextID() -> Int {
        state.withLockedValue { value in
            defer { value.nextID += 1 }
            return value.nextID
        }
    }

    /// Gives an accepted channel its id, in accept order (called on the listener's loop, so
    /// later connections get higher ids, as Redis promises; the channel's own set-up runs on
    /// another loop and may come later).
    func reserveID(for channel: ObjectIdentifier) {
        state.withLockedValue { value in
            value.reserved[channel] = value.nextID
            value.nextID += 1
        }
    }

    /// The id reserved for `channel` at accept time (a fresh one if none was).
    func takeID(for channel: ObjectIdentifier) -> Int {
        state.withLockedValue { value in
            if let id = value.reserved.removeValue(forKey: channel) { return id }
            defer { value.nextID += 1 }
            return value.nextID
        }
    }

    /// Why a connection was not registered.
    enum Refusal: Error {
        case tooManyClients
        case shuttingDown
    }

    /// Registers a connection unless `limit` connections are open or shutdown began; the
    /// check and the registration are one step, so two loops cannot both take the last place.
    func register(_ record: ClientRecord, limit: Int) throws(Refusal) {
        let refusal: Refusal? = state.withLockedValue { value in
            if value.shuttingDown { return .shuttingDown }
            if value.clients.count >= limit { return .tooManyClients }
            value.clients[record.id] = record
            return nil
        }
        if let refusal { throw refusal }
    }


    func unregister(id: Int) {
        _ = state.withLockedValue { $0.clients.removeValue(forKey: id) }
    }

    /// Number of open connections.
    public var count: Int { state.withLockedValue { $0.clients.count } }

    /// Snapshots of every connection, ordered by id.
    public func snapshots() -> [ClientSnapshot] {
        let records = state.withLockedValue { Array($0.clients.values) }
        return records.map { $0.snapshot.withLockedValue { $0 } }.sorted { $0.id < $1.id }
    }

    /// Asks every connection to close once its in-flight replies are written.
    func closeAllGracefully() {
        let records = state.withLockedValue { value in
            value.shuttingDown = true
            return Array(value.clients.values)
        }
        for record in records { record.closeGracefully() }
    }
}
