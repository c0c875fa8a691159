import Foundation
import KVCore
import Testing

/// WebSocket subscriptions to a prefix (docs/websocket.md, "Prefix subscriptions") through the
/// real nginx, kv-ws and kv-stored: every change of every key under the prefix, from HTTP and
/// WebSocket writes and from expiry; the opt-in fields; resuming after a restart of kv-stored.
@Suite("Prefix subscriptions through nginx", .serialized)
struct PrefixSubscriptionTests {
    static func member(_ message: String, _ name: String) -> String? { VersionedWebSocketTests.member(message, name) }
    static func rev(_ message: String) -> UInt64? { VersionedWebSocketTests.rev(message) }

    @Test("a prefix subscription sees every change under the prefix, each naming its key: HTTP and WebSocket writes, deletes, expiry; nothing else")
    func seedPrefixSubscription() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let http = stack.client()
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(type: "subscribe", #"{"prefix":"app/"}"#)
        // A subscribe is in force before any later message is answered: this answer says it is.
        try await ws.send(type: "get", #"{"key":"app/a"}"#)
        #expect(try await ws.next() == #"{"type":"no-value","payload":{"key":"app/a"}}"#)
        #expect(try http.send("POST", "/storage/app/a", json: #"{"value":1}"#).status == 202)
        #expect(try http.send("POST", "/storage/apple", json: #"{"value":"not under app/"}"#).status == 202)
        #expect(try http.send("POST", "/storage/app%2Fb%2Fc", json: #"{"value":{"deep":true}}"#).status == 202)
        #expect(try http.send("DELETE", "/storage/app/a").status == 200)
        try await ws.send(type: "set", #"{"key":"app/ü","value":"own write","ttl":"300ms"}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/a","value":1}}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/b/c","value":{"deep":true}}}"#)
        #expect(try await ws.next() == #"{"type":"no-value","payload":{"key":"app/a"}}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/ü","value":"own write"}}"#)
        #expect(try await ws.next(within: 5) == #"{"type":"no-value","payload":{"key":"app/ü"}}"#, "the expiry")

        // A key watched both by itself and through the prefix: once per subscription.
        try await ws.send(type: "subscribe", #"{"key":"app/both"}"#)
        try await ws.send(type: "get", #"{"key":"app/both"}"#)
        #expect(try await ws.next() == #"{"type":"no-value","payload":{"key":"app/both"}}"#)
        #expect(try http.send("POST", "/storage/app/both", json: #"{"value":2}"#).status == 202)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/both","value":2}}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/both","value":2}}"#)

        try await ws.send(type: "unsubscribe", #"{"prefix":"app/"}"#)
        try await ws.send(type: "unsubscribe", #"{"key":"app/both"}"#)
        try await ws.send(type: "get", #"{"key":"app/b/c"}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"app/b/c","value":{"deep":true}}}"#)
        #expect(try http.send("POST", "/storage/app/after", json: #"{"value":3}"#).status == 202)
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(ws.pending.isEmpty, "nothing after the unsubscribe: \(ws.pending)")
        #expect(try stack.storeCLI("info", "stats").contains("pubsub_patterns:0"), "kv-ws dropped its store subscription")

        // The empty prefix watches every key; bad prefix subscriptions are errors.
        try await ws.send(#"{"type":"subscribe","id":"all","payload":{"prefix":""}}"#)
        #expect(try await ws.next().hasPrefix(#"{"type":"ok","id":"all","rev":"#))
        let written = try http.send("POST", "/storage/anything", json: #"{"value":4}"#)
        let revision = try #require(written.headers["etag"]).dropFirst().dropLast()
        #expect(try await ws.next() == #"{"type":"value","rev":\#(revision),"payload":{"key":"anything","value":4}}"#)
        try await ws.send(type: "subscribe", #"{"prefix":"x","key":"y"}"#)
        #expect(try await ws.next().contains("payload has key and prefix: give one"))
        try await ws.send(type: "subscribe", #"{"prefix":7}"#)
        #expect(try await ws.next().contains("payload.prefix must be a string"))
        await ws.close()
    }

    @Test("initial returns the items under the prefix atomically with the subscription, then every change with rev; none missed under concurrent writes")
    func initialUnderWrites() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let http = stack.client(), writer = stack.client()
        for i in 0..<20 { #expect(try http.send("POST", "/storage/room/\(i)", json: #"{"value":0}"#).status == 202) }
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        // Writes race the subscription: each key's last value must be what the client ends with.
        let writes = Task.detached {
            for round in 1...10 { for i in 0..<20 { _ = try writer.send("POST", "/storage/room/\(i)", json: #"{"value":\#(round)}"#) } }
        }
        try await ws.send(#"{"type":"subscribe","id":1,"payload":{"prefix":"room/","initial":true}}"#)
        let ok = try await ws.next()
        #expect(Self.member(ok, "type") == #""ok""# && Self.member(ok, "payload") == #"{"prefix":"room/"}"# && Self.member(ok, "epoch") != nil, "\(ok)")
        var state: [String: (value: String, rev: UInt64)] = [:]
        var lastRev: UInt64 = 0
        try await writes.value
        while state.count < 20 || state.values.contains(where: { $0.value != "10" }) {
            let message = try await ws.next()
            let payload = try #require(Self.member(message, "payload"))
            let key = try #require(VersionedWebSocketTests.member(payload, "key")), value = try #require(VersionedWebSocketTests.member(payload, "value"))
            let rev = try #require(Self.rev(message), "\(message)")
            #expect(rev > (state[key]?.rev ?? 0), "per-key order: \(message)")
            if rev > Self.rev(ok) ?? 0 { #expect(rev > lastRev, "live changes in revision order"); lastRev = rev }
            state[key] = (value, rev)
        }
        #expect(state.count == 20)
        await ws.close()
    }

    @Test("a prefix subscriber resumes with since after being away, and through a kv-stored restart; from too far back, a reset marker and the whole state")
    func resume() async throws {
        let data = try TempDirectory()
        let stack = try HTTPStack(wsArguments: [], storeArguments: ["--data-dir", data.file("data"), "--history-changes", "50"])
        let http = stack.client()
        let first = try await TestWebSocket.connect(stack.webSocketURL)
        try await first.send(#"{"type":"subscribe","id":"s","payload":{"prefix":"p/"}}"#)
        let ok = try await first.next()
        let epoch = try #require(Self.member(ok, "epoch"))
        #expect(try http.send("POST", "/storage/p/a", json: #"{"value":"before"}"#).status == 202)
        let seen = try #require(Self.rev(try await first.next()))
        await first.close()
        #expect(try http.send("POST", "/storage/p/b", json: #"{"value":1}"#).status == 202)
        #expect(try http.send("POST", "/storage/q", json: #"{"value":"elsewhere"}"#).status == 202)
        #expect(try http.send("DELETE", "/storage/p/a").status == 200)

        let second = try await TestWebSocket.connect(stack.webSocketURL)
        try await second.send(#"{"type":"subscribe","id":"r","payload":{"prefix":"p/","since":\#(seen),"epoch":\#(epoch)}}"#)
        #expect(Self.member(try await second.next(), "type") == #""ok""#)
        let b = try await second.next(), a = try await second.next()
        #expect(Self.member(b, "payload") == #"{"key":"p/b","value":1}"# && Self.member(b, "reset") == nil, "\(b)")
        #expect(Self.member(a, "type") == #""no-value""# && Self.member(a, "payload") == #"{"key":"p/a"}"#, "\(a)")

        // kv-stored restarts: the exact prefix subscriber catches up and is not told of a gap.
        stack.store?.terminate()
        stack.store = nil
        #expect(try await second.next().contains("may be missed until it returns"))
        try stack.restartStore()
        #expect(eventually { (try? http.send("POST", "/storage/p/c", json: #"{"value":2}"#).status) == 202 })
        var messages: [String] = []
        while !(messages.last.map { $0.contains(#""value":2"#) } ?? false) { messages.append(try await second.next(within: 20)) }
        #expect(messages.count == 1 && Self.member(messages[0], "reset") == nil && (Self.rev(messages[0]) ?? 0) > (Self.rev(a) ?? 0), "\(messages)")
        await second.close()

        // Past the history (50 changes): a reset, then the whole state under the prefix.
        for i in 0..<60 { _ = try http.send("POST", "/storage/q", json: #"{"value":\#(i)}"#) }
        let third = try await TestWebSocket.connect(stack.webSocketURL)
        try await third.send(#"{"type":"subscribe","payload":{"prefix":"p/","since":\#(seen),"epoch":\#(epoch)}}"#)
        let reset = try await third.next()
        #expect(Self.member(reset, "type") == #""reset""# && Self.member(reset, "payload") == #"{"prefix":"p/"}"# && Self.rev(reset) != nil, "\(reset)")
        let items = [try await third.next(), try await third.next()]
        #expect(items.map { Self.member($0, "payload") } == [#"{"key":"p/b","value":1}"#, #"{"key":"p/c","value":2}"#], "\(items)")
        #expect(items.allSatisfy { Self.member($0, "reset") == "true" })
        await third.close()
    }

    @Test("limits and access: prefix subscriptions per connection are capped; a token sees only the keys it may watch; a prefix with none is refused")
    func limitsAndAccess() async throws {
        let file = try AccessControlTests.AccessFile()
        try file.write(watcherListed: true, extra: [file.entry("mixed", "mixed-token-0123456789", #"{"subscribe": ["app/"], "except": {"subscribe": ["app/secret/"]}}"#)])
        let stack = try HTTPStack(fcgiArguments: ["--access-file", file.path], wsArguments: ["--access-file", file.path, "--max-prefix-subscriptions", "2"])
        let admin = ["Authorization": "Bearer \(file.admin)"]
        let ws = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer mixed-token-0123456789")])
        try await ws.send(#"{"type":"subscribe","id":1,"payload":{"prefix":"app/"}}"#)
        #expect(try await ws.next().hasPrefix(#"{"type":"ok","id":1"#))
        try await ws.send(type: "subscribe", #"{"prefix":"other/"}"#)
        #expect(try await ws.next() == #"{"type":"error","code":"forbidden","payload":"forbidden: mixed may not subscribe any key under prefix \"other/\""}"#)
        for key in ["app/secret/s", "app/open"] {
            #expect(try stack.client().send("POST", "/storage/\(key)", body: Array(#"{"value":1}"#.utf8), headers: admin).status == 202)
        }
        let shown = try await ws.next()
        #expect(Self.member(shown, "payload") == #"{"key":"app/open","value":1}"#, "app/secret/ is not shown: \(shown)")
        try await ws.send(type: "subscribe", #"{"prefix":"app/x"}"#)
        try await ws.send(type: "subscribe", #"{"prefix":"app/y"}"#)
        #expect(try await ws.next().contains("prefix subscription limit reached: this connection already watches 2 prefixes"))
        await ws.close()
    }

    @Test("on a Redis store a prefix subscription is a clear error, never a silent one")
    func onRedis() async throws {
        let stack = try HTTPStack(wsArguments: [], on: .redis)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"subscribe","id":1,"payload":{"prefix":"app/"}}"#)
        #expect(try await ws.next() == #"{"type":"error","id":1,"payload":"prefix subscriptions are not available on a Redis store yet (they are on kv-stored): subscribe to keys, or list the prefix"}"#)
        try await ws.send(type: "get", #"{"key":"k"}"#)
        #expect(try await ws.next() == #"{"type":"no-value","payload":{"key":"k"}}"#)
        await ws.close()
    }
}
