/// How a namespace's keys are replicated across data centers.
public enum Consistency: String, Sendable, CaseIterable {
    /// Multi-master last-writer-wins with asynchronous delta shipping.
    case eventual
    /// Cross-data-center Paxos commit: linearizable.
    case strong
}

/// Where a namespace's acknowledged writes live.
public enum Durability: String, Sendable, CaseIterable {
    /// Cache only; never touches disk.
    case memory
    /// Acknowledged from memory, flushed within a bounded window.
    case writeBack = "write-back"
    /// Acknowledged only after the write is synced to disk.
    case writeThrough = "write-through"
}

/// What a namespace does when the node is over `maxmemory`.
public enum EvictionPolicy: String, Sendable, CaseIterable {
    /// Its least recently used keys give way (approximated by sampling).
    case lru
    /// It never loses a key to memory pressure; writes answer `-OOM` instead.
    case none
}

/// One namespace of the configuration contract: a key prefix with its own policies.
public struct NamespaceConfig: Sendable, Equatable {
    public var name: String
    /// Keys starting with these bytes belong here (longest prefix wins).
    public var prefix: [UInt8]
    public var consistency: Consistency
    public var durability: Durability
    public var eviction: EvictionPolicy
    /// TTL given to keys created without one, in milliseconds.
    public var defaultTTLMs: Int64?
    /// Globs of keys of this (eventual) namespace that escalate to strong consistency.
    public var strongKeys: [GlobPattern]
    /// For `write-back`: the most an acknowledged write may wait before it is synced to disk,
    /// and so the most a crash can lose.
    public var writeBackWindowMs: Int64

    /// In a data center of several nodes (docs/CLUSTER.md): how many of a partition's replicas
    /// must hold a write before it is acknowledged, and how many the primary reads from before
    /// it runs a command that reads the key.
    public var writeAcks: AckCount
    public var readAcks: AckCount

    /// How long every change to this namespace's keys stays in the node's audit log on disk,
    /// for `meridian export` (docs/AUDIT.md); 0: not audited. Durable namespaces only: a
    /// `memory` namespace promises never to touch disk.
    public var auditRetentionMs: Int64

    /// `audit_retention` of a durable namespace when the configuration names none (7 days).
    public static let auditRetentionMsDefault: Int64 = 7 * 86_400_000
    /// The longest `audit_retention` (10 years).
    public static let auditRetentionMsMax: Int64 = 3_650 * 86_400_000

    /// `write_back_window` when the configuration names none.
    public static let writeBackWindowMsDefault: Int64 = 100
    /// Bounds of `write_back_window`: below 2 ms a sync could not fit in the window; above a
    /// minute the data a crash may lose stops being "a window".
    public static let writeBackWindowMsRange: ClosedRange<Int64> = 2...60_000

    public init(
        name: String, prefix: [UInt8], consistency: Consistency = .eventual,
        durability: Durability = .writeBack, eviction: EvictionPolicy = .lru,
        defaultTTLMs: Int64? = nil, strongKeys: [GlobPattern] = [],
        writeBackWindowMs: Int64 = NamespaceConfig.writeBackWindowMsDefault, auditRetentionMs: Int64? = nil,
        writeAcks: AckCount = .quorum, readAcks: AckCount = .one
    ) {
        self.writeAcks = writeAcks
        self.readAcks = readAcks
        self.writeBackWindowMs = writeBackWindowMs
        self.auditRetentionMs = auditRetentionMs ?? (durability == .memory ? 0 : NamespaceConfig.auditRetentionMsDefault)
        self.name = name
        self.prefix = prefix
        self.consistency = consistency
        self.durability = durability
        self.eviction = eviction
        self.defaultTTLMs = defaultTTLMs
        self.strongKeys = strongKeys
    }

    /// The namespace that catches every key no other prefix claims.
    public static let defaultNamespace = NamespaceConfig(name: "default", prefix: [])
}

/// How many replicas must answer (`write_acks`, `read_acks`; docs/CLUSTER.md, "Routing").
public enum AckCount: String, Sendable, Equatable, CaseIterable {
    case one, quorum, all

    /// The answers needed from a replica set of `size`.
    public func required(of size: Int) -> Int {
        switch self {
        case .one: min(1, size)
        case .quorum: size / 2 + 1
        case .all: size
        }
    }
}

/// The namespaces of a node, ordered for longest-prefix matching. A key's namespace and its
/// consistency class are functions of the key alone; they never vary per request.
public struct NamespaceTable: Sendable {
    /// The namespaces in configuration order; `NamespaceIndex` values index this array.
    public let namespaces: [NamespaceConfig]
    /// Namespace indexes ordered by descending prefix length, so the first match is the longest.
    private let matchOrder: [Int]
    /// The index of the namespace with the empty prefix.
    public let defaultIndex: Int
    /// Whether any key can be strong; when not, the per-write strong check is skipped.
    public let hasStrongKeys: Bool

    /// Builds the table; `namespaces` must hold exactly one namespace with the empty prefix
    /// and no two with the same prefix (the configuration validator guarantees both).
    public init(_ namespaces: [NamespaceConfig]) {
        let defaults = namespaces.indices.filter { namespaces[$0].prefix.isEmpty }
        precondition(defaults.count == 1, "exactly one namespace must have the empty prefix")
        self.namespaces = namespaces
        self.defaultIndex = defaults[0]
        self.hasStrongKeys = namespaces.contains { $0.consistency == .strong || !$0.strongKeys.isEmpty }
        self.matchOrder = namespaces.indices.sorted { lhs, rhs in
            let l = namespaces[lhs].prefix.count, r = namespaces[rhs].prefix.count
            return l != r ? l > r : lhs < rhs
        }
    }

    /// The index of the namespace a key belongs to.
    public func index(of key: UnsafeRawBufferPointer) -> Int {
        if namespaces.count == 1 { return 0 }
        for candidate in matchOrder {
            let prefix = namespaces[candidate].prefix
            if prefix.count <= key.count && prefix.withUnsafeBytes({ p in
                p.elementsEqual(UnsafeRawBufferPointer(rebasing: key[0..<prefix.count]))
            }) {
                return candidate
            }
        }
        return defaultIndex
    }

    /// Whether a key is strong: its namespace is strong, or it matches a `strong_keys` glob.
    public func isStrong(_ key: UnsafeRawBufferPointer, namespaceIndex: Int) -> Bool {
        let namespace = namespaces[namespaceIndex]
        if namespace.consistency == .strong { return true }
        for pattern in namespace.strongKeys where pattern.matches(key) { return true }
        return false
    }
}
