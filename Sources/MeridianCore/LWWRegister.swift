/// Identifies the node that originated a write: its data center and its node within the
/// data center, both as indexes into the cluster configuration. Ties between equal HLC
/// timestamps are broken by this value, so it must be the same on every node.
public struct ReplicaID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Index of the data center in the configuration's `datacenters` list.
    public var datacenter: UInt16
    /// Index of the node in its data center's `nodes` list.
    public var node: UInt16

    public init(datacenter: UInt16, node: UInt16) {
        self.datacenter = datacenter
        self.node = node
    }

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.datacenter, lhs.node) < (rhs.datacenter, rhs.node)
    }

    public var description: String { "\(datacenter).\(node)" }
}

/// The version of one LWW field: who wrote it and when. Fields merge by the larger stamp,
/// comparing the timestamp first and the origin second, so every replica picks the same
/// winner whatever order the writes arrive in.
public struct LWWStamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var timestamp: HLCTimestamp
    public var origin: ReplicaID

    /// The stamp that loses against every real write.
    public static let zero = LWWStamp(timestamp: .zero, origin: ReplicaID(datacenter: 0, node: 0))

    public init(timestamp: HLCTimestamp, origin: ReplicaID) {
        self.timestamp = timestamp
        self.origin = origin
    }

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool {
        if lhs.timestamp != rhs.timestamp { return lhs.timestamp < rhs.timestamp }
        return lhs.origin < rhs.origin
    }

    public var description: String { "\(timestamp)@\(origin)" }
}

/// A last-writer-wins register over a value of type `Value`, with the expiry as a second,
/// independent LWW field. Keeping the expiry separate is what lets an `EXPIRE` in one data
/// center and a concurrent `SET` in another both survive: neither overwrites the other's field.
///
/// A delete is a tombstone: the value field holds `nil` with the delete's stamp, so that a
/// delayed older write cannot resurrect the key.
public struct LWWRegister<Value: Equatable & Sendable>: Equatable, Sendable {
    /// The value, or `nil` for a tombstone.
    public var value: Value?
    /// The version of `value`.
    public var valueStamp: LWWStamp
    /// Absolute expiry in Unix milliseconds, or `nil` for no expiry.
    public var expiryUnixMs: Int64?
    /// The version of `expiryUnixMs`.
    public var expiryStamp: LWWStamp

    public init(value: Value?, valueStamp: LWWStamp, expiryUnixMs: Int64?, expiryStamp: LWWStamp) {
        self.value = value
        self.valueStamp = valueStamp
        self.expiryUnixMs = expiryUnixMs
        self.expiryStamp = expiryStamp
    }

    /// Whether the register holds a delete rather than a value.
    public var isTombstone: Bool { value == nil }

    /// Merges another replica's register into this one, field by field. The operation is
    /// commutative, associative and idempotent (see `LWWRegisterTests`).
    public mutating func merge(_ other: LWWRegister) {
        if other.valueStamp > valueStamp {
            value = other.value
            valueStamp = other.valueStamp
        }
        if other.expiryStamp > expiryStamp {
            expiryUnixMs = other.expiryUnixMs
            expiryStamp = other.expiryStamp
        }
    }

    /// The merge of two registers as a new value.
    public func merged(with other: LWWRegister) -> LWWRegister {
        var copy = self
        copy.merge(other)
        return copy
    }

    /// Whether the register reads as absent at `nowUnixMs`: deleted, or expired.
    public func isAbsent(atUnixMs nowUnixMs: Int64) -> Bool {
        if value == nil { return true }
        if let expiry = expiryUnixMs, expiry <= nowUnixMs { return true }
        return false
    }
}
