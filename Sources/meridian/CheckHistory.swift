import ArgumentParser
import Glibc
import MeridianCore

extension Meridian {
    /// `meridian check-history FILE`: the linearizability checker of docs/CONSISTENCY.md run on
    /// a history clients recorded (the strong integration tests write one).
    struct CheckHistory: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-history",
            abstract: "Checks a recorded client history of strong keys for linearizability, key by key, and lock tokens for order.",
            discussion: """
                FILE holds one JSON object per line: {"key": K, "op": OP, "invoked": T, "completed": T or null, ...} \
                with times from one monotonic clock (any unit) and completed null when the client never learned \
                the outcome. OP is "get" (with "value": the string read, or null), "set" (with "value"; null \
                deletes), "cas" (with "expected", "new" and "ok"), "incr" (with "amount" and "result") or "lock" \
                (with "token": a granted fencing token). Exits 0 when every key's history is linearizable and \
                every lock token granted after another one completed is larger; 1 naming the first key that is \
                not; 2 when the search gave up on a key.
                """)

        @Argument(help: "The history file (JSON lines).")
        var file: String

        func run() throws {
            guard let handle = fopen(file, "r") else {
                Self.fail("\(file): cannot open: \(String(cString: strerror(errno)))")
            }
            defer { fclose(handle) }
            var histories: [String: [Linearizability.Operation]] = [:]
            var grants: [String: [(token: Int, invoked: UInt64, completed: UInt64)]] = [:]
            var line: UnsafeMutablePointer<CChar>?
            var capacity = 0
            var number = 0
            defer { free(line) }
            while getline(&line, &capacity, handle) > 0 {
                number += 1
                let text = String(cString: line!).trimmingSuffixNewline()
                if text.isEmpty { continue }
                let value: JSONValue
                do {
                    value = try JSONValue(parsing: ArraySlice(Array(text.utf8)))
                } catch {
                    Self.fail("\(file):\(number): not JSON: \(error)")
                }
                guard let key = value["key"]?.stringValue, let op = value["op"]?.stringValue,
                      let invoked = value["invoked"]?.intValue else {
                    Self.fail("\(file):\(number): needs key, op and invoked")
                }
                let completed = value["completed"]?.intValue.map(UInt64.init)
                func bytes(_ field: String) -> [UInt8]? { value[field]?.stringValue.map { Array($0.utf8) } }
                let kind: Linearizability.Operation.Kind
                switch op {
                case "get": kind = .read(observed: bytes("value"))
                case "set": kind = .write(bytes("value"))
                case "cas": kind = .compareAndSet(expected: bytes("expected"), new: bytes("new"), succeeded: value["ok"] == .bool(true))
                case "incr":
                    guard let amount = value["amount"]?.intValue else { Self.fail("\(file):\(number): incr needs amount") }
                    kind = .increment(amount: Int64(amount), result: value["result"]?.intValue.map(Int64.init))
                case "lock":
                    guard let token = value["token"]?.intValue, let completed else { continue }
                    grants[key, default: []].append((token, UInt64(invoked), completed))
                    continue
                default:
                    Self.fail("\(file):\(number): unknown op '\(op)'")
                }
                histories[key, default: []].append(Linearizability.Operation(kind, invokedAt: UInt64(invoked), completedAt: completed))
            }
            let operations = histories.values.reduce(0) { $0 + $1.count }
            for key in histories.keys.sorted() {
                switch Linearizability.check(histories[key]!) {
                case .linearizable: continue
                case .notLinearizable(let prefix):
                    let history = histories[key]!
                    print("key \(key): NOT linearizable (\(history.count) operations); the longest linearizable prefix has \(prefix.count):")
                    for index in prefix.suffix(5) { print("  ok   \(history[index])") }
                    let rest = Set(history.indices).subtracting(prefix).sorted { history[$0].invokedAt < history[$1].invokedAt }
                    for index in rest.prefix(5) { print("  next \(history[index])") }
                    throw ExitCode(1)
                case .undecided:
                    print("key \(key): undecided (the search gave up)")
                    throw ExitCode(2)
                }
            }
            var grantCount = 0
            for (name, list) in grants {
                grantCount += list.count
                if Set(list.map(\.token)).count != list.count {
                    print("lock \(name): a token was granted twice")
                    throw ExitCode(1)
                }
                for a in list {
                    for b in list where a.completed < b.invoked && a.token >= b.token {
                        print("lock \(name): token \(b.token) was granted after token \(a.token) had been")
                        throw ExitCode(1)
                    }
                }
            }
            print("linearizable: \(histories.count) keys, \(operations) operations; lock tokens in order: \(grants.count) locks, \(grantCount) grants")
        }

        static func fail(_ message: String) -> Never {
            var standardError = StandardError()
            print(message, to: &standardError)
            Glibc.exit(1)
        }
    }
}

extension String {
    func trimmingSuffixNewline() -> String {
        var text = self
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        return text
    }
}
