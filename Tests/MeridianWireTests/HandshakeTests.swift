// Proves the handshake and acknowledgement payloads round-trip, and that truncations and
// malformed fields (unknown role, non-UTF-8 names, unsorted or zero version-vector entries)
// are refused with typed errors rather than accepted.
import MeridianCore
import MeridianWire
import Testing

@Suite struct HandshakeTests {
    static let vector = VersionVector([
        (ReplicaID(datacenter: 0, node: 0), 41), (ReplicaID(datacenter: 1, node: 0), 7), (ReplicaID(datacenter: 0, node: 1), 3),
    ])

    @Test func roundTrips() throws {
        let hello = Handshake(cluster: "demo", node: "east-1", datacenter: "east", role: .full, versionVector: Self.vector)
        #expect(try Handshake(decoding: hello.encoded()) == hello)
        let witness = Handshake(cluster: "démo", node: "central-w", datacenter: "central", role: .witness, versionVector: VersionVector())
        #expect(try Handshake(decoding: witness.encoded()) == witness)
        let ack = Acknowledgement(versionVector: Self.vector, clock: HLCTimestamp(rawValue: 123_456))
        #expect(try Acknowledgement(decoding: ack.encoded()) == ack)
    }

    @Test func truncationsAndBadFieldsAreRefused() {
        let bytes = Handshake(cluster: "demo", node: "east-1", datacenter: "east", role: .full, versionVector: Self.vector).encoded()
        for length in 0..<bytes.count {
            #expect(throws: WireError.self) { try Handshake(decoding: Array(bytes.prefix(length))) }
        }
        var role = bytes
        role[1] = 9
        #expect(throws: WireError.malformed("unknown role")) { try Handshake(decoding: role) }
        var name = bytes
        name[3] = 0xFF  // first byte of "demo"
        #expect(throws: WireError.malformed("a name that is not UTF-8")) { try Handshake(decoding: name) }
        // Swap the first two vector entries: out of order.
        let ack = Acknowledgement(versionVector: Self.vector, clock: HLCTimestamp(rawValue: 1)).encoded()
        var unsorted = ack
        let first = 8 + 2
        for offset in 0..<12 { unsorted.swapAt(first + offset, first + 12 + offset) }
        #expect(throws: WireError.malformed("version vector origins out of order")) { try Acknowledgement(decoding: unsorted) }
        var zero = ack
        for offset in 4..<12 { zero[first + offset] = 0 }
        #expect(throws: WireError.malformed("version vector entry with sequence 0")) { try Acknowledgement(decoding: zero) }
    }
}
