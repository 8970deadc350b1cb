import ArgumentParser
import Foundation
import MeridianConfig
import MeridianCore

extension Meridian {
    /// `meridian cluster add-node | remove-node` (docs/CLUSTER.md, "Rebalancing"): asks a node of
    /// the data center to commit the change (`CLUSTER ADDNODE` / `REMOVENODE`), then follows the
    /// move in INFO cluster until every partition switched.
    struct ClusterAdmin: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cluster",
            abstract: "Changes a data center's placement: adds a spare node, removes a node.",
            subcommands: [AddNode.self, RemoveNode.self])
    }

    struct PlacementChangeOptions: ParsableArguments {
        @Option(help: "The cluster configuration file (YAML): where the data center's nodes are.")
        var config: String
        @Option(help: "A node to ask (host:port of its client address); default: the data center's members, in order, until one answers.")
        var via: String?
        @Flag(help: "Return once the change is committed, without waiting for the partitions to move.")
        var noWait = false
        @Option(help: "Seconds to wait for the partitions to move.")
        var timeout = 3_600

        /// Runs `subcommand` (ADDNODE or REMOVENODE) for `name`, then waits until the change ended.
        func run(_ subcommand: String, name: String) throws {
            let configuration: MeridianConfiguration
            do {
                configuration = try ConfigurationLoader.load(path: config)
            } catch {
                throw ValidationError("\(config): \(error)")
            }
            guard let located = configuration.locateNode(named: name) else {
                throw ValidationError("no node named '\(name)' in \(config)")
            }
            let datacenter = configuration.cluster.datacenters[located.datacenter]
            guard datacenter.nodes.count > 1 else {
                throw ValidationError("data center '\(datacenter.name)' has one node: it has no placement to change")
            }
            let candidates = via.map { [$0] }
                ?? datacenter.nodes.filter { $0.name != name || subcommand == "ADDNODE" }.compactMap { $0.client?.description }
            var asked: (client: RESPClient, address: String)?
            var failures: [String] = []
            // A spare started a moment ago may not have reached the voters yet, and voters started
            // a moment ago may have no quorum yet: wait for them.
            let heardDeadline = Date().addingTimeInterval(20)
            var waitedForHeard = false
            var waitedForQuorum = false
            // A node that lost the connection after the change was sent may have committed it:
            // asked again, "already done" is then the change's own doing.
            var maybeSent = false
            let alreadyDone = subcommand == "ADDNODE" ? ["already a member"] : ["is not a member"]
            attempts: while asked == nil {
                for address in candidates {
                    let client: RESPClient
                    do {
                        client = try RESPClient(address: address)
                    } catch {
                        failures.append("\(address): \(error)")
                        continue
                    }
                    let reply: RESPClient.Reply
                    do {
                        reply = try client.call(["CLUSTER", subcommand, name])
                    } catch {
                        failures.append("\(address): \(error)")
                        maybeSent = true
                        continue
                    }
                    switch reply {
                    case .simple:
                        asked = (client, address)
                        break attempts
                    case .error(let message) where maybeSent && (alreadyDone.contains { message.contains($0) } || message.contains("still moving")):
                        print("the change was already made (a connection was lost while it was asked): following it")
                        asked = (client, address)
                        break attempts
                    case .error(let message) where message.contains("has not been heard from") && Date() < heardDeadline:
                        if !waitedForHeard { print("waiting for \(name) to reach the placement voters ...") }
                        waitedForHeard = true
                        usleep(500_000)
                        continue attempts
                    case .error(let message) where message.contains("the change was not committed") && Date() < heardDeadline:
                        // Certainly not applied (voters that just started may still be electing
                        // a leader): ask again.
                        if !waitedForQuorum { print("waiting for the placement voters to form a quorum ...") }
                        waitedForQuorum = true
                        usleep(500_000)
                        continue attempts
                    case .error(let message) where message.hasPrefix("TRYAGAIN") || message.contains("not a placement voter") || message.contains("no placement voter"):
                        failures.append("\(address): \(message)")
                        // "No voter answered ... may have been committed": asked again, the
                        // change may turn out done already.
                        if message.contains("may have been committed") { maybeSent = true }
                    case .error(let message):
                        throw ValidationError("\(address): \(message)")
                    default:
                        throw ValidationError("\(address): unexpected reply \(reply)")
                    }
                }
                break
            }
            guard let (client, address) = asked else {
                throw ValidationError("no node of data center '\(datacenter.name)' took the change:\n  " + failures.joined(separator: "\n  "))
            }
            print("\(subcommand == "ADDNODE" ? "adding" : "removing") \(name): committed (asked \(address))")
            guard !noWait else { return }
            let started = Date()
            var lastMoving = -1
            var follower = client
            var followed = address
            while true {
                let info: RESPClient.Reply
                do {
                    info = try follower.call(["INFO", "cluster"])
                } catch {
                    // The node followed went away: any other node of the data center will do.
                    guard let next = candidates.filter({ $0 != followed }).lazy.compactMap({ candidate in
                        (try? RESPClient(address: candidate)).map { ($0, candidate) } }).first else {
                        throw ValidationError("no node of data center '\(datacenter.name)' answers INFO cluster any more; the change is committed")
                    }
                    (follower, followed) = next
                    continue
                }
                guard case .bulk(let bytes?) = info else { throw ValidationError("\(followed): INFO cluster failed") }
                let fields = Meridian.infoFields(bytes)
                let members = (fields["cluster_placement"] ?? "").split(separator: ",").map(String.init)
                let done = fields["cluster_change"] == "none"
                    && (subcommand == "ADDNODE" ? members.contains(name) : !members.contains { $0 == name || $0.hasPrefix(name + "(") })
                if done {
                    print("done in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: placement epoch \(fields["cluster_placement_epoch"] ?? "?"), members \(members.joined(separator: ","))")
                    if subcommand == "REMOVENODE", let removed = located.config.client?.description,
                       configuration.cluster.datacenters.filter({ !$0.witness }).count > 1 {
                        try Meridian.waitForShippedLog(of: name, at: removed, timeout: timeout)
                    }
                    return
                }
                let moving = Int(fields["cluster_partitions_moving"] ?? "") ?? -1
                if moving != lastMoving {
                    print("  \(moving) partitions still moving (placement epoch \(fields["cluster_placement_epoch"] ?? "?"))")
                    lastMoving = moving
                }
                guard Date().timeIntervalSince(started) < Double(timeout) else {
                    throw ValidationError("the change is committed but its partitions did not finish moving within \(timeout) s (INFO cluster at \(followed) tells how far it got)")
                }
                usleep(200_000)
            }
        }
    }

    /// An INFO reply's `field:value` lines.
    static func infoFields(_ bytes: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            if let colon = line.firstIndex(of: ":") { fields[String(line[..<colon])] = String(line[line.index(after: colon)...]) }
        }
        return fields
    }

    /// Follows a removed node until every other data center acknowledged its whole outbound log
    /// (docs/CLUSTER.md, "Cross-DC shipping with many nodes per DC"): the deltas of the commands
    /// it executed are shipped only by it, so it must not be stopped before. It first waits
    /// until the node itself no longer counts as a member (it executes nothing after that), then
    /// until INFO replication's `acked` of every peer data center reaches its
    /// `replication_last_sequence` with no snapshot owed.
    static func waitForShippedLog(of name: String, at address: String, timeout: Int) throws {
        let deadline = Date().addingTimeInterval(Double(timeout))
        var reported = ""
        func say(_ line: String) {
            if line != reported { print(line) }
            reported = line
        }
        func info(_ section: String) -> [String: String]? {
            guard let client = try? RESPClient(address: address),
                  case .bulk(let bytes?)? = try? client.call(["INFO", section]) else { return nil }
            return infoFields(bytes)
        }
        while true {
            guard let cluster = info("cluster"), let replication = info("replication") else {
                print("warning: \(name) does not answer INFO at \(address): whether the other data centers have every delta it executed is unknown (a node that is down shipped what it had shipped)")
                return
            }
            var waiting: [String] = []
            if cluster["cluster_member"] != "no" {
                waiting = ["\(name) to see itself removed"]
            } else if let last = replication["replication_last_sequence"].flatMap(UInt64.init) {
                // `peer_<dc>:node=...,witness=0,...,acked=<sequence>,...,snapshot_needed=<0|1>,...`
                for (field, value) in replication where field.hasPrefix("peer_") && value.hasPrefix("node=") {
                    var parts: [String: String] = [:]
                    for pair in value.split(separator: ",") {
                        let halves = pair.split(separator: "=", maxSplits: 1)
                        if halves.count == 2 { parts[String(halves[0])] = String(halves[1]) }
                    }
                    if parts["witness"] == "1" { continue }
                    let acked = parts["acked"].flatMap(UInt64.init) ?? 0
                    if acked < last || parts["snapshot_needed"] == "1" { waiting.append(String(field.dropFirst(5))) }
                }
                waiting.sort()
            } else {
                waiting = ["INFO replication at \(address)"]
            }
            if waiting.isEmpty {
                print("\(name)'s deltas are acknowledged by every other data center: it can be stopped")
                return
            }
            say("waiting for \(waiting.joined(separator: ", ")) (\(name)'s last deltas) ...")
            guard Date() < deadline else {
                throw ValidationError("\(name) left the placement, but its last deltas were not acknowledged within \(timeout) s (waiting for \(waiting.joined(separator: ", "))): do not stop it yet (INFO replication at \(address))")
            }
            usleep(200_000)
        }
    }

    struct AddNode: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-node",
            abstract: "Adds a spare node (listed with `spare: true` in every node's configuration, and running) to its data center: about 1/N of the partitions move to it while the data center serves.")
        @Argument(help: "The node's name in the configuration.")
        var name: String
        @OptionGroup var options: PlacementChangeOptions

        func run() throws { try options.run("ADDNODE", name: name) }
    }

    struct RemoveNode: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove-node",
            abstract: "Removes a node from its data center: its partitions move to the other nodes while the data center serves, then (with other data centers) its last deltas reach them; stop it afterwards.")
        @Argument(help: "The node's name in the configuration.")
        var name: String
        @OptionGroup var options: PlacementChangeOptions

        func run() throws { try options.run("REMOVENODE", name: name) }
    }
}
