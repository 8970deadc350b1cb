/// The value and metadata stored under one key. The value and the expiry are two independent
/// LWW fields, each with its own stamp (see `LWWRegister` for the merge rule they follow).
public struct Entry: Sendable {
    /// The string value.
    public var value: [UInt8]
    /// The version of `value`.
    public var valueStamp: LWWStamp
    /// Absolute expiry in Unix milliseconds; `Entry.noExpiry` when the key is persistent.
    public var expiryUnixMs: Int64
    /// The version of `expiryUnixMs`.
    public var expiryStamp: LWWStamp
    /// Last time the key was read or written, for LRU eviction and `OBJECT IDLETIME`.
    public var lastAccessUnixMs: Int64
    /// The index of the key's namespace in the node's `NamespaceTable`.
    public let namespaceIndex: UInt16
    /// What OBJECT ENCODING reports: Redis's encoding depends on how a value was written,
    /// not only on its bytes.
    public var encoding: EncodingHint = .byContent
    /// Origin of the dot of the last replicated write to this key (see `dot`).
    public var dotOrigin = ReplicaID(datacenter: 0, node: 0)
    /// Position of this entry's slot in `Keyspace.expiring`, or -1.
    fileprivate var expiringPosition: Int32 = -1
    /// Position of this entry's slot in `Keyspace.evictable`, or -1.
    fileprivate var evictablePosition: Int32 = -1
    /// Sequence of the dot of the last replicated write to this key (0: none, see `dot`).
    public var dotSequence: UInt64 = 0
    /// The dot of the write that produced the expiry field (see `expiryDot`).
    public var expiryDotOrigin = ReplicaID(datacenter: 0, node: 0)
    public var expiryDotSequence: UInt64 = 0
    /// The counter state of an `INCR`-family key in a replicated namespace, boxed so that keys
    /// without one pay a pointer, not the whole state.
    private var counterBox: CounterBox?

    /// The key's PN-counter (docs/REPLICATION.md, "Counters"): when its reset is at least as
    /// new as the value's stamp, the value is the counter's, in decimal.
    public var counter: PNCounter? {
        get { counterBox?.counter }
        set { counterBox = newValue.map(CounterBox.init) }
    }

    /// Whether the value shows the counter (rather than a newer plain write).
    public var showsCounter: Bool {
        guard let counter else { return false }
        return counter.resetStamp >= valueStamp
    }

    /// The sentinel `expiryUnixMs` of a key without a TTL.
    public static let noExpiry: Int64 = 0

    public init(
        value: [UInt8], valueStamp: LWWStamp, expiryUnixMs: Int64, expiryStamp: LWWStamp,
        lastAccessUnixMs: Int64, namespaceIndex: Int
    ) {
        self.value = value
        self.valueStamp = valueStamp
        self.expiryUnixMs = expiryUnixMs
        self.expiryStamp = expiryStamp
        self.lastAccessUnixMs = lastAccessUnixMs
        self.namespaceIndex = UInt16(namespaceIndex)
    }

    /// Whether the key has a TTL.
    @inlinable
    public var hasExpiry: Bool { expiryUnixMs != Entry.noExpiry }

    /// Whether the key is expired at `nowUnixMs` (a key expires at its expiry instant).
    @inlinable
    public func isExpired(atUnixMs nowUnixMs: Int64) -> Bool {
        expiryUnixMs != Entry.noExpiry && expiryUnixMs <= nowUnixMs
    }

    /// The dot of the write that produced the expiry field (nil: unknown). Tombstone GC waits
    /// until every data center has seen it too.
    public var expiryDot: Dot? {
        get { expiryDotSequence == 0 ? nil : Dot(origin: expiryDotOrigin, sequence: expiryDotSequence) }
        set {
            expiryDotOrigin = newValue?.origin ?? ReplicaID(datacenter: 0, node: 0)
            expiryDotSequence = newValue?.sequence ?? 0
        }
    }

    /// The dot of the write that produced the value field (nil: not replicated, or unknown),
    /// for telling concurrent writes from overwrites (docs/REPLICATION.md, "Conflicts").
    public var dot: Dot? {
        get { dotSequence == 0 ? nil : Dot(origin: dotOrigin, sequence: dotSequence) }
        set {
            dotOrigin = newValue?.origin ?? ReplicaID(datacenter: 0, node: 0)
            dotSequence = newValue?.sequence ?? 0
        }
    }

    /// The entry as an LWW register, for merging with a replica's copy.
    public var register: LWWRegister<[UInt8]> {
        LWWRegister(
            value: value, valueStamp: valueStamp,
            expiryUnixMs: hasExpiry ? expiryUnixMs : nil, expiryStamp: expiryStamp)
    }
}

/// An immutable box for an entry's counter (copy on write by replacement).
final class CounterBox: Sendable {
    let counter: PNCounter
    init(_ counter: PNCounter) { self.counter = counter }
}

