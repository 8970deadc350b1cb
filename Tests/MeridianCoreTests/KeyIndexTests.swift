// Proves the open-addressing key index against a dictionary model under random inserts and
// removals, including runs of colliding hashes (where backward-shift deletion must keep every
// remaining key reachable) and growth past many doublings.
import Testing

@testable import MeridianCore

@Suite struct KeyIndexTests {
    @Test func randomOperationsMatchAModel() {
        var generator = SplitMix64(seed: 31)
        var index = KeyIndex()
        var model: [Int: UInt64] = [:]  // slot -> hash
        for step in 0..<60_000 {
            let slot = Int.random(in: 0..<3_000, using: &generator)
            // A tiny hash domain forces long collision runs; the top bit marks "occupied".
            let hash = (UInt64.random(in: 0..<64, using: &generator) << 1) | (1 << 63)
            if let existing = model[slot] {
                index.remove(hash: existing, slot: slot)
                model[slot] = nil
            } else {
                index.insert(hash: hash, slot: slot)
                model[slot] = hash
            }
            if step % 1_000 == 0 || step == 59_999 {
                #expect(index.count == model.count)
                for (slot, hash) in model {
                    #expect(index.find(hash: hash) { $0 == slot } == slot)
                }
            }
        }
    }

    @Test func shrinksWhenKeysGoAndStaysCorrect() {
        var index = KeyIndex()
        for slot in 0..<10_000 { index.insert(hash: UInt64(slot &* 2_654_435_761) | (1 << 63), slot: slot) }
        let peak = index.capacity
        #expect(peak >= 10_000 * 4 / 3)
        for slot in 10..<10_000 { index.remove(hash: UInt64(slot &* 2_654_435_761) | (1 << 63), slot: slot) }
        #expect(index.count == 10)
        #expect(index.capacity <= 128, "the table gave its peak memory back")
        for slot in 0..<10 { #expect(index.find(hash: UInt64(slot &* 2_654_435_761) | (1 << 63)) { $0 == slot } == slot) }
    }

    @Test func missesStopAtAnEmptyBucket() {
        var index = KeyIndex()
        for slot in 0..<1_000 { index.insert(hash: UInt64(slot) | (1 << 63), slot: slot) }
        #expect(index.find(hash: 5_000 | (1 << 63)) { _ in true } == nil)
        #expect(index.find(hash: 7 | (1 << 63)) { $0 == 7 } == 7)
        #expect(index.find(hash: 7 | (1 << 63)) { _ in false } == nil, "a hash match still needs the key to match")
    }
}
