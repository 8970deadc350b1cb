// Proves what a node's stream sends a peer the log no longer covers (docs/CLUSTER.md, "Cross-DC
// shipping with many nodes per DC"): a node of a data center of one node snapshots through its
// last delta; a node of a data center of several nodes snapshots only what the log dropped and
// streams the deltas it still retains (its keyspace lacks the partitions it gave up, so those
// deltas would otherwise never reach the peer).
import MeridianCore
@testable import MeridianServer
import Testing

@Suite struct ReplicatorTests {
    @Test func aSnapshotOfANodeOfSeveralCoversOnlyWhatTheLogDropped() {
        let me = ReplicaID(datacenter: 0, node: 1)
        // A log that keeps about two deltas: the older ones are dropped unacknowledged.
        let replicator = Replicator(
            me: me, peerDatacenters: ["west"], peerNodes: [ReplicaID(datacenter: 1, node: 0)], logBytesMax: 2 * 200,
            maxClockOffsetMs: 500, firstSequence: 100)
        for index in 0..<10 {
            replicator.appendLocal(key: Array("k\(index)".utf8), previousDot: nil) { dot in
                var record = DurableRecord.tombstone(stamp: LWWStamp(timestamp: HLCTimestamp(physicalMs: 1_000, logical: UInt64(index)), origin: me))
                record.value = [UInt8](repeating: 1, count: 150)
                record.dot = dot
                return record
            }
        }
        #expect(replicator.lastSequence == 110)
        guard case .snapshot(let whole) = replicator.nextSend(to: "west", after: 100, maxBytes: 1 << 20) else {
            Issue.record("a peer behind the log needs a snapshot")
            return
        }
        #expect(whole == 110)
        guard case .snapshot(let gap) = replicator.nextSend(to: "west", after: 100, maxBytes: 1 << 20, snapshotOnlyTheGap: true) else {
            Issue.record("a peer behind the log needs a snapshot")
            return
        }
        #expect(gap > 100 && gap < 110)
        // After that snapshot, the retained deltas follow, through the last one.
        guard case .deltas(let deltas) = replicator.nextSend(to: "west", after: gap, maxBytes: 1 << 20) else {
            Issue.record("the retained deltas follow the snapshot")
            return
        }
        #expect(deltas.first?.dot.sequence == gap + 1 && deltas.last?.dot.sequence == 110)
    }
}