/// A change to a key of a durable namespace, as the keyspace logs it. It names the key, not
/// the new state: whoever drains the log reads the key's current state, so several changes
/// to one key in one locked section cost one disk write.
public struct KeyChange: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The value or the expiry was written: the key's current state goes to disk.
        case written
        /// The key was deleted by a command: a tombstone (or, without peers, nothing) goes to disk.
        case deleted
        /// The key expired: its record is removed from disk (every replica expires it alike).
        case expired
    }

    public var key: [UInt8]
    public var namespaceIndex: UInt16
    public var kind: Kind
    /// The dot of the write this change replaced when the live entry no longer says it: a
    /// deleted (or expired) entry's dot, or the dead state's of a key written again. The
    /// change's delta names it, so that a peer holding that write sees an overwrite, not a
    /// conflict.
    public var replacedDot: Dot?

    public init(key: [UInt8], namespaceIndex: UInt16, kind: Kind, replacedDot: Dot? = nil) {
        self.key = key
        self.namespaceIndex = namespaceIndex
        self.kind = kind
        self.replacedDot = replacedDot
    }
}

/// How Redis would have encoded a string value, which OBJECT ENCODING reports.
public enum EncodingHint: UInt8, Sendable {
    /// Written whole by SET and friends: `int`, `embstr` or `raw` by the bytes.
    case byContent
    /// Edited in place (APPEND, SETRANGE): always `raw`.
    case raw
    /// Produced as text that is never integer-encoded (INCRBYFLOAT): `embstr` or `raw` by length.
    case notInteger
}

/// Per-namespace counters of one keyspace.
public struct NamespaceCounters: Sendable, Equatable {
    public var keys = 0
    public var keysWithExpiry = 0
    /// Accounted bytes (keys, values and per-entry overhead).
    public var bytes = 0
    public var expiredKeys = 0
    public var evictedKeys = 0

    public init() {}

    /// Adds another shard's counters.
    public mutating func add(_ other: NamespaceCounters) {
        keys += other.keys
        keysWithExpiry += other.keysWithExpiry
        bytes += other.bytes
        expiredKeys += other.expiredKeys
        evictedKeys += other.evictedKeys
    }
}

/// One shard of a node's keys: a hash index over a slot array, with the side indexes that
/// active expiry and eviction sample from. It is a plain value with no locks, clocks or
/// randomness of its own: the caller passes the time and a random number generator in.
///
/// Slots never move while their key lives (deleted slots become holes that later inserts
/// reuse), so a SCAN cursor that is a slot position returns every key that was present for
/// the whole scan. Sampling draws random positions from the dense `expiring` and `evictable`
/// lists, which are kept dense by swap-removal.
///
/// Deletes remove the key outright instead of leaving an LWW tombstone: a tombstone may be
/// dropped once every data center has seen it, and a node without peers is that case.
public struct Keyspace: Sendable {
    private var index = KeyIndex()
    /// Slot storage. A free slot has `hash == 0` and holds no key or value.
    private var slots: [Slot] = []
    private var freeSlots: [Int32] = []
    /// Slots of live entries that have an expiry.
    private var expiring: [Int32] = []
    /// Slots of live entries whose namespace allows eviction.
    private var evictable: [Int32] = []
    /// Which namespaces allow eviction, by namespace index.
    private let evictableNamespaces: [Bool]
    /// Which namespaces keep their keys on disk, by namespace index: changes to their keys
    /// are logged in `keyChanges` for the storage engine.
    private let loggedNamespaces: [Bool]
    /// Which namespaces replicate to other data centers: their removed keys keep a dead state.
    private let replicatedNamespaces: [Bool]
    /// Whether any namespace is durable (one test instead of an array lookup per change).
    private let anyLogged: Bool

    /// Changes to keys of durable namespaces since the last `takeKeyChanges()`, in the
    /// order they happened. The node drains them before it releases the shard's lock, so the
    /// order in which states reach the storage engine is the order they had in memory.
    public private(set) var keyChanges: [KeyChange] = []

    /// Accounted bytes of all entries.
    public private(set) var usedBytes = 0
    /// Counters by namespace index.
    public private(set) var namespaceCounters: [NamespaceCounters]

    private struct Slot {
        /// The key's bytes, owned by the slot (short keys inline).
        var key: StoredKey
        /// The key's `KeyIndex.hash` (never 0), kept for removal and growth; 0 marks a free slot.
        var hash: UInt64
        var entry: Entry

        static let free = Slot(key: .empty, hash: 0, entry: Entry(
            value: [], valueStamp: .zero, expiryUnixMs: Entry.noExpiry, expiryStamp: .zero,
            lastAccessUnixMs: 0, namespaceIndex: 0))
    }

    /// Creates an empty keyspace for namespaces whose eviction policies are `evictable`
    /// (indexed like the node's `NamespaceTable`).
    /// `partitionCount`: keep each partition's tree and keys (`PartitionTracking`), for a node
    /// that is one of several replicas in its data center.
    public init(
        evictableNamespaces: [Bool], loggedNamespaces: [Bool] = [], replicatedNamespaces: [Bool] = [],
        partitionCount: Int? = nil
    ) {
        self.tracking = partitionCount.map { PartitionTracking(partitionCount: $0) }
        self.replicatedNamespaces = replicatedNamespaces.isEmpty
            ? Array(repeating: false, count: evictableNamespaces.count) : replicatedNamespaces
        self.evictableNamespaces = evictableNamespaces
        self.loggedNamespaces = loggedNamespaces.isEmpty
            ? Array(repeating: false, count: evictableNamespaces.count) : loggedNamespaces
        precondition(self.loggedNamespaces.count == evictableNamespaces.count, "one durability flag per namespace")
        self.anyLogged = loggedNamespaces.contains(true)
        self.namespaceCounters = Array(repeating: NamespaceCounters(), count: evictableNamespaces.count)
    }

