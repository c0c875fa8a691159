import Foundation
import KVCore
import NIOWebSocket
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every WebSocket rule of docs/api.md, through the real nginx and kv-ws, on kv-stored and (the tests
/// with `StoreKind` arguments) again on a redis-server.
/// Serialized: the expiry-latency test must not share the machine's 2 cores with the
/// 200-connection fan-out test of the same suite.
@Suite("WebSocket API through nginx", .serialized)
struct WebSocketAPITests {
    static func value(_ key: String, _ json: String) -> String { #"{"type":"value","payload":{"key":"\#(key)","value":\#(json)}}"# }
    static func noValue(_ key: String) -> String { #"{"type":"no-value","payload":{"key":"\#(key)"}}"# }

    /// Connects a writer that watches `key`, sends `count` sets of ~`bytes`-byte values to it
    /// (each value starts with its index), and returns once the writer has seen the last one.
    func flood(_ stack: HTTPStack, key: String, count: Int, bytes: Int) async throws -> TestWebSocket {
        let writer = try await TestWebSocket.connect(stack.webSocketURL)
        try await writer.send(type: "subscribe", #"{"key":"\#(key)"}"#)
        try await writer.send(type: "get", #"{"key":"\#(key)"}"#)
        _ = try await writer.next()
        let big = String(repeating: "x", count: bytes)
        for i in 0..<count { try await writer.send(type: "set", #"{"key":"\#(key)","value":"\#(i)\#(big)"}"#) }
        // The writer's own subscription ends on the final value (its queue may conflate too).
        while !(try await writer.next(within: 20)).contains(#""value":"\#(count - 1)x"#) {}
        return writer
    }

    /// The text of an `error` message, JSON escapes resolved.
    func errorText(_ reply: String) throws -> String {
        let document = try JSONReader().read(Array(reply.utf8))
        return try #require(document.root[member: "payload"].flatMap { document.string($0) })
    }

    @Test("get/set/delete/subscribe: replies only where the API says, own changes delivered, errors keep the connection", arguments: StoreKind.allCases)
    func messageRules(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.noValue("k"))
        try await ws.send(type: "subscribe", #"{"key":"k"}"#)
        try await ws.send(type: "set", #"{"key":"k","value":{"a":[1,2.0,123456789012345678901234567890]},"extra":true}"#)
        #expect(try await ws.next() == Self.value("k", #"{"a":[1,2.0,123456789012345678901234567890]}"#))
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.value("k", #"{"a":[1,2.0,123456789012345678901234567890]}"#))
        try await ws.send(type: "set", #"{"key":"k","value":null}"#)
        #expect(try await ws.next() == Self.value("k", "null"))
        try await ws.send(type: "delete", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.noValue("k"))
        try await ws.send(type: "delete", #"{"key":"k"}"#)  // not a change: nothing is delivered

        let bad: [(String, String)] = [
            ("not json", "invalid JSON"), ("[1]", "must be a JSON object"), (#"{"payload":{"key":"k"}}"#, #""type" must be a string"#),
            (#"{"type":"fly","payload":{"key":"k"}}"#, #"unknown type "fly""#), (#"{"type":"get"}"#, #""payload" must be an object"#),
            (#"{"type":"get","payload":{}}"#, "payload.key must be a string"), (#"{"type":"get","payload":{"key":5}}"#, "payload.key must be a string"),
            (#"{"type":"set","payload":{"key":"k"}}"#, "payload.value is required"), (#"{"type":"get","payload":{"key":""}}"#, "key must not be empty"),
            (#"{"type":"set","payload":{"key":"k","value":1,"ttl":"10 parsecs"}}"#, #"ttl: unknown unit "parsecs""#),
            (#"{"type":"set","payload":{"key":"k","value":1,"ttl":0}}"#, "ttl: must be greater than 0"),
        ]
        for (message, expected) in bad {
            try await ws.send(message)
            let reply = try await ws.next()
            #expect(reply.hasPrefix(#"{"type":"error","payload":""#), "\(message) → \(reply)")
            #expect(try errorText(reply).contains(expected), "\(message) → \(reply)")
        }
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.noValue("k"), "nothing was stored by the bad messages, and the connection is open")
        #expect(ws.pending.isEmpty)

        try await ws.send(type: "unsubscribe", #"{"key":"k"}"#)
        try await ws.send(type: "set", #"{"key":"k","value":2}"#)
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.value("k", "2"), "no change after unsubscribe, only the get's reply")
        await ws.close()
    }

    @Test("changes made over HTTP reach WebSocket subscribers, and the other way round; one store subscription per key", arguments: StoreKind.allCases)
    func crossProtocol(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let http = stack.client()
        let a = try await TestWebSocket.connect(stack.webSocketURL)
        let b = try await TestWebSocket.connect(stack.webSocketURL)
        try await a.send(type: "subscribe", #"{"key":"a/b"}"#)
        try await b.send(type: "subscribe", #"{"key":"a/b"}"#)
        try await b.send(type: "get", #"{"key":"a/b"}"#)
        #expect(try await b.next() == Self.noValue("a/b"))
        #expect(try stack.storeSubscribedKeys() == 1, "kv-ws holds one subscription per key, however many clients watch it")

        #expect(try http.send("POST", "/storage/a%2Fb", json: #"{"value":[1,"x"]}"#).status == 202)
        #expect(try await a.next() == Self.value("a/b", #"[1,"x"]"#))
        #expect(try await b.next() == Self.value("a/b", #"[1,"x"]"#))
        #expect(try http.send("DELETE", "/storage/a/b").status == 200)
        #expect(try await a.next() == Self.noValue("a/b"))
        #expect(try await b.next() == Self.noValue("a/b"))

        try await a.send(type: "set", #"{"key":"ключ","value":"über"}"#)
        #expect(eventually { (try? http.send("GET", "/storage/%D0%BA%D0%BB%D1%8E%D1%87").text) == #"{"value":"über"}"# })

        await a.close()
        await b.close()
        #expect(eventually { (try? stack.storeSubscribedKeys()) == 0 }, "closing the last watcher drops the store subscription")
    }

    /// How late expiry is measured by bench/ws.sh (expiry lag) and by kv-stored's
    /// kv_stored_expiry_lag_seconds histogram, not by a timed assertion on a shared machine.
    @Test("TTL expiry set over HTTP and over WebSocket is notified by itself (active expiry), never before the deadline", arguments: StoreKind.allCases)
    func expiryNotification(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let http = stack.client()
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        for key in ["viaHTTP", "viaWS"] { try await ws.send(type: "subscribe", #"{"key":"\#(key)"}"#) }
        try await ws.send(type: "get", #"{"key":"viaWS"}"#)
        _ = try await ws.next()  // the subscriptions are in force

        var start = Date()
        #expect(try http.send("POST", "/storage/viaHTTP", json: #"{"value":1,"ttl":300}"#).status == 202)
        #expect(try await ws.next() == Self.value("viaHTTP", "1"))
        // Nobody reads the key: only the store's own timer can produce this (kv-stored's, or Redis's active expiry).
        #expect(try await ws.next() == Self.noValue("viaHTTP"))
        // The deadline is at least 300 ms after `start`.
        #expect(Date().timeIntervalSince(start) >= 0.3, "expired \(0.3 - Date().timeIntervalSince(start)) s early")

        start = Date()
        try await ws.send(type: "set", #"{"key":"viaWS","value":2,"ttl":"0.3s"}"#)
        #expect(try await ws.next() == Self.value("viaWS", "2"))
        #expect(try await ws.next() == Self.noValue("viaWS"))
        #expect(Date().timeIntervalSince(start) >= 0.3)
        await ws.close()
    }

    @Test("200 subscribers on one key all receive a change; 200 sets arrive in order", arguments: StoreKind.allCases)
    func fanOutAndOrder(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        var subscribers: [TestWebSocket] = []
        for _ in 0..<200 {
            let ws = try await TestWebSocket.connect(stack.webSocketURL)
            try await ws.send(type: "subscribe", #"{"key":"hot"}"#)
            subscribers.append(ws)
        }
        for ws in subscribers {  // each subscription is in force once a later get is answered
            try await ws.send(type: "get", #"{"key":"hot"}"#)
            #expect(try await ws.next() == Self.noValue("hot"))
        }
        let writer = try await TestWebSocket.connect(stack.webSocketURL)
        try await writer.send(type: "set", #"{"key":"hot","value":"news"}"#)
        for ws in subscribers { #expect(try await ws.next() == Self.value("hot", #""news""#)) }

        let watcher = subscribers[0]
        for i in 0..<200 { try await writer.send(type: "set", #"{"key":"hot","value":\#(i)}"#) }
        for i in 0..<200 { #expect(try await watcher.next() == Self.value("hot", String(i))) }
        for ws in subscribers { await ws.close() }
        await writer.close()
    }

    @Test("SIGTERM does not wait for a client that stopped reading")
    func shutdownWithStuckClient() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let stuck = try RawWebSocket(port: stack.port)
        try stuck.sendText(#"{"type":"subscribe","payload":{"key":"stuck"}}"#)
        // Far more than the socket buffers between kv-ws and the client hold: writes to it stall.
        let writer = try await flood(stack, key: "stuck", count: 40, bytes: 512 << 10)
        let daemon = try #require(stack.ws)
        let stopped = daemon.terminate()
        #expect(stopped.status == 0, "\(daemon.log.suffix(2000))")
        #expect(stopped.seconds < 10, "took \(stopped.seconds) s")
        _ = (stuck, writer)
    }

    @Test("kv-ws pings idle clients, so idle subscribers outlive proxy read timeouts")
    func pings() throws {
        let stack = try HTTPStack(wsArguments: ["--ping-seconds", "1"])
        let idle = try RawWebSocket(port: stack.port)
        try idle.sendText(#"{"type":"subscribe","payload":{"key":"quiet"}}"#)
        #expect(try idle.waitForFrame(opcode: 0x9, within: 10), "a ping frame arrives at the configured interval")
    }

    @Test("a subscriber that stops reading does not delay another, and is closed with 1008 past its output limit", arguments: StoreKind.allCases)
    func slowSubscriber(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: ["--client-conflate-bytes", "65536", "--client-output-limit", "262144"], on: store)
        let keys = (0..<100).map { "key\($0)" }
        let slow = try RawWebSocket(port: stack.port)
        for key in keys { try slow.sendText(#"{"type":"subscribe","payload":{"key":"\#(key)"}}"#) }
        let fast = try await TestWebSocket.connect(stack.webSocketURL)
        for key in keys { try await fast.send(type: "subscribe", #"{"key":"\#(key)"}"#) }
        try await fast.send(type: "get", #"{"key":"key99"}"#)
        #expect(try await fast.next() == Self.noValue("key99"))
        // The slow client's subscriptions are in force once one of its later gets would be answered;
        // it never reads, so wait until kv-ws holds its 100 keys plus the fast client's (same keys).
        #expect(eventually { (try? stack.storeSubscribedKeys()) == 100 })

        let writer = try await TestWebSocket.connect(stack.webSocketURL)
        let big = String(repeating: "x", count: 64 << 10)
        // The fast subscriber gets every change, in order, while the slow one's queue fills. The
        // writer waits for each change to reach it: a subscriber that reads is never conflated, and
        // one that reads slower than a writer floods is conflated by design (tested below).
        for round in 0..<3 {
            for key in keys {
                try await writer.send(type: "set", #"{"key":"\#(key)","value":"\#(round)\#(big)"}"#)
                #expect(try await fast.next(within: 20) == Self.value(key, #""\#(round)\#(big)""#))
            }
        }
        let ws = try #require(stack.ws)
        #expect(eventually(within: 20) { ws.log.contains("closing a websocket whose client does not keep up") }, "\(ws.log.suffix(3000))")
        #expect(try slow.readsToEnd(within: 30), "the slow client's connection is closed")
        await fast.close()
        await writer.close()
        _ = slow
    }

    @Test("a slow subscriber of one key is conflated (and this is logged), never cut off", arguments: StoreKind.allCases)
    func slowSubscriberConflated(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: ["--client-conflate-bytes", "65536", "--client-output-limit", "262144"], on: store)
        let slow = try RawWebSocket(port: stack.port)
        try slow.sendText(#"{"type":"subscribe","payload":{"key":"one"}}"#)
        let writer = try await flood(stack, key: "one", count: 300, bytes: 64 << 10)
        let ws = try #require(stack.ws)
        #expect(eventually { ws.log.contains("keeping only the newest change per key") }, "\(ws.log.suffix(2000))")
        #expect(!ws.log.contains("closing a websocket whose client does not keep up"))
        // The conflation shows in kv-ws's metrics, through nginx.
        let conflated = try ObservabilityTests.metric(stack, "kv-ws", "kv_ws_conflated_messages_total")
        #expect(conflated > 0, "kv_ws_conflated_messages_total \(conflated)")
        #expect(try ObservabilityTests.metric(stack, "kv-ws", "kv_ws_connections") >= 2)
        await writer.close()
        _ = slow
    }

    @Test("a 1 MiB key and an 8 MiB value work over WebSocket", arguments: StoreKind.allCases)
    func largeKeyAndValue(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: ["--max-value-bytes", String(9 << 20)], on: store)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        let key = String(repeating: "k", count: 1 << 20)
        let value = "\"" + String(repeating: "v", count: 8 << 20) + "\""
        try await ws.send(type: "subscribe", #"{"key":"\#(key)"}"#)
        try await ws.send(type: "set", #"{"key":"\#(key)","value":\#(value)}"#)
        let change = try await ws.next(within: 30)
        #expect(change.count == Self.value(key, value).count)
        #expect(change.hasSuffix(#"vv"}}"#))
        try await ws.send(type: "set", #"{"key":"big","value":"\#(String(repeating: "x", count: 10 << 20))"}"#)
        #expect(try await ws.next(within: 30).contains("the limit is"))
        await ws.close()
    }

    @Test("a message over kv-ws's frame limit is answered with close code 1009")
    func oversizeMessage() throws {
        // The limit is the value limit plus six times the key limit plus 64 KiB of envelope.
        let stack = try HTTPStack(wsArguments: ["--max-value-bytes", "1024", "--max-key-bytes", "16"])
        let client = try RawWebSocket(port: stack.port)
        try client.sendText(#"{"type":"set","payload":{"key":"k","value":"\#(String(repeating: "x", count: 100 << 10))"}}"#)
        #expect(try client.closeCode(within: 10) == 1009, "\(stack.ws?.log.suffix(2000) ?? "")")
    }

    @Test("after kv-stored restarts, subscriptions are restored and subscribers are told changes may have been missed")
    func storeRestart() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(type: "subscribe", #"{"key":"k"}"#)
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == Self.noValue("k"))
        stack.store?.terminate()
        stack.store = nil
        #expect(try await ws.next().contains("changes of subscribed keys may be missed"))
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next().contains("storage unavailable"), "requests get an error, never hang")

        try stack.restartStore()
        #expect(try await ws.next().contains("changes made during the outage may have been missed"))
        #expect(eventually { (try? stack.client().send("POST", "/storage/k", json: #"{"value":"back"}"#).status) == 202 })
        #expect(try await ws.next() == Self.value("k", #""back""#))
        await ws.close()
    }

    @Test("SIGTERM closes every WebSocket with 1001 and kv-ws exits promptly")
    func shutdown() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(type: "subscribe", #"{"key":"k"}"#)
        let daemon = try #require(stack.ws)
        let stopped = daemon.terminate()
        #expect(stopped.status == 0, "\(daemon.log)")
        #expect(stopped.seconds < 3)
        let code = await ws.closed()
        #expect(code == .goingAway, "close code \(String(describing: code)); kv-ws log: \(daemon.log.suffix(1500))")
        #expect(!FileManager.default.fileExists(atPath: stack.wsSocket))
    }
}
