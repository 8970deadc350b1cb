/// What a forwarded command ended with, for the client (docs/CLUSTER.md, "Forwarding").
public enum ForwardingResult: Sendable, Equatable {
    /// The primary ran it: its reply, RESP bytes to write to the client as they are.
    case replied([UInt8])
    /// No reply within `request_timeout`, or the link to the primary dropped. `mayHaveRun`:
    /// the primary may have run it (it was sent and not refused), so it is not sent again.
    case timedOut(mayHaveRun: Bool)
    /// Its arguments do not fit one peer frame: nothing ran.
    case tooLarge
    /// It ran, but its reply does not fit one peer frame (the primary says so instead).
    case replyTooLarge
    /// No primary of the partition was alive within `request_timeout`: nothing ran.
    case noPrimary
}

/// What a step of the forwarder asks the shell to do.
public enum ForwardingOutput: Sendable, Equatable {
    /// Send `COMMAND` to a primary.
    case send(to: Int, ClusterMessage)
    /// Write the result in the client's slot of its connection's reply queue.
    case reply(client: UInt64, ForwardingResult)
    /// A primary refused a command as routed by an older placement: fetch the committed one
    /// and hand it over (`learned`).
    case fetchPlacement
}

/// The coordinator's side of forwarding commands to their partition's primary (docs/CLUSTER.md,
/// "Forwarding"): it numbers requests, matches replies, re-routes a command a primary refused
/// with `MOVED-EPOCH` (it did not run), and never sends again one that may have run — a command
/// unanswered within `request_timeout`, or on a link that dropped, fails with "may have been
/// applied". Deterministic: the shell (or a test) supplies time, the placement's epoch and the
/// partition's current primary (the first owner SWIM believes alive), and carries out the
/// outputs.
public struct CommandForwarder: Sendable {
    /// Why a command waits instead of being in flight.
    enum Waiting: Sendable, Equatable {
        /// A primary refused it (`MOVED-EPOCH` with its epoch): it did not run; it goes again
        /// once a placement at least that new names a primary.
        case placement(atLeast: UInt64)
        /// No primary was alive when it was to be sent.
        case primary
        /// The primary's link has `inFlightPerLinkMax` commands in flight.
        case link(Int)
    }

    enum Where: Sendable, Equatable {
        case sent(to: Int, request: UInt64)
        case waiting(Waiting)
    }

    struct Command: Sendable {
        var partition: Int
        var protocolVersion: UInt8
        var passedOn: Bool
        var commands: [[[UInt8]]]
        var deadlineMs: Int64
        var place: Where
    }

    public let requestTimeoutMs: Int64
    /// Commands awaiting replies on one link at most; past it `forward` refuses (the shell
    /// stops reading from the client until replies drain).
    public let inFlightPerLinkMax: Int
    /// The largest `COMMAND` message the link carries (a peer frame's payload).
    public let messageBytesMax: Int

    private var commands: [UInt64: Command] = [:]
    private var clientOfRequest: [UInt64: UInt64] = [:]
    private var inFlightByPeer: [Int: Int] = [:]
    private var nextRequest: UInt64
    private var outputs: [ForwardingOutput] = []
    private var fetchRequested = false

    /// `incarnation` must grow across restarts (the start time will do): request numbers start
    /// from it, so that a primary's late answer to a request of the previous run is never taken
    /// for an answer to a request of this one.
    public init(requestTimeoutMs: Int64, inFlightPerLinkMax: Int, messageBytesMax: Int, incarnation: UInt64 = 0) {
        precondition(requestTimeoutMs > 0 && inFlightPerLinkMax > 0 && messageBytesMax > 0)
        self.nextRequest = (incarnation & 0x0000_0FFF_FFFF_FFFF) << 20 | 1
        self.requestTimeoutMs = requestTimeoutMs
        self.inFlightPerLinkMax = inFlightPerLinkMax
        self.messageBytesMax = messageBytesMax
    }

    /// Commands forwarded and not yet answered (in flight or waiting).
    public var pendingCount: Int { commands.count }

    /// Commands awaiting replies from `peer`.
    public func inFlight(to peer: Int) -> Int { inFlightByPeer[peer, default: 0] }

    /// The bytes `COMMAND` takes for these commands (as `ClusterCodec` writes it).
    public static func messageBytes(of commands: [[[UInt8]]]) -> Int {
        var bytes = 1 + 8 + 8 + 4 + 1 + 1 + 4
        for arguments in commands {
            bytes += 4
            for argument in arguments { bytes += 4 + argument.count }
        }
        return bytes
    }

    /// Forwards `commands` (one command, or a transaction's several, all of `partition`) for
    /// `client` to `primary` (nil: none alive now; it waits for one until its deadline).
    /// `client` names one reply slot (one command, or one partition's part of a split one): it
    /// is unique among the commands pending, and grows in arrival order, the order waiting
    /// commands are sent in. Returns false, doing nothing, when `primary`'s link already has
    /// `inFlightPerLinkMax` commands in flight or commands waiting for room on it: the shell
    /// holds the client's input and asks again later.
    public mutating func forward(
        client: UInt64, partition: Int, protocolVersion: UInt8 = 2, passedOn: Bool = false, commands: [[[UInt8]]], epoch: UInt64,
        primary: Int?, nowMs: Int64
    ) -> Bool {
        precondition(self.commands[client] == nil, "a client forwards one command at a time per reply slot")
        precondition(!commands.isEmpty && commands.allSatisfy { !$0.isEmpty }, "a forwarded command has arguments")
        guard Self.messageBytes(of: commands) <= messageBytesMax else {
            outputs.append(.reply(client: client, .tooLarge))
            return true
        }
        if let primary, inFlight(to: primary) >= inFlightPerLinkMax || waitsForRoom(on: primary) { return false }
        self.commands[client] = Command(partition: partition, protocolVersion: protocolVersion, passedOn: passedOn, commands: commands, deadlineMs: nowMs + requestTimeoutMs, place: .waiting(.primary))
        if let primary { send(client: client, to: primary, epoch: epoch) }
        return true
    }

