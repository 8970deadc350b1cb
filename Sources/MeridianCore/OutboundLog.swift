/// A node's own deltas, kept until every peer data center has acknowledged them
/// (docs/REPLICATION.md, "The outbound log"). A pure value: the shell appends deltas as writes
/// are applied, asks what to send a peer, and reports acknowledgements.
///
/// Order of duties for the shell: persist a delta (durable namespaces) before it is appended
/// here, and send only what `nextSend` returns.
public struct OutboundLog: Sendable {
    /// What to send a peer next.
    public enum Send: Equatable, Sendable {
        /// Nothing: the peer has every delta.
        case upToDate
        /// These consecutive deltas (at least one).
        case deltas([Delta])
        /// The peer needs deltas the log no longer holds: send a snapshot covering up to
        /// `through`, then continue the stream after it.
        case snapshot(through: UInt64)
    }

    public let origin: ReplicaID
    /// Retained deltas, consecutive, oldest first.
    private var retained: [(delta: Delta, bytes: Int)] = []
    private var retainedStart = 0
    /// Sequence of the last delta appended (0: none).
    public private(set) var lastSequence: UInt64 = 0
    /// Per peer, the highest sequence of this origin it has acknowledged.
    public private(set) var acknowledged: [String: UInt64]
    /// Bytes of retained deltas, and the bound past which the oldest are dropped even if some
    /// peer has not acknowledged them (that peer then gets a snapshot).
    public private(set) var retainedBytes = 0
    public let retainedBytesMax: Int

    /// A log for `origin` streaming to `peers` (names of peer data centers), resuming after
    /// `lastSequence` (the origin's last dot, restored at start).
    public init(origin: ReplicaID, peers: [String], lastSequence: UInt64 = 0, retainedBytesMax: Int) {
        self.origin = origin
        self.lastSequence = lastSequence
        self.acknowledged = Dictionary(uniqueKeysWithValues: peers.map { ($0, 0) })
        self.retainedBytesMax = retainedBytesMax
    }

    /// The oldest sequence still retained (`lastSequence + 1` when none is).
    public var oldestRetained: UInt64 {
        retainedStart < retained.count ? retained[retainedStart].delta.dot.sequence : lastSequence + 1
    }

    /// The dot the next write of this origin gets.
    public var nextDot: Dot { Dot(origin: origin, sequence: lastSequence + 1) }

    /// Appends the delta of a write that was just applied; its dot must be `nextDot`.
    /// `bytes` is its encoded size (for the retention bound).
    public mutating func append(_ delta: Delta, bytes: Int) {
        precondition(delta.dot == nextDot, "deltas are appended in dot order without gaps")
        lastSequence = delta.dot.sequence
        retained.append((delta, bytes))
        retainedBytes += bytes
        while retainedBytes > retainedBytesMax && retainedStart < retained.count - 1 {
            retainedBytes -= retained[retainedStart].bytes
            retainedStart += 1
        }
        compact()
    }

    /// What to send `peer` next, at most `maxDeltas` deltas and about `maxBytes` bytes (at
    /// least one delta), starting after `after` (what the peer has, from its handshake or
    /// what was already sent on this link).
    public func nextSend(after: UInt64, maxDeltas: Int, maxBytes: Int) -> Send {
        precondition(maxDeltas > 0)
        if after >= lastSequence { return .upToDate }
        if after + 1 < oldestRetained { return .snapshot(through: lastSequence) }
        let startIndex = retainedStart + Int(after + 1 - oldestRetained)
        var deltas: [Delta] = []
        var bytes = 0
        var index = startIndex
        while index < retained.count && deltas.count < maxDeltas && (deltas.isEmpty || bytes + retained[index].bytes <= maxBytes) {
            deltas.append(retained[index].delta)
            bytes += retained[index].bytes
            index += 1
        }
        return .deltas(deltas)
    }

    /// Records that `peer` has every delta up to `sequence`, and drops deltas every peer has.
    public mutating func acknowledge(peer: String, through sequence: UInt64) {
        guard let known = acknowledged[peer] else { preconditionFailure("unknown peer \(peer)") }
        acknowledged[peer] = max(known, min(sequence, lastSequence))
        let everyone = acknowledged.values.min() ?? lastSequence
        while retainedStart < retained.count && retained[retainedStart].delta.dot.sequence <= everyone {
            retainedBytes -= retained[retainedStart].bytes
            retainedStart += 1
        }
        compact()
    }

    /// Says `peer` has only what `sequence` covers, after it restarted and lost what it had
    /// acknowledged (the log keeps what it still retains; older deltas need a snapshot).
    public mutating func peerRestarted(_ peer: String, through sequence: UInt64) {
        guard let known = acknowledged[peer], sequence < known else { return }
        acknowledged[peer] = sequence
    }

    /// Continues the stream after `sequence` (above `lastSequence`), dropping what is retained:
    /// for a node whose dots must jump (a peer holds dots of this origin above `lastSequence`,
    /// which happens only if the clock went back across a restart). Peers then get a snapshot.
    public mutating func jump(to sequence: UInt64) {
        precondition(sequence > lastSequence, "a jump moves forward")
        retained = []
        retainedStart = 0
        retainedBytes = 0
        lastSequence = sequence
    }

    /// Number of retained deltas.
    public var retainedCount: Int { retained.count - retainedStart }

    /// Releases the dropped prefix once it is large (amortised O(1) per delta).
    private mutating func compact() {
        if retainedStart > 1024 && retainedStart * 2 > retained.count {
            retained.removeFirst(retainedStart)
            retainedStart = 0
        }
    }
}
