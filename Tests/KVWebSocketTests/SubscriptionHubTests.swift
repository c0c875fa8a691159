import KVAccess
import KVClient
import KVCore
import Logging
import NIOCore
import NIOEmbedded
import RESP
import Testing
@testable import KVWebSocket

/// The hub's side of kv-stored, answered by hand: subscriptions and `KVSYNC` requests wait for
/// the test, and changes and connection events are routed when the test says.
final class FakeFeed: EventLoopStore, @unchecked Sendable {
    var eventLoop: any EventLoop { loop }
    func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void) {
        Issue.record("the hub sends through future(_:)")
    }

    let loop: EmbeddedEventLoop
    var onEvent: (@Sendable (StoreConnectionEvent) -> Void)?
    var subscriptions: [(key: String, promise: EventLoopPromise<RESPValue>)] = []
    var requests: [(command: [String], promise: EventLoopPromise<RESPValue>)] = []

    init(loop: EmbeddedEventLoop) { self.loop = loop }

    func future<Reply: Sendable>(_ command: StoreCommand<ByteBuffer, Reply>) -> EventLoopFuture<Reply> {
        switch command.operation {
        case .subscribe(let key):
            let promise = loop.makePromise(of: RESPValue.self)
            subscriptions.append((String(buffer: key), promise))
            return promise.futureResult.flatMapThrowing { try command.reply($0) }
        case .unsubscribe:
            return loop.makeSucceededFuture(.push([])).flatMapThrowing { try command.reply($0) }
        default:
            let promise = loop.makePromise(of: RESPValue.self)
            requests.append((command.operation.arguments.map { String(buffer: $0) }, promise))
            return promise.futureResult.flatMapThrowing { try command.reply($0) }
        }
    }

    func close() async {}

    func change(_ key: String, _ revision: UInt64, _ value: String?) {
        onEvent?(.change(StoreChange(key: ByteBuffer(string: key), kind: value == nil ? .deleted : .set, revision: revision,
                                     value: value.map { ByteBuffer(string: $0) })))
    }

    /// A `KVSYNC` reply: mode, epoch, revision, and `[kind, revision, value?]` entries.
    static func sync(_ mode: String, _ revision: Int64, _ changes: [(String, Int64, String?)]) -> RESPValue {
        .array([.bulkString(ByteBuffer(string: mode)), .bulkString(ByteBuffer(string: "e1")), .integer(revision),
                .array(changes.map { kind, at, value in
                    .array([.bulkString(ByteBuffer(string: kind)), .integer(at)] + (value.map { [.bulkString(ByteBuffer(string: $0))] } ?? []))
                })])
    }
}

extension SubscriptionHub {
    /// A key's subscription, as most tests here make.
    func subscribe(_ key: [UInt8], _ session: Session, catchUp: CatchUp?) -> EventLoopFuture<Void> { subscribe(.key(key), session, catchUp: catchUp) }
    func revision(of key: [UInt8], for session: Session) -> UInt64 { revision(of: .key(key), for: session) }
}

@Suite("Subscription hub: exact subscriptions catch up, hold and resume (no sockets)")
struct SubscriptionHubTests {
    let loop = EmbeddedEventLoop()
    let feed: FakeFeed
    let hub: SubscriptionHub

    init() {
        let feed = FakeFeed(loop: loop)
        self.feed = feed
        hub = SubscriptionHub(connection: { onEvent in
            feed.onEvent = onEvent
            return feed
        }, logger: Logger(label: "test"))
    }

    func session(_ id: Int) -> Session { Session(id: id, eventLoop: loop, limits: OutputLimits()) }

    func messages(_ session: Session) throws -> [String] {
        try session.take(maxBytes: .max).map { try WireFrames.text($0.frame) }
    }