    /// Number of keys held, including expired keys not yet reaped.
    public var count: Int { index.count }
    /// Number of keys with a TTL.
    public var expiringCount: Int { expiring.count }
    /// Number of keys that eviction may drop.
    public var evictableCount: Int { evictable.count }
    /// Number of slot positions, live or free: the bound of a SCAN cursor within this shard.
    public var slotCapacity: Int { slots.count }

    /// The accounted size of an entry.
    @inlinable
    public static func accountedBytes(keyCount: Int, valueCount: Int) -> Int {
        keyCount + valueCount + Limits.entryOverheadBytes
    }

    // MARK: Lookup

    /// The slot of `key`, expired or not.
    public func slot(of key: Key) -> Int? {
        key.bytes.withUnsafeReadableBytes { slot(ofBytes: $0) }
    }

    /// The slot of the key with these bytes, expired or not.
    public func slot(ofBytes bytes: UnsafeRawBufferPointer) -> Int? {
        // Through the buffer pointer the slot is borrowed, not copied: no retain and
        // release of its key and value arrays (which would touch their cache lines).
        slots.withUnsafeBufferPointer { storage in
            index.find(hash: KeyIndex.hash(bytes)) { slot in
                storage[slot].key.withUnsafeBytes { bytesEqual($0, bytes) }
            }
        }
    }

    /// The slot of the key with these bytes, expired or not.
    public func slot(ofBytes bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { slot(ofBytes: $0) }
    }

    /// Calls `body` with the value bytes of a live slot, without copying the entry.
    public func withValue<R>(at slot: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        slots.withUnsafeBufferPointer { storage in
            storage[slot].entry.value.withUnsafeBytes(body)
        }
    }

    /// The slot of `key` if it is live at `nowUnixMs`. An expired key found here is removed
    /// (lazy expiry), so expired keys are never returned.
    public mutating func liveSlot(of key: Key, nowUnixMs: Int64) -> Int? {
        guard let slot = slot(of: key) else { return nil }
        if slots[slot].entry.isExpired(atUnixMs: nowUnixMs) {
            expire(slot: slot)
            return nil
        }
        return slot
    }

    /// The entry in a live slot.
    public func entry(at slot: Int) -> Entry { slots[slot].entry }

    /// The key bytes in a live slot.
    public func key(at slot: Int) -> [UInt8] { slots[slot].key.bytes }

    /// Whether a slot position holds a live key (for cursors).
    public func isOccupied(_ slot: Int) -> Bool { slot < slots.count && slots[slot].hash != 0 }

    // MARK: Mutation

    /// Inserts a key that is not present; the keyspace stores its own copy of the bytes.
    /// `logged: false` is for keys loaded from disk, whose state is already there.
    @discardableResult
    public mutating func insert(_ key: Key, entry: Entry, logged: Bool = true) -> Int {
        key.bytes.withUnsafeReadableBytes { insert(bytes: $0, entry: entry, logged: logged) }
    }

