import Foundation
import KVClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// KvServer on a Redis Cluster (3 masters, a replica each) made on loopback by the test, with
/// two sets of front ends (nginx + kv-fcgi + kv-ws) on it, as two nodes behind a load balancer
/// would be (docs/scaling.md).
@Suite("KvServer on a 3-master Redis Cluster", .serialized)
struct RedisClusterTests {
    static func member(_ message: String, _ name: String) -> String? { VersionedWebSocketTests.member(message, name) }
    static let value = WebSocketAPITests.value
    static let noValue = WebSocketAPITests.noValue

    /// Keys whose slots are on every master, one with braces among them.
    static let keys = ["{braces}", "a}b{c", "plain"] + (0..<27).map { "key-\($0)" }

    /// A cluster, and two front-end nodes (nginx + kv-fcgi + kv-ws) on it.
    static func twoNodes() throws -> (RedisCluster, HTTPStack, HTTPStack) {
        let cluster = try RedisCluster()
        return (cluster, try HTTPStack(externalStore: cluster.address), try HTTPStack(externalStore: cluster.address))
    }

    static func path(_ key: String) -> String {
        "/storage/" + key.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
    }

    @Test("a subscriber on one kv-ws sees writes made through another node's kv-fcgi, in every slot; keys with braces; conditional writes across nodes")
    func acrossFrontEnds() async throws {
        let (cluster, a, b) = try Self.twoNodes()
        let ws = try await TestWebSocket.connect(a.webSocketURL)
        for key in Self.keys { try await ws.send(#"{"type":"subscribe","id":1,"payload":{"key":"\#(key)"}}"#) }
        for _ in Self.keys { #expect(Self.member(try await ws.next(within: 20), "type") == #""ok""#) }
        let http = b.client()
        for (i, key) in Self.keys.enumerated() {
            #expect(try http.send("POST", Self.path(key), json: #"{"value":\#(i)}"#).status == 202, "\(key)")
        }
        var seen: [String: String] = [:]
        for _ in Self.keys {
            let message = try await ws.next(within: 20)
            let payload = try #require(Self.member(message, "payload"))
            seen[payload] = message
        }
        for (i, key) in Self.keys.enumerated() {
            #expect(seen[#"{"key":"\#(key)","value":\#(i)}"#] != nil, "\(key): \(seen.keys.sorted())")
        }
        // The keys are spread over all three masters (each holds some of their hashes).
        let slots = Set(Self.keys.map { RedisKeyLayout.slot(ofKey: Array($0.utf8)) })
        let masters = Set(try slots.map { try #require(try cluster.masterPort(ofSlot: $0)) })
        #expect(masters.count == 3, "slots \(slots.sorted()) on masters \(masters)")
        for key in Self.keys.prefix(5) {
            let name = String(decoding: RedisKeyLayout.dataKey(Array(key.utf8)), as: UTF8.self)
            #expect(try cluster.cli(cluster.nodes[0].port, "cluster", "keyslot", name) == String(RedisKeyLayout.slot(ofKey: Array(key.utf8))),
                    "KvServer computes the slot Redis does for \(name)")
        }
        // Read back through the other node, and a compare-and-set race across the two nodes.
        #expect(try a.client().send("GET", Self.path("{braces}")).text == #"{"value":0}"#)
        let etag = try #require(try a.client().send("GET", Self.path("plain")).headers["etag"])
        let first = try a.client().start("POST", Array(Self.path("plain").utf8), body: Array(#"{"value":"a"}"#.utf8), headers: ["If-Match": etag])
        let second = try b.client().start("POST", Array(Self.path("plain").utf8), body: Array(#"{"value":"b"}"#.utf8), headers: ["If-Match": etag])
        #expect([try first.finish().status, try second.finish().status].sorted() == [202, 412])
        // Listing walks every master in turn: every key, through either node, over either API.
        let listed = try ListingTests.listAll(a.client(), prefix: "", limit: 4)
        #expect(Set(listed) == Set(Self.keys), "\(listed)")
        #expect(try ListingTests.listAll(b.client(), prefix: "key-1", limit: 1000).sorted() == Self.keys.filter { $0.hasPrefix("key-1") }.sorted())
        let bad = try a.client().send("GET", "/storage/?prefix=&after=key-1")
        #expect(bad.status == 400 && bad.text.contains("on a Redis Cluster store, after takes the next of the page before"), "\(bad)")
        let lister = try await TestWebSocket.connect(b.webSocketURL)
        var viaWebSocket: [String] = [], after: String?
        repeat {
            let afterField = after.map { #","after":"\#($0)""# } ?? ""
            try await lister.send(type: "list", #"{"prefix":"","limit":7\#(afterField)}"#)
            let text = try await lister.next()
            let payload = try #require(Self.member(text, "payload"), "\(text)")
            let page = try ListingTests.Page(json: payload)
            viaWebSocket += page.keys
            after = page.next
        } while after != nil && viaWebSocket.count < 1000
        #expect(Set(viaWebSocket) == Set(Self.keys))
        await lister.close()
        await ws.close()
    }

    @Test("expiries on every master reach the subscribers of another node")
    func expiry() async throws {
        let (cluster, a, b) = try Self.twoNodes()
        let keys = Array(Self.keys.prefix(12))
        let masters = Set(try keys.map { try cluster.masterPort(ofSlot: RedisKeyLayout.slot(ofKey: Array($0.utf8))) })
        #expect(masters.count == 3, "the keys are on every master: \(masters)")
        let ws = try await TestWebSocket.connect(a.webSocketURL)
        for key in keys { try await ws.send(#"{"type":"subscribe","id":1,"payload":{"key":"\#(key)"}}"#) }
        for _ in keys { _ = try await ws.next(within: 20) }
        for key in keys { #expect(try b.client().send("POST", Self.path(key), json: #"{"value":1,"ttl":300}"#).status == 202) }
        var gone = Set<String>()
        for _ in 0..<(keys.count * 2) {
            let message = try await ws.next(within: 20)
            if Self.member(message, "type") == #""no-value""#, let payload = Self.member(message, "payload") { gone.insert(payload) }
        }
        #expect(gone == Set(keys.map { #"{"key":"\#($0)"}"# }), "\(gone)")
    }

    @Test("a failover (manual, then a master stopped) does not wedge the front ends: writes and subscriptions move to the new master")
    func failover() async throws {
        let (cluster, a, b) = try Self.twoNodes()
        let key = "moving"
        let masterOf = { (key: String) in try cluster.masterPort(ofSlot: RedisKeyLayout.slot(ofKey: Array(key.utf8))) }
        let other = try #require(try Self.keys.first { try masterOf($0) != masterOf(key) }, "a key on another master")
        // An exact subscriber too: it must end up with every change or a reset, never a gap.
        let exact = try await TestWebSocket.connect(a.webSocketURL)
        try await exact.send(#"{"type":"subscribe","id":"x","payload":{"key":"\#(key)"}}"#)
        #expect(Self.member(try await exact.next(within: 20), "type") == #""ok""#)
        // A seed subscriber of a key on another master: its master never fails.
        let bystander = try await TestWebSocket.connect(a.webSocketURL)
        try await bystander.send(#"{"type":"subscribe","payload":{"key":"\#(other)"}}"#)
        try await bystander.send(#"{"type":"get","payload":{"key":"\#(other)"}}"#)
        _ = try await bystander.next(within: 20)
        let ws = try await TestWebSocket.connect(a.webSocketURL)
        try await ws.send(#"{"type":"subscribe","payload":{"key":"\#(key)"}}"#)
        try await ws.send(#"{"type":"get","payload":{"key":"\#(key)"}}"#)
        _ = try await ws.next(within: 20)
        /// Reads until a message containing `expected`; on a timeout, records what came and what kv-ws logged.
        func awaitMessage(_ expected: String) async throws {
            var messages: [String] = []
            do {
                while !messages.contains(where: { $0.contains(expected) }) { messages.append(try await ws.next(within: 30)) }
            } catch {
                let channel = String(decoding: RedisKeyLayout.dataKey(Array(key.utf8)), as: UTF8.self)
                let subs = cluster.nodes.map { "\($0.port): \((try? cluster.cli($0.port, "pubsub", "shardnumsub", channel)) ?? "-") role \((try? cluster.cli($0.port, "role")) ?? "-")" }
                let log = (a.ws?.log ?? "").split(separator: "\n").filter { !$0.contains("debug") }.joined(separator: "\n")
                Issue.record("waiting for \(expected), got \(messages); subs \(subs); kv-ws log:\n\(log)")
                throw error
            }
        }
        #expect(try b.client().send("POST", Self.path(key), json: #"{"value":0}"#).status == 202)
        try await awaitMessage(Self.value(key, "0"))

        // 1. A manual failover: the replica takes over, the old master becomes its replica.
        let slot = RedisKeyLayout.slot(ofKey: Array(key.utf8))
        let master = try #require(try cluster.masterPort(ofSlot: slot))
        let replica = try #require(try cluster.replicas().first { $0.master == master }?.replica)
        #expect(try cluster.cli(replica, "cluster", "failover") == "OK")
        #expect(eventually(within: 30) { (try? cluster.masterPort(ofSlot: slot)) == replica })
        // The old master ends the key's subscription; kv-ws subscribes it on the new one. Seed
        // subscribers are told a change may have been missed in between, so write after that.
        try await awaitMessage("reachable again")
        #expect(eventually(within: 20) { (try? b.client().send("POST", Self.path(key), json: #"{"value":1}"#).status) == 202 })
        try await awaitMessage(Self.value(key, "1"))
        #expect(try b.client().send("GET", Self.path(key)).text == #"{"value":1}"#)

        // 2. The new master stops: its replica (the old master) is promoted after the node
        // timeout. Meanwhile other slots keep working; then this one works again.
        let index = try #require(cluster.index(ofPort: replica))
        cluster.stop(index)
        #expect(try a.client().send("POST", Self.path(other), json: #"{"value":"meanwhile"}"#).status == 202, "other masters are unaffected")
        #expect(try a.client().send("GET", "/readyz").status == 200, "one lost master does not take a front end out of rotation")
        #expect(eventually(within: 30) { (try? cluster.masterPort(ofSlot: slot)) == master })
        try await awaitMessage("reachable again")
        #expect(eventually(within: 20) { (try? b.client().send("POST", Self.path(key), json: #"{"value":2}"#).status) == 202 })
        try await awaitMessage(Self.value(key, "2"))
        #expect(try a.client().send("GET", Self.path(key)).text == #"{"value":2}"#)
        #expect(try a.client().send("GET", "/readyz").status == 200)
        // kv-fcgi's log tells the failover: the lost master, and the new map.
        let fcgiLog = b.fcgi?.log ?? ""
        #expect(fcgiLog.contains("a cluster master does not answer"))
        #expect(fcgiLog.components(separatedBy: "cluster slot map learnt").count - 1 >= 2, "the first map, then the failovers'")

        // 3. The stopped node comes back (as a replica) and nothing wedges.
        try cluster.start(index)
        #expect(try b.client().send("POST", Self.path(key), json: #"{"value":3}"#).status == 202)
        try await awaitMessage(Self.value(key, "3"))
        await ws.close()

        // The bystander saw its own key's change, and no notice of the other master's outages.
        #expect(try await bystander.next(within: 20) == Self.value(other, #""meanwhile""#))
        #expect(try b.client().send("POST", Self.path(other), json: #"{"value":"after"}"#).status == 202)
        #expect(try await bystander.next(within: 20) == Self.value(other, #""after""#), "nothing in between")
        await bystander.close()

        var seen: [String] = []
        while !seen.contains(where: { Self.member($0, "payload") == #"{"key":"\#(key)","value":3}"# }) { seen.append(try await exact.next(within: 30)) }
        let revisions = seen.compactMap { VersionedWebSocketTests.rev($0) }
        #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count, "\(seen)")
        #expect(seen.contains { Self.member($0, "payload") == #"{"key":"\#(key)","value":2}"# }, "value 2, live or as a reset: \(seen)")
        #expect(!seen.contains { $0.contains("may have been missed") }, "an exact subscriber is made whole instead: \(seen)")
        await exact.close()
    }

    @Test("a slot moved to another master (resharding): writes follow ASK during the migration and MOVED after; subscriptions move with the slot")
    func resharding() async throws {
        let (cluster, a, b) = try Self.twoNodes()
        let key = "migrating"
        let slot = RedisKeyLayout.slot(ofKey: Array(key.utf8))
        let source = try #require(try cluster.masterPort(ofSlot: slot))
        let target = try #require(try Set(cluster.replicas().map(\.master)).first { $0 != source })
        let sourceID = try cluster.cli(source, "cluster", "myid"), targetID = try cluster.cli(target, "cluster", "myid")
        let exact = try await TestWebSocket.connect(a.webSocketURL)
        try await exact.send(#"{"type":"subscribe","id":"x","payload":{"key":"\#(key)"}}"#)
        #expect(Self.member(try await exact.next(within: 20), "type") == #""ok""#)
        #expect(try b.client().send("POST", Self.path(key), json: #"{"value":0}"#).status == 202)
        #expect(Self.member(try await exact.next(within: 20), "payload") == #"{"key":"\#(key)","value":0}"#)

        // Migrating: the key's hashes move to the target; the source answers ASK for them.
        #expect(try cluster.cli(target, "cluster", "setslot", String(slot), "importing", sourceID) == "OK")
        #expect(try cluster.cli(source, "cluster", "setslot", String(slot), "migrating", targetID) == "OK")
        let names = [RedisKeyLayout.dataKey(Array(key.utf8)), RedisKeyLayout.groupKey(Array(key.utf8))].map { String(decoding: $0, as: UTF8.self) }
        #expect(try cluster.cli(source, ["migrate", "127.0.0.1", String(target), "", "0", "5000", "keys"] + names) == "OK")
        #expect(try b.client().send("POST", Self.path(key), json: #"{"value":1}"#).status == 202, "through ASK")
        #expect(try a.client().send("GET", Self.path(key)).text == #"{"value":1}"#, "through ASK")

        // Migrated, in the order Redis's documentation gives: the target, then the source, which
        // ends the key's subscription; kv-ws moves it while the other masters still have the
        // old map (the source's MOVED names the target), and only then are the others told.
        #expect(try cluster.cli(target, "cluster", "setslot", String(slot), "node", targetID) == "OK")
        #expect(try cluster.cli(source, "cluster", "setslot", String(slot), "node", targetID) == "OK")
        #expect(eventually(within: 20) { (try? cluster.cli(target, "pubsub", "shardnumsub", names[0]).hasSuffix("1")) == true },
                "kv-ws subscribed the key on its new master")
        for master in Set(try cluster.replicas().map(\.master)) where master != source && master != target {
            #expect(try cluster.cli(master, "cluster", "setslot", String(slot), "node", targetID) == "OK")
        }
        #expect(try a.client().send("GET", Self.path(key)).text == #"{"value":1}"#, "through MOVED")
        #expect(try b.client().send("POST", Self.path(key), json: #"{"value":2}"#).status == 202)
        // The change made during the migration was published on the target, where nobody was
        // subscribed yet: the exact subscriber gets it by catching up, then the live one.
        var seen: [String] = []
        while !seen.contains(where: { Self.member($0, "payload") == #"{"key":"\#(key)","value":2}"# }) { seen.append(try await exact.next(within: 30)) }
        #expect(seen.contains { Self.member($0, "payload") == #"{"key":"\#(key)","value":1}"# }, "\(seen)")
        let revisions = seen.compactMap { VersionedWebSocketTests.rev($0) }
        #expect(revisions == revisions.sorted(), "\(seen)")
        await exact.close()
    }
}
