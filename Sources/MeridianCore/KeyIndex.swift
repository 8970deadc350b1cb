/// The hash index of a `Keyspace`: open addressing with linear probing from key hashes to
/// slot numbers, with the full 64-bit hash stored in each bucket.
///
/// Why not `Dictionary<Key, Int>`: a dictionary compares keys on every probe, and each compare
/// follows pointers to the key's bytes — a cache miss per probe. Here a probe compares stored
/// hashes in one contiguous array, and the key bytes are read once, for the bucket whose hash
/// matches. The index never stores keys; the keyspace confirms a match against its slot.
///
/// Deletion shifts later buckets of the probe run back (no tombstones), so probe runs stay
/// short however many deletes happen. The table doubles at 75% load and halves below 12.5%,
/// so memory taken at a peak is given back when the keys go.
struct KeyIndex: Sendable {
    struct Bucket: Sendable {
        /// The key's hash with the top bit set; 0 marks an empty bucket.
        var hash: UInt64
        var slot: Int32
    }

    private var buckets: [Bucket]
    private var mask: Int
    /// Number of keys indexed.
    private(set) var count = 0
    /// Number of buckets.
    var capacity: Int { buckets.count }

    static let initialCapacity = 16

    init() {
        buckets = Array(repeating: Bucket(hash: 0, slot: 0), count: Self.initialCapacity)
        mask = Self.initialCapacity - 1
    }

    /// The hash of a key's bytes: SipHash with the process's random seed (so clients cannot
    /// aim collisions at the table), with the top bit set so that 0 can mean "empty".
    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return UInt64(bitPattern: Int64(hasher.finalize())) | (1 << 63)
    }

    /// The slot whose hash is `hash` and for which `matches` confirms the key, or nil.
    @inline(__always)
    func find(hash: UInt64, matches: (Int) -> Bool) -> Int? {
        var position = Int(truncatingIfNeeded: hash) & mask
        while true {
            let bucket = buckets[position]
            if bucket.hash == 0 { return nil }
            if bucket.hash == hash && matches(Int(bucket.slot)) { return Int(bucket.slot) }
            position = (position + 1) & mask
        }
    }

    /// Indexes `slot` under `hash`. The caller guarantees the key is not indexed yet.
    mutating func insert(hash: UInt64, slot: Int) {
        if (count + 1) * 4 > buckets.count * 3 { grow() }
        place(Bucket(hash: hash, slot: Int32(slot)))
        count += 1
    }

    /// Removes the bucket of `slot` (indexed under `hash`).
    mutating func remove(hash: UInt64, slot: Int) {
        var position = Int(truncatingIfNeeded: hash) & mask
        while buckets[position].hash != hash || buckets[position].slot != Int32(slot) {
            precondition(buckets[position].hash != 0, "removal of a slot that is not indexed")
            position = (position + 1) & mask
        }
        // Backward-shift deletion: move later members of the run into the hole when their
        // home position does not lie (cyclically) after the hole.
        var hole = position
        var next = position
        while true {
            next = (next + 1) & mask
            let candidate = buckets[next]
            if candidate.hash == 0 { break }
            let home = Int(truncatingIfNeeded: candidate.hash) & mask
            let staysPut = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next)
            if staysPut { continue }
            buckets[hole] = candidate
            hole = next
        }
        buckets[hole] = Bucket(hash: 0, slot: 0)
        count -= 1
        if buckets.count > Self.initialCapacity && count * 8 < buckets.count { resize(to: buckets.count / 2) }
    }

    /// Forgets every key.
    mutating func removeAll() {
        self = KeyIndex()
    }

    private mutating func place(_ bucket: Bucket) {
        var position = Int(truncatingIfNeeded: bucket.hash) & mask
        while buckets[position].hash != 0 { position = (position + 1) & mask }
        buckets[position] = bucket
    }

    private mutating func grow() {
        resize(to: buckets.count * 2)
    }

    private mutating func resize(to newCapacity: Int) {
        let old = buckets
        buckets = Array(repeating: Bucket(hash: 0, slot: 0), count: newCapacity)
        mask = newCapacity - 1
        for bucket in old where bucket.hash != 0 { place(bucket) }
    }
}

/// Byte-wise equality of two buffers, eight bytes at a time.
@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let count = a.count
    guard count == b.count else { return false }
    var index = 0
    while index + 8 <= count {
        if a.loadUnaligned(fromByteOffset: index, as: UInt64.self) != b.loadUnaligned(fromByteOffset: index, as: UInt64.self) {
            return false
        }
        index += 8
    }
    while index < count {
        if a[index] != b[index] { return false }
        index += 1
    }
    return true
}