    /// `insert` for a key given as bytes.
    @discardableResult
    public mutating func insert(bytes key: UnsafeRawBufferPointer, entry: Entry, logged: Bool = true) -> Int {
        precondition(slot(ofBytes: key) == nil, "insert of a key that is present")
        if tracking != nil { noteChange(Array(key)) }
        let hash = KeyIndex.hash(key)
        let stored = Slot(key: StoredKey(key), hash: hash, entry: entry)
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = Int(free)
            slots[slot] = stored
        } else {
            slot = slots.count
            slots.append(stored)
        }
        index.insert(hash: hash, slot: slot)
        slots[slot].entry.expiringPosition = -1
        slots[slot].entry.evictablePosition = -1
        let namespace = Int(entry.namespaceIndex)
        var revivedFrom: Dot?
        if replicatedNamespaces[namespace], !tombstones.isEmpty, let dead = takeTombstone(Array(key)) {
            // The key comes back: its counter's totals continue (they never go back), and its
            // dead state is replaced by the live one.
            slots[slot].entry.counter = Self.merged(dead.record.counter, entry.counter)
            materializeCounter(at: slot)
            revivedFrom = dead.dot
        }
        let bytes = Self.accountedBytes(keyCount: key.count, valueCount: entry.value.count)
        usedBytes += bytes
        namespaceCounters[namespace].keys += 1
        namespaceCounters[namespace].bytes += bytes
        if entry.hasExpiry { addToExpiring(slot) }
        if evictableNamespaces[namespace] {
            slots[slot].entry.evictablePosition = Int32(evictable.count)
            evictable.append(Int32(slot))
        }
        if logged { logChange(slot: slot, .written, replacedDot: revivedFrom) }
        return slot
    }

    /// Replaces the value of a live slot.
    public mutating func setValue(at slot: Int, _ value: [UInt8], stamp: LWWStamp) {
        willChange(slot: slot)
        let delta = value.count - slots[slot].entry.value.count
        slots[slot].entry.value = value
        slots[slot].entry.valueStamp = stamp
        slots[slot].entry.encoding = .byContent
        adjustBytes(slot: slot, by: delta)
        logChange(slot: slot, .written)
    }

    /// Changes the value of a live slot in place (APPEND, SETRANGE) without copying it first.
    public mutating func modifyValue<R>(at slot: Int, stamp: LWWStamp, _ body: (inout [UInt8]) -> R) -> R {
        willChange(slot: slot)
        let before = slots[slot].entry.value.count
        let result = body(&slots[slot].entry.value)
        slots[slot].entry.valueStamp = stamp
        slots[slot].entry.encoding = .raw
        adjustBytes(slot: slot, by: slots[slot].entry.value.count - before)
        logChange(slot: slot, .written)
        return result
    }

    /// Records how a live slot's value was written (see `EncodingHint`). Not a change of the
    /// partition trees: their digests leave the encoding hint out.
    public mutating func setEncoding(at slot: Int, _ encoding: EncodingHint) {
        slots[slot].entry.encoding = encoding
        logChange(slot: slot, .written)
    }

    /// Sets or clears (`Entry.noExpiry`) the expiry of a live slot.
    public mutating func setExpiry(at slot: Int, unixMs: Int64, stamp: LWWStamp) {
        willChange(slot: slot)
        let had = slots[slot].entry.hasExpiry
        slots[slot].entry.expiryUnixMs = unixMs
        slots[slot].entry.expiryStamp = stamp
        let has = unixMs != Entry.noExpiry
        if has && !had { addToExpiring(slot) }
        if !has && had { removeFromExpiring(slot) }
        logChange(slot: slot, .written)
    }

    /// Records an access for LRU.
    public mutating func touch(slot: Int, nowUnixMs: Int64) {
        slots[slot].entry.lastAccessUnixMs = nowUnixMs
    }

    /// Removes a live key (a delete). Returns its entry.
    @discardableResult
    public mutating func remove(slot: Int) -> Entry {
        remove(slot: slot, logging: .deleted)
    }

    /// Removes a live key, logging the removal as `change` (nil: not at all).
    private mutating func remove(slot: Int, logging change: KeyChange.Kind?) -> Entry {
        willChange(slot: slot)
        if let change { logChange(slot: slot, change) }
        let removed = slots[slot]
        if change != nil && replicatedNamespaces[Int(removed.entry.namespaceIndex)] {
            // The key's last state stays as its dead state; a delete's own tombstone (stamped by
            // whoever drains the change) merges over it.
            let key = removed.key.bytes
            let record = DurableRecord(removed.entry)
            setTombstone(key, record: takeTombstone(key).map { $0.record.merged(with: record) } ?? record)
        }
        let namespace = Int(removed.entry.namespaceIndex)
        if removed.entry.expiringPosition >= 0 { removeFromExpiring(slot) }
        if removed.entry.evictablePosition >= 0 {
            let position = Int(removed.entry.evictablePosition)
            let last = evictable.removeLast()
            if position < evictable.count {
                evictable[position] = last
                slots[Int(last)].entry.evictablePosition = Int32(position)
            }
        }
        index.remove(hash: removed.hash, slot: slot)
        slots[slot] = .free
        if index.count == 0 {
            // An emptied shard gives its slot memory back. (Trimming trailing holes on every
            // removal would cost a pass over the free list each time: quadratic.)
            slots = []
            freeSlots = []
        } else {
            freeSlots.append(Int32(slot))
        }
        let bytes = Self.accountedBytes(keyCount: removed.key.count, valueCount: removed.entry.value.count)
        usedBytes -= bytes
        namespaceCounters[namespace].keys -= 1
        namespaceCounters[namespace].bytes -= bytes
        return removed.entry
    }

    /// Removes an expired key and counts it as expired.
    public mutating func expire(slot: Int) {
        let entry = remove(slot: slot, logging: .expired)
        namespaceCounters[Int(entry.namespaceIndex)].expiredKeys += 1
    }

    /// Removes a key to free memory and counts it as evicted. Eviction is a local decision
    /// about memory: it is not logged, so a durable key's copy on disk stays.
    public mutating func evict(slot: Int) {
        let entry = remove(slot: slot, logging: nil)
        namespaceCounters[Int(entry.namespaceIndex)].evictedKeys += 1
    }

    /// Removes every key; counters of expirations and evictions are kept. Nothing is logged:
    /// the caller clears the disk as a whole.
    public mutating func removeAll() {
        keyChanges = []
        tracking?.reset()
        tombstones = [:]
        tombstoneBytes = 0
        index.removeAll()
        slots = []
        freeSlots = []
        expiring = []
        evictable = []
        usedBytes = 0
        for namespace in namespaceCounters.indices {
            namespaceCounters[namespace].keys = 0
            namespaceCounters[namespace].keysWithExpiry = 0
            namespaceCounters[namespace].bytes = 0
        }
    }

    // MARK: Sampling

    /// One round of active expiry: samples up to `samples` keys with a TTL and removes the
    /// expired ones. Returns how many were sampled and how many expired, so the caller can
    /// repeat while the expired fraction is high (Redis's adaptive cycle).
    public mutating func expireSample<G: RandomNumberGenerator>(
        nowUnixMs: Int64, samples: Int, using generator: inout G
    ) -> (sampled: Int, expired: Int) {
        var sampled = 0
        var expired = 0
        while sampled < samples && !expiring.isEmpty {
            let slot = Int(expiring[Int.random(in: 0..<expiring.count, using: &generator)])
            sampled += 1
            if slots[slot].entry.isExpired(atUnixMs: nowUnixMs) {
                expire(slot: slot)
                expired += 1
            }
        }
        return (sampled, expired)
    }

    /// The least recently used of `samples` randomly drawn evictable keys, with its last
    /// access time, or nil when nothing here may be evicted.
    public func evictionCandidate<G: RandomNumberGenerator>(
        samples: Int, using generator: inout G
    ) -> (slot: Int, lastAccessUnixMs: Int64)? {
        guard !evictable.isEmpty else { return nil }
        var best: (slot: Int, lastAccessUnixMs: Int64)?
        for _ in 0..<max(1, samples) {
            let slot = Int(evictable[Int.random(in: 0..<evictable.count, using: &generator)])
            let access = slots[slot].entry.lastAccessUnixMs
            if best == nil || access < best!.lastAccessUnixMs { best = (slot, access) }
        }
        return best
    }

    /// A randomly drawn live slot (expired keys included), or nil when empty. Uniform while
    /// the slot array is mostly live; after mass deletions it falls back to the next live slot
    /// after a random position, so the work stays bounded by the array's size.
    public func randomSlot<G: RandomNumberGenerator>(using generator: inout G) -> Int? {
        guard index.count > 0 else { return nil }
        for _ in 0..<Self.randomProbesMax {
            let slot = Int.random(in: 0..<slots.count, using: &generator)
            if slots[slot].hash != 0 { return slot }
        }
        let start = Int.random(in: 0..<slots.count, using: &generator)
        for offset in 0..<slots.count {
            let slot = (start + offset) % slots.count
            if slots[slot].hash != 0 { return slot }
        }
        preconditionFailure("a non-empty keyspace has a live slot")
    }

    /// Random probes `randomSlot` makes before it falls back to a scan.
    static let randomProbesMax = 32

    // MARK: Durable change log

    /// Whether changes wait in `keyChanges`.
    @inlinable
    public var hasKeyChanges: Bool { !keyChanges.isEmpty }

    /// Hands the logged changes over and empties the log (keeping its capacity).
    public mutating func takeKeyChanges() -> [KeyChange] {
        let taken = keyChanges
        keyChanges.removeAll(keepingCapacity: true)
        return taken
    }

    /// Whether the namespace at `index` is durable.
    public func isLogged(namespaceIndex index: Int) -> Bool { loggedNamespaces[index] }

    // MARK: Replication (docs/REPLICATION.md)

    /// The last replicated state of a key that is no longer in the index: deleted (the value
    /// field is a tombstone) or expired (the whole record, value and expiry). It stays so that
    /// a write arriving late from another data center merges with what this key was, instead
    /// of bringing it back, until every full data center has seen it (invariant 7).
    public struct Tombstone: Sendable, Equatable {
        /// The key's merged state: value field (with its dot), expiry field and counter.
        public var record: DurableRecord

        public init(record: DurableRecord) {
            self.record = record
        }

        /// The dot of the write that produced the value field's state (nil when unknown).
        public var dot: Dot? { record.dot }
        public var stamp: LWWStamp { record.valueStamp }

        /// Whether this dead state may go at `horizon` (`TombstoneHorizon`): every write that
        /// produced one of its fields is past it. A state without dots (written before dots
        /// existed) goes once the horizon has anything of its stamp's origin.
        public func isCovered(by horizon: VersionVector) -> Bool {
            let dots = [record.dot, record.expiryDot].compactMap { $0 }
            return dots.isEmpty ? horizon[stamp.origin] > 0 : dots.allSatisfy { horizon.covers($0) }
        }
        public var counter: PNCounter? { record.counter }
    }

    /// Tombstones of replicated keys, by key. Commands never see them: such a key is absent.
    public private(set) var tombstones: [[UInt8]: Tombstone] = [:]
    /// Bytes the dead states hold (keys and encoded records); not part of `usedBytes`, which
    /// `maxmemory` bounds: dead states cannot be evicted, only collected.
    public private(set) var tombstoneBytes = 0

    private mutating func setTombstone(_ key: [UInt8], record: DurableRecord) {
        willChange(key: key)
        if let old = tombstones[key] { tombstoneBytes -= key.count + old.record.encodedByteCount }
        tombstones[key] = Tombstone(record: record)
        tombstoneBytes += key.count + record.encodedByteCount
    }

    private mutating func takeTombstone(_ key: [UInt8]) -> Tombstone? {
        willChange(key: key)
        guard let old = tombstones.removeValue(forKey: key) else { return nil }
        tombstoneBytes -= key.count + old.record.encodedByteCount
        return old
    }

    /// Logs a change of a key's dead state so that it reaches the disk (the drainer writes the
    /// tombstone record).
    private mutating func logDeadState(_ key: [UInt8], namespaceIndex: Int) {
        guard anyLogged, loggedNamespaces[namespaceIndex] else { return }
        keyChanges.append(KeyChange(key: key, namespaceIndex: UInt16(namespaceIndex), kind: .deleted))
    }

    /// Sets the dots of the writes that produced a live slot's value and expiry fields (not a
    /// change: not logged).
    public mutating func setDots(at slot: Int, value: Dot?, expiry: Dot?) {
        willChange(slot: slot)
        slots[slot].entry.dot = value
        slots[slot].entry.expiryDot = expiry
    }

    /// Merges a delete stamped `stamp` (dot `dot`) into `key`'s dead state.
    public mutating func recordTombstone(key: [UInt8], stamp: LWWStamp, dot: Dot?, counter: PNCounter? = nil) {
        var delete = DurableRecord.tombstone(stamp: stamp, counter: counter)
        delete.dot = dot
        delete.expiryDot = dot
        setTombstone(key, record: tombstones[key].map { $0.record.merged(with: delete) } ?? delete)
    }

    /// Sets a live slot's counter state (its value follows when it shows the counter).
    /// `logged: false` when the caller is already handing the key's state on.
    public mutating func setCounter(at slot: Int, _ counter: PNCounter?, logged: Bool = true) {
        willChange(slot: slot)
        slots[slot].entry.counter = counter
        materializeCounter(at: slot)
        if logged { logChange(slot: slot, .written) }
    }

    /// Makes a slot's value the counter's decimal value when it shows the counter.
    private mutating func materializeCounter(at slot: Int) {
        guard slots[slot].entry.showsCounter, let counter = slots[slot].entry.counter else { return }
        let decimal = PNCounter.decimalBytes(counter.value)
        guard decimal != slots[slot].entry.value else { return }
        let delta = decimal.count - slots[slot].entry.value.count
        slots[slot].entry.value = decimal
        slots[slot].entry.encoding = .byContent
        adjustBytes(slot: slot, by: delta)
    }

    /// Restores a key's dead state read from disk (a delete's tombstone, or an expired record)
    /// so that older writes arriving after a restart still merge with it.
    public mutating func restoreDeadState(key: [UInt8], record: DurableRecord) {
        guard slot(ofBytes: key) == nil else { return }
        setTombstone(key, record: tombstones[key].map { $0.record.merged(with: record) } ?? record)
    }

    static func merged(_ a: PNCounter?, _ b: PNCounter?) -> PNCounter? {
        guard var a else { return b }
        if let b { a.merge(b) }
        return a
    }

    /// Drops the tombstones `isCovered` accepts (every data center has seen them); returns their keys.
    public mutating func dropTombstones(where isCovered: (Tombstone) -> Bool) -> [[UInt8]] {
        var dropped: [[UInt8]] = []
        for (key, tombstone) in tombstones where isCovered(tombstone) { dropped.append(key) }
        for key in dropped { _ = takeTombstone(key) }
        return dropped
    }

    /// The outcome of merging one key's state from another data center.
    public struct RemoteMerge: Sendable, Equatable {
        /// How the incoming write relates to what this data center held.
        public var relation: DeltaRelation
        /// Whether the key's state here changed.
        public var changed: Bool
        /// For concurrent writes: the winning value stamp, and the losing side's value stamp
        /// and value (nil: a tombstone).
        public var winnerStamp: LWWStamp?
        public var loserStamp: LWWStamp?
        public var loserValue: [UInt8]?
    }

    /// Merges `record`, another data center's state of `key` written by the write `dot`
    /// (which replaced `previousDot` at its origin), into this keyspace: field by field
    /// (`DurableRecord.merged`) with the key's live entry or its dead state. The result is live
    /// when its value field holds a value not expired at `nowUnixMs`; otherwise it is kept as
    /// the key's tombstone. Changes are logged like commands' (for the disk); the caller does
    /// not ship them again.
    public mutating func mergeRemote(
        key: [UInt8], record incoming: DurableRecord, dot: Dot?, previousDot: Dot?, namespaceIndex: Int, nowUnixMs: Int64
    ) -> RemoteMerge {
        let record = incoming
        willChange(key: key)
        let liveSlot = slot(ofBytes: key)
        let local: DurableRecord?
        let localDot: Dot?
        if let liveSlot {
            local = DurableRecord(slots[liveSlot].entry)
            localDot = slots[liveSlot].entry.dot
        } else {
            local = tombstones[key]?.record
            localDot = tombstones[key]?.dot
        }
        let relation = local == nil ? .overwrite
            : dot.map { DeltaRelation.of(incoming: $0, previous: previousDot, localDot: localDot, localPrevious: nil) } ?? .overwrite
        var merge = RemoteMerge(relation: relation, changed: false)
        guard let local else {
            install(key: key, record: record, namespaceIndex: namespaceIndex, nowUnixMs: nowUnixMs)
            merge.changed = true
            return merge
        }
        let incomingWins = record.valueStamp > local.valueStamp
        if relation == .concurrent && record.valueStamp != local.valueStamp {
            merge.winnerStamp = incomingWins ? record.valueStamp : local.valueStamp
            merge.loserStamp = incomingWins ? local.valueStamp : record.valueStamp
            merge.loserValue = incomingWins ? local.value : record.value
        }
        let merged = local.merged(with: record)
        guard merged != local else { return merge }
        merge.changed = true
        guard let slot = liveSlot else {
            if merged.value != nil && !merged.isExpired(atUnixMs: nowUnixMs) {
                _ = takeTombstone(key)
                install(key: key, record: merged, namespaceIndex: namespaceIndex, nowUnixMs: nowUnixMs)
            } else {
                setTombstone(key, record: merged)
                logDeadState(key, namespaceIndex: namespaceIndex)
            }
            return merge
        }
        if merged.value == nil || merged.isExpired(atUnixMs: nowUnixMs) {
            // Logged as a delete either way: the disk keeps the dead state, not nothing.
            _ = remove(slot: slot, logging: .deleted)
            setTombstone(key, record: merged)
            return merge
        }
        if merged.valueStamp != local.valueStamp {
            setValue(at: slot, merged.value!, stamp: merged.valueStamp)
            if merged.encoding != .byContent { setEncoding(at: slot, merged.encoding) }
        }
        if merged.expiryStamp != local.expiryStamp {
            setExpiry(at: slot, unixMs: merged.expiryUnixMs, stamp: merged.expiryStamp)
        }
        setCounter(at: slot, merged.counter)
        setDots(at: slot, value: merged.dot, expiry: merged.expiryDot)
        return merge
    }

    /// Puts a merged live state in the index, or keeps it as the key's dead state.
    private mutating func install(key: [UInt8], record: DurableRecord, namespaceIndex: Int, nowUnixMs: Int64) {
        guard !record.isExpired(atUnixMs: nowUnixMs),
              let entry = record.entry(namespaceIndex: namespaceIndex, lastAccessUnixMs: nowUnixMs) else {
            setTombstone(key, record: record)
            logDeadState(key, namespaceIndex: namespaceIndex)
            return
        }
        let slot = key.withUnsafeBytes { insert(bytes: $0, entry: entry) }
        materializeCounter(at: slot)
    }

    /// Up to `limit` keys in the index from slot position `from` on, with their states, and the
    /// position to continue from (nil: the slots are done). Slots never move while their key
    /// lives, so a walk in steps sees every key present for the whole walk.
    public func replicatedStates(fromSlot from: Int, limit: Int) -> (states: [(key: [UInt8], namespaceIndex: Int, record: DurableRecord)], next: Int?) {
        var states: [(key: [UInt8], namespaceIndex: Int, record: DurableRecord)] = []
        var slot = from
        while slot < slots.count && states.count < limit {
            if slots[slot].hash != 0 {
                states.append((slots[slot].key.bytes, Int(slots[slot].entry.namespaceIndex), DurableRecord(slots[slot].entry)))
            }
            slot += 1
        }
        return (states, slot < slots.count ? slot : nil)
    }

    /// Calls `body` with every key in the index and its state (expired ones too: a peer must
    /// learn of an expiry field it missed), then every dead state: what a snapshot of this
    /// keyspace sends another data center. `namespaceIndex` is nil for dead states.
    public func forEachReplicatedState(
        _ body: (_ key: [UInt8], _ namespaceIndex: Int?, _ record: DurableRecord, _ dot: Dot?) -> Void
    ) {
        for slot in slots.indices where slots[slot].hash != 0 {
            body(slots[slot].key.bytes, Int(slots[slot].entry.namespaceIndex), DurableRecord(slots[slot].entry), slots[slot].entry.dot)
        }
        for (key, tombstone) in tombstones {
            body(key, nil, tombstone.record, tombstone.dot)
        }
    }

    // MARK: Partition tracking (docs/CLUSTER.md, "The server wiring")

    /// Per-partition trees and keys, when the node is one replica of several (nil otherwise:
    /// then no change costs anything for them).
    private var tracking: PartitionTracking?

    /// Whether this keyspace keeps partition trees.
    public var tracksPartitions: Bool { tracking != nil }

    /// The partition count the trees are kept for (nil: none are).
    public var trackedPartitionCount: Int? { tracking?.partitioner.partitionCount }

    /// Whether every namespace keeps a dead state for a removed key (as replicated namespaces
    /// do): what a replica store needs, or a delete would leave nothing to merge and an older
    /// dead state could stand for the key.
    public var keepsDeadStatesInEveryNamespace: Bool { !replicatedNamespaces.contains(false) }

    /// The state of `key` as a replica holds it: its live entry's record (expired or not), else
    /// its dead state, else nil.
    public func record(of key: [UInt8]) -> DurableRecord? {
        if let slot = slot(ofBytes: key) { return DurableRecord(slots[slot].entry) }
        return tombstones[key]?.record
    }

    /// Brings the partition trees up to date with every change since the last call. Whoever
    /// reads the trees calls it first (under the shard's lock); the keyspace also settles by
    /// itself once `PartitionTracking.pendingKeysMax` keys wait.
    public mutating func settlePartitions() {
        guard var settling = tracking, !settling.isSettled else { return }
        tracking = nil  // keeps `settling` the only reference: no copy of the trees
        settling.settle { key in
            if let slot = slot(ofBytes: key) { return (DurableRecord(slots[slot].entry), slot) }
            return tombstones[key].map { ($0.record, nil) }
        }
        tracking = settling
    }

    /// The tree of this keyspace's part of `partition` (settled: call `settlePartitions` first).
    public func partitionDigest(_ partition: Int) -> PartitionDigest {
        guard let tracking else { preconditionFailure("the keyspace does not track partitions") }
        precondition(tracking.isSettled, "partition trees read with changes pending")
        return tracking.held[partition]?.digest ?? PartitionDigest()
    }

    /// The keys of `partition` held here (live or dead), unordered.
    public func partitionKeys(_ partition: Int) -> Set<[UInt8]> {
        guard let tracking else { preconditionFailure("the keyspace does not track partitions") }
        precondition(tracking.isSettled, "partition keys read with changes pending")
        return tracking.held[partition]?.keys ?? []
    }

    /// Keys whose change the trees do not show yet (at most `PartitionTracking.pendingKeysMax`).
    public var pendingPartitionKeys: Int { tracking?.pendingCount ?? 0 }

    /// The partitions of which this keyspace holds any key, ascending (settled).
    public var heldPartitions: [Int] {
        guard let tracking else { return [] }
        precondition(tracking.isSettled, "held partitions read with changes pending")
        return tracking.held.keys.sorted()
    }

    /// Makes `record` the key's state, exactly: live in the index when it holds a value not
    /// expired at `nowUnixMs`, otherwise its dead state. What a replica does with the result of
    /// `DurableRecord.merged` (the merge is the caller's: here nothing is merged). Logged like a
    /// command's change, for the disk.
    public mutating func put(key: [UInt8], record: DurableRecord, namespaceIndex: Int, nowUnixMs: Int64) {
        willChange(key: key)
        let live = record.isTombstone || record.isExpired(atUnixMs: nowUnixMs)
            ? nil : record.entry(namespaceIndex: namespaceIndex, lastAccessUnixMs: nowUnixMs)
        switch (slot(ofBytes: key), live) {
        case (let slot?, let entry?):
            setValue(at: slot, entry.value, stamp: entry.valueStamp)
            slots[slot].entry.encoding = entry.encoding
            setExpiry(at: slot, unixMs: entry.expiryUnixMs, stamp: entry.expiryStamp)
            // As given: a merged record's value already shows its counter when it should.
            slots[slot].entry.counter = entry.counter
            setDots(at: slot, value: entry.dot, expiry: entry.expiryDot)
        case (nil, let entry?):
            _ = takeTombstone(key)
            key.withUnsafeBytes { _ = insert(bytes: $0, entry: entry) }
        case (let slot?, nil):
            _ = remove(slot: slot, logging: .deleted)
            setTombstone(key, record: record)
        case (nil, nil):
            setTombstone(key, record: record)
            logDeadState(key, namespaceIndex: namespaceIndex)
        }
        assert(self.record(of: key) == record, "put keeps the record as given")
    }

    /// Forgets every key of `partition`, live or dead, without logging or counting it as a
    /// delete (the node no longer holds the partition: nothing happened to the keys). Returns
    /// them, for the caller to forget on disk too.
    public mutating func forgetPartition(_ partition: Int) -> [[UInt8]] {
        settlePartitions()
        let keys = Array(partitionKeys(partition))
        for key in keys {
            if let slot = slot(ofBytes: key) { _ = remove(slot: slot, logging: nil) }
            _ = takeTombstone(key)
        }
        settlePartitions()
        return keys
    }

    /// Notes, before the first change of a key since the last settle, what the trees hold for it.
    @inline(__always)
    private mutating func willChange(slot: Int) {
        if tracking != nil { noteChange(slots[slot].key.bytes) }
    }

    @inline(__always)
    private mutating func willChange(key: [UInt8]) {
        if tracking != nil { noteChange(key) }
    }

    private mutating func noteChange(_ key: [UInt8]) {
        guard !tracking!.isPending(key) else { return }
        if tracking!.pendingCount >= PartitionTracking.pendingKeysMax { settlePartitions() }
        let prior: Digest128?
        if let slot = slot(ofBytes: key) {
            prior = tracking!.digest(ofSlot: slot)
        } else {
            prior = tombstones[key].map { PartitionDigest.entryDigest(key: key, state: $0.record) }
        }
        tracking!.noteChange(key, prior: prior)
    }

    // MARK: Private

    @inline(__always)
    private mutating func logChange(slot: Int, _ kind: KeyChange.Kind, replacedDot: Dot? = nil) {
        guard anyLogged else { return }
        let namespace = slots[slot].entry.namespaceIndex
        guard loggedNamespaces[Int(namespace)] else { return }
        keyChanges.append(KeyChange(
            key: slots[slot].key.bytes, namespaceIndex: namespace, kind: kind, replacedDot: kind == .written ? replacedDot : slots[slot].entry.dot))
    }

    private mutating func adjustBytes(slot: Int, by delta: Int) {
        usedBytes += delta
        namespaceCounters[Int(slots[slot].entry.namespaceIndex)].bytes += delta
    }

    private mutating func addToExpiring(_ slot: Int) {
        slots[slot].entry.expiringPosition = Int32(expiring.count)
        expiring.append(Int32(slot))
        namespaceCounters[Int(slots[slot].entry.namespaceIndex)].keysWithExpiry += 1
    }

    private mutating func removeFromExpiring(_ slot: Int) {
        let position = Int(slots[slot].entry.expiringPosition)
        let last = expiring.removeLast()
        if position < expiring.count {
            expiring[position] = last
            slots[Int(last)].entry.expiringPosition = Int32(position)
        }
        slots[slot].entry.expiringPosition = -1
        namespaceCounters[Int(slots[slot].entry.namespaceIndex)].keysWithExpiry -= 1
    }
}
