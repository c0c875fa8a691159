import KVCore
import NIOCore
import RESP
import Testing
@testable import KVClient

/// `ClusterRoute` without sockets: a scripted cluster answers each step, and the route's steps
/// and outcome are compared with what the rules say. Both clients (kv-fcgi's blocking router,
/// kv-ws's event-loop connection) drive this same route.
@Suite("Cluster routing, decided without I/O")
struct ClusterRouteTests {
    static let a = ClusterNode(host: "10.0.0.1", port: 7000)
    static let b = ClusterNode(host: "10.0.0.2", port: 7000)
    static let slot = 42

    static func map(_ owner: ClusterNode?) -> ClusterTopology {
        var map = ClusterTopology()
        map.assign(slot: 0, to: a)   // a master that serves something, always
        if let owner { map.assign(slot: slot, to: owner) }
        return map
    }

    /// What one node does when sent the command.
    enum Answer {
        case reply(String)   // a RESP error text ("-" omitted), or "OK" for a success
        case unreachable
    }

    struct Scenario: CustomTestStringConvertible, Sendable {
        let name: String
        /// The process's map when the command starts (nil: none learnt yet).
        let startMap: ClusterTopology?
        /// What each "learn the map" returns, in order (nil: no node answered).
        let maps: [ClusterTopology?]
        /// Each node's answers, in order.
        let answers: [ClusterNode: [String]]
        /// The steps, as `describe` writes them.
        let steps: [String]
        /// "reply <text>" or "fail <code>: <message start>".
        let outcome: String
        var testDescription: String { name }
    }

    static func describe(_ step: ClusterRoute.Step) -> String {
        switch step {
        case .send(let node, let asking, let wait): "send \(node.host)\(asking ? " asking" : "")\(wait > 0 ? " after \(wait)ms" : "")"
        case .moved(let slot, let node, let relearn): "moved \(slot) \(node.host)\(relearn ? " relearn" : "")"
        case .learnMap(let excluded): "learn map\(excluded.map { " without \($0.host)" } ?? "")"
        case .reply(let reply): "reply \(reply.string ?? "\(reply)")"
        case .fail(let error): "fail \(error.code.rawValue): \(error.message)"
        }
    }

    /// Plays `scenario` the way both clients drive a route.
    static func play(_ scenario: Scenario) -> (steps: [String], outcome: String) {
        var route = ClusterRoute(slot: slot)
        var maps = scenario.maps[...]
        var answers = scenario.answers
        var map = scenario.startMap
        var steps: [String] = []
        var step = route.start(map: map)
        while steps.count < 40 {
            steps.append(describe(step))
            switch step {
            case .reply, .fail:
                return (Array(steps.dropLast()), steps.last ?? "")
            case .learnMap:
                if let learnt = maps.popFirst() ?? nil {
                    map = learnt
                    step = route.mapLearnt(learnt)
                } else {
                    step = route.mapUnavailable(KVError(.storageUnavailable, "storage unavailable: no cluster node answered"))
                }
            case .moved(let slot, let to, _):
                map?.assign(slot: slot, to: to)
                step = .send(to, asking: false, afterMilliseconds: 0)
            case .send(let node, _, _):
                let answer = answers[node]?.first ?? "OK"
                if answers[node]?.isEmpty == false { answers[node]?.removeFirst() }
                if answer == "unreachable" {
                    step = route.unreachable(node, error: KVError(.storageUnavailable, "storage unavailable: connection refused"))
                } else if answer == "OK" {
                    step = route.replied(.simpleString(ByteBuffer(string: "OK")), from: node)
                } else {
                    step = route.replied(.error(ByteBuffer(string: answer)), from: node)
                }
            }
        }
        return (steps, "did not end")
    }