    @Test("changes that arrive while a subscriber catches up are held: those at or below its revision dropped, the rest sent after, once each")
    func catchUpHoldsAndFilters() throws {
        let exact = session(1)
        let subscribed = hub.subscribe(Array("k".utf8), exact, catchUp: SubscriptionHub.CatchUp(id: Array("1".utf8), initial: true))
        feed.subscriptions[0].promise.succeed(.push([]))
        #expect(feed.requests.map(\.command) == [["KVSYNC", "k", "INITIAL"]])
        feed.change("k", 5, "a")  // applied before KVSYNC ran: part of the state it reports
        feed.change("k", 7, "c")  // after it
        #expect(try messages(exact).isEmpty, "nothing before the catch-up")
        feed.requests[0].promise.succeed(FakeFeed.sync("live", 6, [("set", 6, "b")]))
        try subscribed.wait()
        #expect(try messages(exact) == [
            #"{"type":"ok","id":1,"rev":6,"epoch":"e1","payload":{"key":"k"}}"#,
            #"{"type":"value","rev":6,"payload":{"key":"k","value":b}}"#,
            #"{"type":"value","rev":7,"payload":{"key":"k","value":c}}"#,
        ])
        feed.change("k", 7, "c")  // a late duplicate (pushed before the reply was read, say)
        feed.change("k", 8, nil)
        #expect(try messages(exact) == [#"{"type":"no-value","rev":8,"payload":{"key":"k"}}"#])
        #expect(hub.revision(of: Array("k".utf8), for: exact) == 8)
    }

    @Test("a prefix subscription: one PSUBSCRIBE for every watcher, KVPSYNC catch-up, a reset announced before the state, keys the session may not watch left out")
    func prefixWatchers() throws {
        func prefixChange(_ key: String, _ revision: UInt64, _ value: String?) {
            feed.onEvent?(.change(StoreChange(key: ByteBuffer(string: key), kind: value == nil ? .deleted : .set, revision: revision,
                                              value: value.map { ByteBuffer(string: $0) }, prefix: ByteBuffer(string: "p/"))))
        }
        let exact = session(1), seed = session(2)
        var rules = AccessRules.none
        rules.allow(.subscribe, prefix: Array("p/".utf8))
        rules.except(.subscribe, prefix: Array("p/secret".utf8))
        exact.watch(as: .open)
        seed.watch(as: Identity(kind: .token, id: "t", rules: rules))
        let subscribed = hub.subscribe(.prefix(Array("p/".utf8)), exact, catchUp: SubscriptionHub.CatchUp(id: Array("1".utf8), since: 3, epoch: "e0"))
        #expect(feed.requests.map(\.command) == [["PSUBSCRIBE", "p/*"]])
        feed.requests[0].promise.succeed(.push([]))
        let seedSubscribed = hub.subscribe(.prefix(Array("p/".utf8)), seed, catchUp: nil)
        try seedSubscribed.wait()
        #expect(feed.requests.count == 2 && feed.requests[1].command == ["KVPSYNC", "p/", "SINCE", "3", "EPOCH", "e0"], "one store subscription for both")
        prefixChange("p/a", 9, "late")  // held for the exact watcher
        feed.requests[1].promise.succeed(.array([.bulkString(ByteBuffer(string: "reset")), .bulkString(ByteBuffer(string: "e1")), .integer(8),
                                                  .array([.array([.bulkString(ByteBuffer(string: "set")), .integer(8), .bulkString(ByteBuffer(string: "p/a")),
                                                                  .bulkString(ByteBuffer(string: "1"))])])]))
        try subscribed.wait()
        #expect(try messages(exact) == [
            #"{"type":"ok","id":1,"rev":8,"epoch":"e1","payload":{"prefix":"p/"}}"#,
            #"{"type":"reset","rev":8,"epoch":"e1","payload":{"prefix":"p/"}}"#,
            #"{"type":"value","rev":8,"reset":true,"payload":{"key":"p/a","value":1}}"#,
            #"{"type":"value","rev":9,"payload":{"key":"p/a","value":late}}"#,
        ])
        #expect(try messages(seed) == [#"{"type":"value","payload":{"key":"p/a","value":late}}"#])
        prefixChange("p/secret/x", 10, "hidden")
        prefixChange("p/b", 11, nil)
        #expect(try messages(exact) == [#"{"type":"value","rev":10,"payload":{"key":"p/secret/x","value":hidden}}"#, #"{"type":"no-value","rev":11,"payload":{"key":"p/b"}}"#])
        #expect(try messages(seed) == [#"{"type":"no-value","payload":{"key":"p/b"}}"#], "p/secret is not the seed session's to watch")
        feed.onEvent?(.change(StoreChange(key: ByteBuffer(string: "p/t"), kind: .expired, revision: 12, value: nil, prefix: ByteBuffer(string: "p/"))))
        #expect(try messages(exact) == [#"{"type":"no-value","rev":12,"expired":true,"payload":{"key":"p/t"}}"#], "an exact subscriber is told it expired")
        #expect(try messages(seed) == [#"{"type":"no-value","payload":{"key":"p/t"}}"#], "a seed one gets the seed message")
        feed.change("p/b", 13, "a key's own change does not reach prefix watchers")
        #expect(try messages(exact).isEmpty && messages(seed).isEmpty)
        #expect(hub.revision(of: .prefix(Array("p/".utf8)), for: exact) == 12)
        hub.unsubscribe(.prefix(Array("p/".utf8)), exact)
        #expect(feed.requests.count == 2, "another session still watches the prefix")
        hub.unsubscribe(.prefix(Array("p/".utf8)), seed)
        #expect(feed.requests.last?.command == ["PUNSUBSCRIBE", "p/*"], "dropped with the last watcher")
    }

    @Test("after a lost connection an exact subscriber holds, then resumes from its last revision; a seed one is told it may have missed changes")
    func resumeAfterReconnection() throws {
        let exact = session(1), seed = session(2)
        let subscribed = hub.subscribe(Array("k".utf8), exact, catchUp: SubscriptionHub.CatchUp())
        feed.subscriptions[0].promise.succeed(.push([]))
        feed.requests[0].promise.succeed(FakeFeed.sync("live", 4, []))
        try subscribed.wait()
        try hub.subscribe(Array("k".utf8), seed, catchUp: nil).wait()
        feed.change("k", 5, "a")
        #expect(try messages(exact) == [#"{"type":"value","rev":5,"payload":{"key":"k","value":a}}"#])
        #expect(try messages(seed) == [#"{"type":"value","payload":{"key":"k","value":a}}"#])

        feed.onEvent?(.disconnected)
        #expect(try messages(exact).count == 1 && messages(seed).count == 1, "both told the connection is lost")
        feed.change("k", 7, "c")  // arrives after the reconnection, before the catch-up
        feed.onEvent?(.restored(subscriptions: 1))
        #expect(feed.requests.last?.command == ["KVSYNC", "k", "SINCE", "5", "EPOCH", "e1"])
        #expect(try messages(exact).isEmpty, "held until the catch-up; not told it may have missed changes")
        let seedMessages = try messages(seed)
        #expect(seedMessages.count == 2 && seedMessages[0] == #"{"type":"value","payload":{"key":"k","value":c}}"#
                && seedMessages[1].contains("may have been missed"), "\(seedMessages)")
        feed.requests.last?.promise.succeed(FakeFeed.sync("replay", 7, [("set", 6, "b"), ("set", 7, "c")]))
        #expect(try messages(exact) == [
            #"{"type":"value","rev":6,"payload":{"key":"k","value":b}}"#,
            #"{"type":"value","rev":7,"payload":{"key":"k","value":c}}"#,
        ], "the missed change 6 replayed, 7 once")
        feed.change("k", 8, "d")
        #expect(try messages(exact) == [#"{"type":"value","rev":8,"payload":{"key":"k","value":d}}"#])
    }

    @Test("an interruption of some keys (a cluster master lost) holds and tells only their watchers; the others stay live")
    func partialInterruption() throws {
        let onA = session(1), onB = session(2), seedB = session(3)
        for (key, session) in [("a", onA), ("b", onB)] {
            let subscribed = hub.subscribe(Array(key.utf8), session, catchUp: SubscriptionHub.CatchUp())
            feed.subscriptions.last?.promise.succeed(.push([]))
            feed.requests.last?.promise.succeed(FakeFeed.sync("live", 4, []))
            try subscribed.wait()
        }
        try hub.subscribe(Array("b".utf8), seedB, catchUp: nil).wait()

        feed.onEvent?(.interrupted(keys: [ByteBuffer(string: "a")]))
        #expect(try messages(onA).count == 1, "a's watcher is told")
        #expect(try messages(onB).isEmpty && messages(seedB).isEmpty, "b's watchers are not")
        feed.change("b", 5, "x")
        #expect(try messages(onB) == [#"{"type":"value","rev":5,"payload":{"key":"b","value":x}}"#], "b stays live")
        #expect(try messages(seedB) == [#"{"type":"value","payload":{"key":"b","value":x}}"#])
        feed.change("a", 6, "y")
        #expect(try messages(onA).isEmpty, "a holds until it has caught up")
        let syncs = feed.requests.count
        feed.onEvent?(.resumed(keys: [ByteBuffer(string: "a")]))
        #expect(feed.requests.count == syncs + 1 && feed.requests.last?.command == ["KVSYNC", "a", "SINCE", "4", "EPOCH", "e1"], "only a catches up")
        feed.requests.last?.promise.succeed(FakeFeed.sync("replay", 6, [("set", 6, "y")]))
        #expect(try messages(onA) == [#"{"type":"value","rev":6,"payload":{"key":"a","value":y}}"#])
        #expect(try messages(seedB).isEmpty, "b's seed watcher is not told of a's outage")
    }

    @Test("a failed catch-up leaves no subscription behind")
    func failedCatchUp() throws {
        let exact = session(1)
        let subscribed = hub.subscribe(Array("k".utf8), exact, catchUp: SubscriptionHub.CatchUp(since: 3, epoch: "e0"))
        feed.subscriptions[0].promise.succeed(.push([]))
        #expect(feed.requests[0].command == ["KVSYNC", "k", "SINCE", "3", "EPOCH", "e0"])
        feed.requests[0].promise.fail(KVError(.storageUnavailable, "storage unavailable: test"))
        #expect(throws: KVError.self) { try subscribed.wait() }
        feed.change("k", 4, "a")
        #expect(try messages(exact).isEmpty)
        #expect(hub.revision(of: Array("k".utf8), for: exact) == 0)
    }
}
