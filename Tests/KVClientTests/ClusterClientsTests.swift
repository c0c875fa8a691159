import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import RESP
import Testing
@testable import KVClient

/// `ClusterRouteTests`' situations played through both real clients — kv-fcgi's
/// `BlockingStoreClient` and kv-ws's `ClusterStoreConnection` — with scripted masters instead
/// of sockets: each client must send to the same nodes in the same order and give the same
/// answer as the route says.
@Suite("Cluster routing: both clients, same situations, same answers (no sockets)")
struct ClusterClientsTests {
    typealias Scenario = ClusterRouteTests.Scenario
    static let a = ClusterRouteTests.a, b = ClusterRouteTests.b

    /// A key whose slot is the scenarios' slot.
    static let key: [UInt8]? = (0..<200_000).lazy.map { Array("k\($0)".utf8) }.first { RedisKeyLayout.slot(ofKey: $0) == ClusterRouteTests.slot }

    /// The masters of one scenario: `CLUSTER SLOTS` is answered from the scenario's maps (the
    /// first one is the map the client learns at its start), other commands from each node's
    /// answers ("OK" when none is left). Records what each node was sent.
    final class ScriptedCluster: @unchecked Sendable {
        private let lock = NIOLock()
        private var maps: [ClusterTopology?]
        private var lastMap: ClusterTopology?
        private var answers: [ClusterNode: [String]]
        private(set) var sends: [String] = []

        init(_ scenario: Scenario) {
            maps = (scenario.startMap.map { [$0] } ?? []) + scenario.maps
            lastMap = scenario.startMap
            answers = scenario.answers
        }

        func answer(_ node: ClusterNode, _ words: [String]) -> Result<RESPValue, KVError> {
            lock.withLock {
                switch words.first {
                case "CLUSTER":
                    let map = maps.isEmpty ? lastMap : maps.removeFirst()
                    guard let map else { return .failure(KVError(.storageUnavailable, "storage unavailable: connection refused")) }
                    lastMap = map
                    return .success(Self.slotsReply(map))
                case "ASKING":
                    sends.append("asking \(node.host)")
                    return .success(.simpleString(ByteBuffer(string: "OK")))
                default:
                    sends.append("send \(node.host)")
                    let answer = answers[node]?.first ?? "OK"
                    if answers[node]?.isEmpty == false { answers[node]?.removeFirst() }
                    switch answer {
                    case "unreachable": return .failure(KVError(.storageUnavailable, "storage unavailable: connection refused"))
                    case "OK": return .success(.bulkString(ByteBuffer(string: "OK")))
                    default: return .success(.error(ByteBuffer(string: answer)))
                    }
                }
            }
        }

        /// `map` as `CLUSTER SLOTS` says it: `[start, end, [host, port]]` per owned slot.
        static func slotsReply(_ map: ClusterTopology) -> RESPValue {
            .array((0..<ClusterTopology.slots).compactMap { slot in
                map.owner(ofSlot: slot).map { node in
                    .array([.integer(Int64(slot)), .integer(Int64(slot)), .array([.bulkString(ByteBuffer(string: node.host)), .integer(Int64(node.port))])])
                }
            })
        }
    }

    final class BlockingNode: ClusterNodeLink {
        let node: ClusterNode, cluster: ScriptedCluster
        init(_ node: ClusterNode, _ cluster: ScriptedCluster) { (self.node, self.cluster) = (node, cluster) }
        func sendCommand(_ arguments: [[UInt8]]) throws(KVError) -> RESPValue {
            try cluster.answer(node, arguments.map { String(decoding: $0, as: UTF8.self) }).get()
        }
    }

    final class EventLoopNode: EventLoopStore, @unchecked Sendable {
        let node: ClusterNode, cluster: ScriptedCluster, eventLoop: any EventLoop
        init(_ node: ClusterNode, _ cluster: ScriptedCluster, _ eventLoop: any EventLoop) { (self.node, self.cluster, self.eventLoop) = (node, cluster, eventLoop) }
        func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void) {
            let (words, shape) = RedisFunctions.translate(command.operation)
            completion(command.reply(cluster.answer(node, words.map { String(buffer: $0) }).map { shape.adapt($0) }))
        }
        func close() async {}
    }

    /// The outcome in `ClusterRouteTests`' words: what the route's reply or failure becomes for a `GET`.
    static func expected(_ scenario: Scenario) -> String {
        if scenario.outcome == "reply OK" { return "value OK" }
        if scenario.outcome.hasPrefix("reply ") { return "fail storageError: the store answered: \(scenario.outcome.dropFirst(6))" }
        return scenario.outcome
    }

    static func described(_ result: Result<ByteBuffer?, KVError>) -> String {
        switch result {
        case .success(let value): "value \(value.map { String(buffer: $0) } ?? "nil")"
        case .failure(let error): "fail \(error.code.rawValue): \(error.message)"
        }
    }

    /// The route's sends, as the scripted nodes record them.
    static func expectedSends(_ scenario: Scenario) -> [String] {
        scenario.steps.filter { $0.hasPrefix("send ") }.flatMap { step -> [String] in
            let words = step.split(separator: " ")
            let send = "send \(words[1])"
            return words.contains("asking") ? ["asking \(words[1])", send] : [send]
        }
    }

    @Test("kv-fcgi's blocking client", arguments: ClusterRouteTests.scenarios)
    func blocking(_ scenario: Scenario) throws {
        let key = try #require(Self.key)
        let cluster = ScriptedCluster(scenario)
        var pauses: [Int] = []
        let client = BlockingStoreClient(address: .redisCluster(seeds: [Self.a, Self.b]), limits: RESPLimits(maxBulkBytes: 1 << 20))
        client.cluster = BlockingClusterRouter(seeds: [Self.a, Self.b], shared: StoreReachability(), logger: nil, pause: { pauses.append($0) }) {
            BlockingNode($0, cluster)
        }
        let result = Result { () throws(KVError) -> ByteBuffer? in try client.send(.get(key)) }
        #expect(Self.described(result) == Self.expected(scenario))
        #expect(cluster.sends == Self.expectedSends(scenario))
        #expect(pauses == (scenario.steps.contains { $0.hasSuffix("after 20ms") } ? [20] : []))
    }

    @Test("kv-ws's event-loop client", arguments: ClusterRouteTests.scenarios)
    func eventLoop(_ scenario: Scenario) throws {
        let key = try #require(Self.key)
        let cluster = ScriptedCluster(scenario)
        let loop = EmbeddedEventLoop()
        let client = ClusterStoreConnection(seeds: [Self.a, Self.b], eventLoop: loop, logger: Logger(label: "test"), onEvent: { _ in }) { node, _ in
            EventLoopNode(node, cluster, loop)
        }
        var result: Result<ByteBuffer?, KVError>?
        client.send(.get(ByteBuffer(bytes: key))) { result = $0 }
        // A TRYAGAIN waits on the loop's clock; nothing else does.
        if result == nil { loop.advanceTime(by: .milliseconds(20)) }
        let outcome = try #require(result)
        #expect(Self.described(outcome) == Self.expected(scenario))
        #expect(cluster.sends == Self.expectedSends(scenario))
    }
}
