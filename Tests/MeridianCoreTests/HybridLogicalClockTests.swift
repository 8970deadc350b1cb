// Proves the HLC rules of Kulkarni et al. 2014 (§3, Algorithm 2): local events are strictly
// monotonic even when the wall clock stalls or goes back, receive events dominate both
// inputs, the logical counter borrows a millisecond when exhausted, and remote timestamps
// further ahead than `maxClockOffsetMs` are refused.
import MeridianCore
import Testing

@Suite struct HybridLogicalClockTests {
    @Test func packsPhysicalAndLogical() {
        let t = HLCTimestamp(physicalMs: 1_700_000_000_000, logical: 7)
        #expect(t.physicalMs == 1_700_000_000_000)
        #expect(t.logical == 7)
        #expect(HLCTimestamp(physicalMs: 5, logical: 0) > HLCTimestamp(physicalMs: 4, logical: 65535))
    }

    @Test func localEventsAdvanceWithTheWallClock() {
        var clock = HybridLogicalClock()
        let a = clock.now(physicalMs: 100)
        let b = clock.now(physicalMs: 101)
        #expect(a == HLCTimestamp(physicalMs: 100, logical: 0))
        #expect(b == HLCTimestamp(physicalMs: 101, logical: 0))
    }

    @Test func stalledOrBackwardWallClockCountsLogically() {
        var clock = HybridLogicalClock()
        let a = clock.now(physicalMs: 100)
        let b = clock.now(physicalMs: 100)
        let c = clock.now(physicalMs: 90)
        #expect(b == HLCTimestamp(physicalMs: 100, logical: 1))
        #expect(c == HLCTimestamp(physicalMs: 100, logical: 2))
        #expect(a < b && b < c)
    }

    @Test func exhaustedLogicalCounterBorrowsAMillisecond() {
        let last = HLCTimestamp(physicalMs: 100, logical: HLCTimestamp.logicalMax)
        let next = HybridLogicalClock.tick(after: last, physicalMs: 100)
        #expect(next == HLCTimestamp(physicalMs: 101, logical: 0))
    }

    @Test func receiveDominatesLocalAndRemote() throws {
        var clock = HybridLogicalClock(last: HLCTimestamp(physicalMs: 100, logical: 3))
        let remote = HLCTimestamp(physicalMs: 200, logical: 9)
        let received = try clock.receive(remote, physicalMs: 150)
        #expect(received > remote)
        #expect(received == HLCTimestamp(physicalMs: 200, logical: 10))
        let later = clock.now(physicalMs: 150)
        #expect(later > received)
    }

    @Test func refusesRemoteTooFarAhead() {
        var clock = HybridLogicalClock(maxClockOffsetMs: 500)
        #expect(throws: HLCError.self) {
            try clock.receive(HLCTimestamp(physicalMs: 10_601, logical: 0), physicalMs: 10_000)
        }
        #expect(clock.last == .zero, "a refused timestamp must not move the clock")
        #expect(throws: Never.self) {
            try clock.receive(HLCTimestamp(physicalMs: 10_500, logical: 0), physicalMs: 10_000)
        }
    }

    @Test func randomInterleavingsStayStrictlyMonotonic() throws {
        var generator = SplitMix64(seed: 42)
        var clock = HybridLogicalClock()
        var wall: UInt64 = 1_000
        var previous = HLCTimestamp.zero
        for _ in 0..<10_000 {
            // The wall clock jitters back and forth.
            wall = UInt64(max(0, Int(wall) + Int.random(in: -3...4, using: &generator)))
            let next: HLCTimestamp
            if Bool.random(using: &generator) {
                next = clock.now(physicalMs: wall)
            } else {
                let remote = HLCTimestamp(physicalMs: wall + UInt64.random(in: 0...100, using: &generator), logical: 0)
                next = try clock.receive(remote, physicalMs: wall)
            }
            #expect(next > previous)
            previous = next
        }
    }
}