    static let scenarios: [Scenario] = [
        Scenario(name: "the slot's master answers", startMap: map(a), maps: [], answers: [:],
                 steps: ["send 10.0.0.1"], outcome: "reply OK"),
        Scenario(name: "no map yet: it is learnt first", startMap: nil, maps: [map(b)], answers: [:],
                 steps: ["learn map", "send 10.0.0.2"], outcome: "reply OK"),
        Scenario(name: "MOVED: the slot's new master, and the map learnt again once",
                 startMap: map(a), maps: [], answers: [a: ["MOVED 42 10.0.0.2:7000"]],
                 steps: ["send 10.0.0.1", "moved 42 10.0.0.2 relearn", "send 10.0.0.2"], outcome: "reply OK"),
        Scenario(name: "ASK: once to the importing node, after ASKING",
                 startMap: map(a), maps: [], answers: [a: ["ASK 42 10.0.0.2:7000"]],
                 steps: ["send 10.0.0.1", "send 10.0.0.2 asking"], outcome: "reply OK"),
        Scenario(name: "TRYAGAIN: sent again after a short wait",
                 startMap: map(a), maps: [], answers: [a: ["TRYAGAIN Multiple keys request during rehashing of slot"]],
                 steps: ["send 10.0.0.1", "send 10.0.0.1 after 20ms"], outcome: "reply OK"),
        Scenario(name: "CLUSTERDOWN: unavailable at once",
                 startMap: map(a), maps: [], answers: [a: ["CLUSTERDOWN The cluster is down"]],
                 steps: ["send 10.0.0.1"], outcome: "fail storageUnavailable: storage unavailable: redis cluster node 10.0.0.1:7000: CLUSTERDOWN The cluster is down"),
        Scenario(name: "a failover mid-request: the master does not answer, the map names its replica",
                 startMap: map(a), maps: [map(b)], answers: [a: ["unreachable"]],
                 steps: ["send 10.0.0.1", "learn map without 10.0.0.1", "send 10.0.0.2"], outcome: "reply OK"),
        Scenario(name: "the master does not answer and nobody took over: its failure is the answer",
                 startMap: map(a), maps: [map(a)], answers: [a: ["unreachable"]],
                 steps: ["send 10.0.0.1", "learn map without 10.0.0.1"], outcome: "fail storageUnavailable: storage unavailable: connection refused"),
        Scenario(name: "the master does not answer and no node gives a map",
                 startMap: map(a), maps: [nil], answers: [a: ["unreachable"]],
                 steps: ["send 10.0.0.1", "learn map without 10.0.0.1"], outcome: "fail storageUnavailable: storage unavailable: connection refused"),
        Scenario(name: "no master serves the slot: the map is asked for once more, then unavailable",
                 startMap: map(nil), maps: [map(nil)], answers: [:],
                 steps: ["learn map"], outcome: "fail storageUnavailable: storage unavailable: no node of the cluster serves slot 42"),
        Scenario(name: "the redirect cap: two nodes that keep sending the command to each other",
                 startMap: map(a), maps: [],
                 answers: [a: Array(repeating: "MOVED 42 10.0.0.2:7000", count: 5), b: Array(repeating: "MOVED 42 10.0.0.1:7000", count: 5)],
                 steps: ["send 10.0.0.1", "moved 42 10.0.0.2 relearn", "send 10.0.0.2", "moved 42 10.0.0.1", "send 10.0.0.1",
                         "moved 42 10.0.0.2", "send 10.0.0.2", "moved 42 10.0.0.1", "send 10.0.0.1", "moved 42 10.0.0.2", "send 10.0.0.2",
                         "moved 42 10.0.0.1", "send 10.0.0.1", "moved 42 10.0.0.2", "send 10.0.0.2", "moved 42 10.0.0.1", "send 10.0.0.1"],
                 outcome: "fail storageUnavailable: storage unavailable: the cluster kept redirecting slot 42"),
        Scenario(name: "an ordinary error reply is the command's answer, not the cluster's",
                 startMap: map(a), maps: [], answers: [a: ["ERR value is not valid JSON"]],
                 steps: ["send 10.0.0.1"], outcome: "reply ERR value is not valid JSON"),
    ]

    @Test("each situation gets the steps and the outcome the rules give", arguments: scenarios)
    func scenario(_ scenario: Scenario) {
        let played = Self.play(scenario)
        #expect(played.steps == scenario.steps)
        #expect(played.outcome == scenario.outcome)
    }

    @Test("a connection that fails for another reason than unavailability is not retried")
    func otherFailures() {
        var route = ClusterRoute(slot: Self.slot)
        _ = route.start(map: Self.map(Self.a))
        let error = KVError(.storageError, "storage error: protocol error")
        #expect(route.unreachable(Self.a, error: error) == .fail(error))
    }

    @Test("a command without a key goes to a master")
    func keyless() {
        var route = ClusterRoute(slot: nil)
        #expect(route.start(map: Self.map(Self.b)) == .send(Self.a, asking: false, afterMilliseconds: 0))
    }

    @Test("the slot map is asked of the map's masters (but one that stopped answering), then the seeds, each once; every failure is named")
    func search() {
        let c = ClusterNode(host: "10.0.0.3", port: 7000)
        var search = ClusterSearch(map: Self.map(Self.b), seeds: [Self.b, c, Self.a], excluding: Self.a)
        var asked: [ClusterNode] = []
        while let node = search.next() {
            asked.append(node)
            #expect(search.slotMap(from: node, node == Self.b ? .success(.simpleString(ByteBuffer(string: "OK")))
                                                               : .failure(KVError(.storageUnavailable, "refused"))) == nil)
        }
        #expect(asked == [Self.b, c])
        #expect(search.failure.message == "storage unavailable: no cluster node answered: 10.0.0.2:7000: not a cluster node (CLUSTER SLOTS: OK); 10.0.0.3:7000: refused")
    }
}
