import MeridianCluster
import MeridianCore
import MeridianWire

/// A data center of `ClusterNode`s in one process, on a network that delivers every message in
/// order at once, except to and from the nodes in `unreachable`, whose messages are dropped.
/// Unit tests drive one mechanism at a time with it; `meridian bench-cluster` measures the
/// core's cost with it (`countBytes` adds each delivered message's encoded size).
public struct InProcessDataCenter {
    /// The nodes; a node's id is its index.
    public var nodes: [ClusterNode<MemoryReplicaStore>]
    /// Simulated time.
    public var nowMs: Int64 = 1_000
    /// Nodes whose messages, both ways, are dropped (and which get no ticks).
    public var unreachable: Set<Int> = []
    /// Messages sent and not yet delivered.
    public var queue: [(from: Int, to: Int, message: ClusterMessage)] = []
    /// Client replies by client number.
    public var replies: [UInt64: ClusterClientResult] = [:]
    /// Switch proposals the nodes made (the caller commits them, or not).
    public var proposals: [[Int]] = []
    /// Every delivered message, in order (while `recordsMessages`).
    public var delivered: [ClusterMessage] = []
    /// Keep every delivered message in `delivered` (tests) or not (benchmarks).
    public var recordsMessages = true
    /// When set, `deliveredBytes` adds up each delivered message's `ClusterCodec` size.
    public var countBytes = false
    /// Encoded bytes delivered (while `countBytes`).
    public var deliveredBytes = 0
    /// Messages delivered.
    public var deliveredMessages = 0
    /// The randomness the nodes' ticks draw from.
    public var random = SplitMix64(seed: 7)
    /// The next client number `write` / `read` hand out.
    public var nextClient: UInt64 = 1

    /// `members` nodes of one data center, all knowing the same placement, epoch 1.
    public init(
        members: Int, replicationFactor: Int = 3, partitions: Int = 8, settings: ClusterSettings = ClusterSettings(),
        hintsBytesMax: Int = 1 << 20
    ) {
        let placement = Placement(
            memberNames: (0..<members).map { "node-\($0)" }, partitionCount: partitions, replicationFactor: replicationFactor)
        nodes = (0..<members).map { id in
            ClusterNode(
                id: id, origin: ReplicaID(datacenter: 0, node: UInt16(id)),
                durable: ClusterDurableState(placement: placement, hintsBytesMax: hintsBytesMax), settings: settings,
                nowMs: 1_000, incarnation: 1)
        }
        for id in nodes.indices { _ = nodes[id].takeOutputs() }
    }

    /// Takes a node's outputs: messages into `queue`, replies, proposals.
    public mutating func collect(_ id: Int) {
        for output in nodes[id].takeOutputs() {
            switch output {
            case .send(let to, let message): queue.append((id, to, message))
            case .reply(let client, let result): replies[client] = result
            case .fetchPlacement: break
            case .proposeSwitch(let partitions, _): proposals.append(partitions)
            case .persist: break  // the node's own state is what tests read here
            }
        }
    }

    /// Delivers every queued message (and those they cause) now.
    public mutating func deliver() {
        // By index, not removeFirst: a benchmark's queue holds many thousands of messages.
        var index = 0
        while index < queue.count {
            let (from, to, message) = queue[index]
            index += 1
            guard !unreachable.contains(from), !unreachable.contains(to), to < nodes.count else { continue }
            if recordsMessages { delivered.append(message) }
            deliveredMessages += 1
            if countBytes { deliveredBytes += ClusterCodec.encode(message).count }
            nodes[to].receive(message, from: from, nowMs: nowMs)
            collect(to)
        }
        queue.removeAll(keepingCapacity: true)
    }

    /// Moves time on in 10 ms ticks, ticking every reachable node and delivering after each.
    public mutating func advance(ms: Int64) {
        let end = nowMs + ms
        while nowMs < end {
            nowMs += 10
            for id in nodes.indices where !unreachable.contains(id) {
                nodes[id].tick(nowMs: nowMs, random: &random)
                collect(id)
            }
            deliver()
        }
    }

    /// A client's write of a text value (`nil` deletes); returns the client number.
    public mutating func write(at id: Int, _ key: [UInt8], _ value: String?, acks: AckCount = .quorum) -> UInt64 {
        write(at: id, key, bytes: value.map { Array($0.utf8) }, acks: acks)
    }

    /// A client's write (`nil` deletes) at node `id`, delivered at once; returns the client number.
    public mutating func write(at id: Int, _ key: [UInt8], bytes value: [UInt8]?, acks: AckCount = .quorum) -> UInt64 {
        let client = nextClient
        nextClient += 1
        nodes[id].write(client: client, key: key, value: value, acks: acks, nowMs: nowMs)
        collect(id)
        deliver()
        return client
    }

    /// A client's read at node `id`, delivered at once; returns the client number.
    public mutating func read(at id: Int, _ key: [UInt8], acks: AckCount = .quorum) -> UInt64 {
        let client = nextClient
        nextClient += 1
        nodes[id].read(client: client, key: key, acks: acks, nowMs: nowMs)
        collect(id)
        deliver()
        return client
    }

    /// The value node `id` holds for `key`, as text.
    public func value(at id: Int, _ key: [UInt8]) -> String? {
        let partition = nodes[id].partition(of: key)
        return nodes[id].durable.store.state(of: key, partition: partition)?.value.map { String(decoding: $0, as: UTF8.self) }
    }

    /// The first key `key:<n>` whose partition satisfies `wanted`.
    public func key(where wanted: (Int) -> Bool) -> [UInt8] {
        for index in 0... {
            let key = Array("key:\(index)".utf8)
            if wanted(nodes[0].partition(of: key)) { return key }
        }
        preconditionFailure("unreachable: the keys never run out")
    }
}
