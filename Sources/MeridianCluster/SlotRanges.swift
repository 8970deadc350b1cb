import MeridianCore

/// What `CLUSTER SLOTS` / `CLUSTER SHARDS` report: the Redis slot ranges of a data center with
/// the members that own them (primary first). Consecutive partitions with the same owners merge
/// into one range, so a data center of one node reports the single range 0–16383.
public struct SlotRange: Sendable, Equatable {
    public var slots: ClosedRange<Int>
    /// Member ids, primary first.
    public var owners: [Int]

    public init(slots: ClosedRange<Int>, owners: [Int]) {
        self.slots = slots
        self.owners = owners
    }

    /// The ranges of `placement`'s partitions (each a contiguous slot range under `partitioner`),
    /// in slot order.
    public static func ranges(of placement: Placement, partitioner: Partitioner) -> [SlotRange] {
        precondition(placement.partitionCount == partitioner.partitionCount)
        var ranges: [SlotRange] = []
        for partition in 0..<placement.partitionCount {
            let slots = partitioner.slots(of: partition)
            let owners = placement.owners(of: partition)
            if let last = ranges.last, last.owners == owners, last.slots.upperBound + 1 == slots.lowerBound {
                ranges[ranges.count - 1].slots = last.slots.lowerBound...slots.upperBound
            } else {
                ranges.append(SlotRange(slots: slots, owners: owners))
            }
        }
        return ranges
    }
}
