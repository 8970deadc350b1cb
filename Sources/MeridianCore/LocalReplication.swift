/// The sending side of replication in the keyspace (docs/REPLICATION.md): what a local change
/// ships, and the counter arithmetic of `INCRBY`. Pure, so that the server (which adds dots
/// from its outbound log) and the simulator run the same rules.
extension Keyspace {
    /// The delta of a local change, before it has a dot.
    public struct LocalDelta: Sendable {
        /// The key's state to ship (a tombstone for a delete).
        public var record: DurableRecord
        /// The dot of the state this change replaced.
        public var previousDot: Dot?
        /// The key's slot when it is live.
        public var slot: Int?
    }

    /// What a logged local change of `key` ships to other data centers, or nil when nothing
    /// is shipped (an expiry is a local decision; a key written and removed again in one
    /// section ships its removal only if it was deleted). A plain write of an integer over a
    /// counter first resets the counter to it, absorbing exactly the increments this data
    /// center has seen. `deleteStamp` stamps a delete's tombstone; `replacedDot` is the
    /// change's `KeyChange.replacedDot`.
    public mutating func localDelta(key: [UInt8], kind: KeyChange.Kind, replacedDot: Dot? = nil, deleteStamp: () -> LWWStamp) -> LocalDelta? {
        if let slot = slot(ofBytes: key) {
            let entry = entry(at: slot)
            if var counter = entry.counter, entry.valueStamp > counter.resetStamp,
               let integer = PNCounter.parseDecimal(entry.value) {
                counter.reset(to: integer, stamp: entry.valueStamp)
                setCounter(at: slot, counter, logged: false)
            }
            let current = self.entry(at: slot)
            return LocalDelta(record: DurableRecord(current), previousDot: entry.dot ?? replacedDot, slot: slot)
        }
        guard kind == .deleted else { return nil }
        // A deleted counter's totals stay with its tombstone (the keyspace kept them).
        return LocalDelta(record: .tombstone(stamp: deleteStamp(), counter: tombstones[key]?.counter), previousDot: replacedDot, slot: nil)
    }

    /// Records the dot the outbound log gave a local delta, on the field(s) the change wrote
    /// (those with the newest stamp: a SET writes both, an EXPIRE the expiry, an APPEND the
    /// value), or on the delete's tombstone; returns the state to ship, with its dots.
    public mutating func recordLocalDot(_ dot: Dot, of delta: LocalDelta, key: [UInt8]) -> DurableRecord {
        guard let slot = delta.slot else {
            recordTombstone(key: key, stamp: delta.record.valueStamp, dot: dot)
            return tombstones[key]!.record
        }
        let entry = entry(at: slot)
        let newest = max(entry.valueStamp, entry.expiryStamp)
        setDots(
            at: slot, value: entry.valueStamp == newest ? dot : entry.dot,
            expiry: entry.expiryStamp == newest ? dot : entry.expiryDot)
        return DurableRecord(self.entry(at: slot))
    }

    /// The outcome of `INCRBY` on a key of a replicated namespace.
    public enum CounterIncrement: Equatable, Sendable {
        /// The new value, the counter to store and the value stamp the key keeps.
        case value(Int64, counter: PNCounter, valueStamp: LWWStamp)
        case notInteger
        case overflow
    }

    /// `INCRBY key amount` as this node (`origin`) would apply it, with `stamp` for a reset:
    /// on a key that shows its counter, `amount` joins this node's contribution; on a key whose
    /// value is a newer plain write, the counter first resets to that value; on an absent key
    /// (`slot` nil), to 0, continuing a deleted counter's totals. The caller writes the result.
    public func counterIncrement(key: [UInt8], slot: Int?, amount: Int64, origin: ReplicaID, stamp: LWWStamp) -> CounterIncrement {
        var counter: PNCounter
        var valueStamp = stamp
        if let slot {
            let entry = entry(at: slot)
            if entry.showsCounter, let existing = entry.counter {
                counter = existing
                valueStamp = entry.valueStamp
            } else {
                guard let parsed = PNCounter.parseDecimal(entry.value) else { return .notInteger }
                counter = entry.counter ?? PNCounter()
                counter.reset(to: parsed, stamp: stamp)
            }
        } else {
            counter = tombstones[key]?.counter ?? PNCounter()
            counter.reset(to: 0, stamp: stamp)
        }
        let (sum, overflow) = counter.value.addingReportingOverflow(amount)
        if overflow { return .overflow }
        counter.add(amount, origin: origin)
        return .value(sum, counter: counter, valueStamp: valueStamp)
    }
}
