/// When a tombstone may go (docs/REPLICATION.md, invariant 7): once every full data center has
/// seen the delete **and** every write that was concurrent with it has arrived here. A write
/// concurrent with the delete could otherwise arrive after the tombstone went, and bring the
/// key back here only.
///
/// A peer's acknowledgement `V` says it has seen everything `V` covers; its writes concurrent
/// with a delete it has seen were all made before that acknowledgement, so they carry
/// sequences up to `V[peer]`. An acknowledgement is therefore *stable* here once this node's
/// own vector has `V[peer]` of that peer's stream. The horizon is the pointwise minimum of this
/// node's vector and, per peer, its newest stable acknowledgement: a tombstone whose dot it
/// covers may be dropped.
public struct TombstoneHorizon: Sendable {
    /// Per peer node: acknowledgements not yet known stable, oldest first, and the newest
    /// stable one.
    private var pending: [ReplicaID: [VersionVector]]
    private var stable: [ReplicaID: VersionVector]
    /// Acknowledgements kept per peer while they wait to become stable (older ones go first:
    /// the horizon then moves later, never wrongly).
    public let pendingMax: Int

    public init(peers: [ReplicaID], pendingMax: Int = 64) {
        pending = Dictionary(uniqueKeysWithValues: peers.map { ($0, []) })
        stable = Dictionary(uniqueKeysWithValues: peers.map { ($0, VersionVector()) })
        self.pendingMax = pendingMax
    }

    /// Records an acknowledgement (a peer's whole vector).
    public mutating func record(peer: ReplicaID, vector: VersionVector) {
        guard pending[peer] != nil else { return }
        if let last = pending[peer]!.last, last == vector { return }
        pending[peer]!.append(vector)
        if pending[peer]!.count > pendingMax { pending[peer]!.removeFirst() }
    }

    /// Forgets what `peer` acknowledged (it restarted, or a new link came up): until it
    /// acknowledges again, and that becomes stable, the horizon does not pass its vector.
    public mutating func reset(peer: ReplicaID) {
        guard pending[peer] != nil else { return }
        pending[peer] = []
        stable[peer] = VersionVector()
    }

    /// Promotes acknowledgements that became stable given this node's vector `local`, and
    /// returns the horizon.
    public mutating func horizon(local: VersionVector) -> VersionVector {
        var vectors = [local]
        for peer in pending.keys.sorted() {
            while let first = pending[peer]!.first, local[peer] >= first[peer] {
                stable[peer] = first
                pending[peer]!.removeFirst()
            }
            vectors.append(stable[peer]!)
        }
        return VersionVector.meet(vectors)
    }
}