    /// Handles a `COMMAND-REPLY` from `peer`; other messages are not the forwarder's.
    public mutating func receive(_ message: ClusterMessage, from peer: Int) {
        guard case .commandReply(let request, let outcome) = message,
              let client = clientOfRequest[request], let command = commands[client],
              command.place == .sent(to: peer, request: request) else { return }
        clientOfRequest[request] = nil
        inFlightByPeer[peer, default: 1] -= 1
        switch outcome {
        case .executed(let reply):
            commands[client] = nil
            outputs.append(.reply(client: client, .replied(reply)))
        case .replyTooLarge:
            commands[client] = nil
            outputs.append(.reply(client: client, .replyTooLarge))
        case .movedEpoch(let epoch):
            // It did not run: send it again once the placement after `epoch` is known.
            commands[client]!.place = .waiting(.placement(atLeast: epoch))
            requestPlacement()
        }
    }

    /// A committed placement (its `epoch`) is known — the shell calls this for every placement
    /// it learns, its periodic refresh included: commands that wait for one, for a primary or
    /// for room on a link go to the primary it names (`primary(partition)`; nil: none alive).
    public mutating func learned(epoch: UInt64, primary: (Int) -> Int?) {
        fetchRequested = false
        resend(epoch: epoch, primary: primary)
    }

    /// Time passes: commands past their deadline fail; waiting ones whose primary is now
    /// alive are sent (`epoch` and `primary` as in `learned`).
    public mutating func tick(nowMs: Int64, epoch: UInt64, primary: (Int) -> Int?) {
        for (client, command) in commands.sorted(by: { $0.key < $1.key }) where command.deadlineMs <= nowMs {
            let result: ForwardingResult
            switch command.place {
            case .sent(let peer, let request):
                clientOfRequest[request] = nil
                inFlightByPeer[peer, default: 1] -= 1
                result = .timedOut(mayHaveRun: true)
            case .waiting(.placement), .waiting(.link):
                result = .timedOut(mayHaveRun: false)
            case .waiting(.primary):
                result = .noPrimary
            }
            commands[client] = nil
            outputs.append(.reply(client: client, result))
        }
        resend(epoch: epoch, primary: primary)
        // A fetch that brought an older placement than a refusal named: ask again.
        if commands.values.contains(where: { if case .waiting(.placement) = $0.place { true } else { false } }) { requestPlacement() }
    }

    private func waitsForRoom(on peer: Int) -> Bool {
        commands.values.contains { $0.place == .waiting(.link(peer)) }
    }

    private mutating func requestPlacement() {
        guard !fetchRequested else { return }
        fetchRequested = true
        outputs.append(.fetchPlacement)
    }

    /// The link to `peer` dropped: every command in flight on it may have run, and fails so.
    public mutating func linkLost(_ peer: Int) {
        for (client, command) in commands.sorted(by: { $0.key < $1.key }) {
            guard case .sent(peer, let request) = command.place else { continue }
            clientOfRequest[request] = nil
            commands[client] = nil
            outputs.append(.reply(client: client, .timedOut(mayHaveRun: true)))
        }
        inFlightByPeer[peer] = nil
    }

    /// The shell could not hand `request`'s `COMMAND` to a link (none to the primary is up):
    /// it never left, so it did not run. It goes again, to whichever owner is the primary then,
    /// on the next tick or placement; at its deadline it fails as "did not run".
    public mutating func notSent(request: UInt64) {
        guard let client = clientOfRequest[request], case .sent(let peer, request)? = commands[client]?.place else { return }
        clientOfRequest[request] = nil
        inFlightByPeer[peer, default: 1] -= 1
        commands[client]!.place = .waiting(.link(peer))
    }

    /// The outputs so far, in order; they are cleared.
    public mutating func takeOutputs() -> [ForwardingOutput] {
        defer { outputs.removeAll(keepingCapacity: true) }
        return outputs
    }

    private mutating func resend(epoch: UInt64, primary: (Int) -> Int?) {
        for (client, command) in commands.sorted(by: { $0.key < $1.key }) {
            switch command.place {
            case .sent: continue
            case .waiting(.placement(let atLeast)) where epoch < atLeast: continue
            case .waiting: break
            }
            // A placement at least as new as any refusal's is known: what is missing now is a
            // live primary, or room on its link.
            guard let target = primary(command.partition) else {
                commands[client]!.place = .waiting(.primary)
                continue
            }
            guard inFlight(to: target) < inFlightPerLinkMax else {
                commands[client]!.place = .waiting(.link(target))
                continue
            }
            send(client: client, to: target, epoch: epoch)
        }
    }

    private mutating func send(client: UInt64, to peer: Int, epoch: UInt64) {
        let request = nextRequest
        nextRequest += 1
        let command = commands[client]!
        commands[client]!.place = .sent(to: peer, request: request)
        clientOfRequest[request] = client
        inFlightByPeer[peer, default: 0] += 1
        outputs.append(.send(to: peer, .command(request: request, epoch: epoch, partition: command.partition, protocolVersion: command.protocolVersion, passedOn: command.passedOn,
            commands: command.commands)))
    }
}
