import Foundation
import KVCore
import NIOConcurrencyHelpers
import Testing

/// The WebSocket API's opt-in fields (docs/websocket.md) through the real nginx, kv-ws and
/// kv-stored: ids and `ok`, `ifRev`, `initial`, and resuming with `since`.
@Suite("WebSocket versions through nginx", .serialized)
struct VersionedWebSocketTests {
    /// A top-level member of a message, as JSON text (strings keep their quotes).
    static func member(_ message: String, _ name: String) -> String? {
        guard let document = try? JSONReader().read(Array(message.utf8)), let value = document.root[member: name] else { return nil }
        return String(decoding: document.compactText(of: value), as: UTF8.self)
    }

    static func rev(_ message: String) -> UInt64? { member(message, "rev").flatMap { UInt64($0) } }

    @Test("with an id, writes and subscriptions are acknowledged with ok and the revision; get answers with the revision", arguments: StoreKind.allCases)
    func acknowledgements(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"set","id":"w1","payload":{"key":"k","value":{"n":1}}}"#)
        let ok = try await ws.next()
        #expect(Self.member(ok, "type") == #""ok""# && Self.member(ok, "id") == #""w1""#, "\(ok)")
        let written = try #require(Self.rev(ok))
        try await ws.send(#"{"type":"get","id":2,"payload":{"key":"k"}}"#)
        #expect(try await ws.next() == #"{"type":"value","id":2,"rev":\#(written),"payload":{"key":"k","value":{"n":1}}}"#)
        try await ws.send(#"{"type":"subscribe","id":"s","payload":{"key":"k"}}"#)
        let subscribed = try await ws.next()
        #expect(Self.member(subscribed, "type") == #""ok""# && Self.rev(subscribed) == written, "\(subscribed)")
        let epoch = try #require(Self.member(subscribed, "epoch"))
        #expect(epoch.count > 2)
        #expect(try stack.client().send("POST", "/storage/k", json: #"{"value":2}"#).status == 202)
        #expect(try await ws.next() == #"{"type":"value","rev":\#(written + 1),"payload":{"key":"k","value":2}}"#)
        // The ok and the change it made travel different paths from kv-stored: either may come first.
        try await ws.send(#"{"type":"delete","id":"d","payload":{"key":"k"}}"#)
        let both = Set([try await ws.next(), try await ws.next()])
        #expect(both == [#"{"type":"ok","id":"d","rev":\#(written + 2),"payload":{"key":"k"}}"#,
                         #"{"type":"no-value","rev":\#(written + 2),"payload":{"key":"k"}}"#], "\(both)")
        try await ws.send(#"{"type":"unsubscribe","id":"u","payload":{"key":"k"}}"#)
        #expect(try await ws.next() == #"{"type":"ok","id":"u","rev":\#(written + 2),"payload":{"key":"k"}}"#)
        await ws.close()
    }

    @Test("two WebSocket writers racing with the same ifRev: exactly one is acknowledged, the other gets a conflict naming the new revision", arguments: StoreKind.allCases)
    func racingWriters(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let a = try await TestWebSocket.connect(stack.webSocketURL), b = try await TestWebSocket.connect(stack.webSocketURL)
        for round in 0..<20 {
            let key = "race\(round)"
            try await a.send(#"{"type":"set","id":0,"payload":{"key":"\#(key)","value":0}}"#)
            let base = try #require(Self.rev(try await a.next()))
            try await a.send(#"{"type":"set","id":"a","payload":{"key":"\#(key)","value":"a","ifRev":\#(base)}}"#)
            try await b.send(#"{"type":"set","id":"b","payload":{"key":"\#(key)","value":"b","ifRev":\#(base)}}"#)
            let answers = [try await a.next(), try await b.next()]
            let oks = answers.filter { Self.member($0, "type") == #""ok""# }
            let conflicts = answers.filter { Self.member($0, "code") == #""conflict""# }
            #expect(oks.count == 1 && conflicts.count == 1, "\(answers)")
            if let ok = oks.first, let conflict = conflicts.first {
                #expect(Self.rev(conflict) == Self.rev(ok), "the conflict names the winner's revision: \(answers)")
                #expect(Self.member(conflict, "payload")?.contains("conflict") == true)
            }
        }
        await a.close()
        await b.close()
    }

    @Test("subscribe with initial: the current value first, then every later change, with no revision skipped under concurrent writes", arguments: StoreKind.allCases)
    func initialState(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let writer = try await TestWebSocket.connect(stack.webSocketURL)
        try await writer.send(#"{"type":"set","id":0,"payload":{"key":"k","value":0}}"#)
        _ = try await writer.next()
        // The writer keeps writing this key (and only this one) until the subscriber has seen 50
        // changes, so the subscription lands among writes, and the key's revisions are
        // consecutive: any gap would be a change lost between the initial state and the rest.
        let stop = NIOLockedValueBox(false)
        let writing = Task {
            var i = 1
            while !stop.withLockedValue({ $0 }) {
                try await writer.send(#"{"type":"set","payload":{"key":"k","value":\#(i)}}"#)
                i += 1
                if i % 20 == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
            }
            try await writer.send(#"{"type":"set","payload":{"key":"k","value":"end"}}"#)
        }
        try await Task.sleep(nanoseconds: 20_000_000)
        let reader = try await TestWebSocket.connect(stack.webSocketURL)
        try await reader.send(#"{"type":"subscribe","payload":{"key":"k","initial":true}}"#)
        let first = try await reader.next()
        #expect(Self.member(first, "type") == #""value""# && Self.member(first, "reset") == nil, "\(first)")
        var last = try #require(Self.rev(first))
        var seen = 0
        while true {
            let message = try await reader.next(within: 20)
            let rev = try #require(Self.rev(message), "\(message)")
            #expect(rev == last + 1, "after \(last) came \(rev)")
            last = rev
            seen += 1
            if seen == 50 { stop.withLockedValue { $0 = true } }
            if message.contains(#""value":"end""#) { break }
        }
        try await writing.value
        #expect(seen > 50)
        await reader.close()
        await writer.close()
    }

    @Test("a subscriber away while 100 changes happen resumes with since and receives exactly those, in order, then live ones")
    func resume() async throws {
        let stack = try HTTPStack(wsArguments: [])
        let http = stack.client()
        let first = try await TestWebSocket.connect(stack.webSocketURL)
        try await first.send(#"{"type":"subscribe","id":"s","payload":{"key":"k"}}"#)
        let ok = try await first.next()
        let epoch = try #require(Self.member(ok, "epoch"))
        #expect(try http.send("POST", "/storage/k", json: #"{"value":"before"}"#).status == 202)
        let seenLast = try #require(Self.rev(try await first.next()))
        await first.close()

        for i in 0..<100 {
            #expect(try http.send("POST", "/storage/k", json: #"{"value":\#(i)}"#).status == 202)
            if i % 10 == 9 { _ = try http.send("POST", "/storage/other", json: #"{"value":\#(i)}"#) }  // not this key's business
        }
        #expect(try http.send("DELETE", "/storage/k").status == 200)

        let second = try await TestWebSocket.connect(stack.webSocketURL)
        try await second.send(#"{"type":"subscribe","id":"r","payload":{"key":"k","since":\#(seenLast),"epoch":\#(epoch)}}"#)
        let resumed = try await second.next()
        #expect(Self.member(resumed, "type") == #""ok""#, "\(resumed)")
        var revisions: [UInt64] = []
        for i in 0..<100 {
            let message = try await second.next()
            #expect(Self.member(message, "payload") == #"{"key":"k","value":\#(i)}"# && Self.member(message, "reset") == nil, "\(message)")
            revisions.append(try #require(Self.rev(message)))
        }
        let deletion = try await second.next()
        #expect(Self.member(deletion, "type") == #""no-value""#, "\(deletion)")
        #expect(revisions == revisions.sorted() && Set(revisions).count == 100 && revisions[0] > seenLast)
        #expect(Self.rev(resumed) == Self.rev(deletion), "ok names the revision the replay reaches")
        #expect(try http.send("POST", "/storage/k", json: #"{"value":"live"}"#).status == 202)
        let live = try await second.next()
        #expect(Self.member(live, "payload") == #"{"key":"k","value":"live"}"#, "\(live)")
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(second.pending.isEmpty, "nothing more: \(second.pending)")
        await second.close()
    }

    @Test("a resume from beyond kv-stored's history, or from other data, gets the current state marked as a reset")
    func resumeTooLate() async throws {
        let stack = try HTTPStack(wsArguments: [], storeArguments: ["--history-changes", "10"])
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":"old"}"#).status == 202)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"get","id":1,"payload":{"key":"k"}}"#)
        let old = try #require(Self.rev(try await ws.next()))
        for i in 0..<20 { _ = try http.send("POST", "/storage/k", json: #"{"value":\#(i)}"#) }
        try await ws.send(#"{"type":"subscribe","id":"s","payload":{"key":"k"}}"#)
        let epoch = try #require(Self.member(try await ws.next(), "epoch"))
        try await ws.send(#"{"type":"unsubscribe","payload":{"key":"k"}}"#)

        try await ws.send(#"{"type":"subscribe","payload":{"key":"k","since":\#(old),"epoch":\#(epoch)}}"#)
        let reset = try await ws.next()
        #expect(reset == #"{"type":"value","rev":\#(old + 20),"reset":true,"payload":{"key":"k","value":19}}"#)
        try await ws.send(#"{"type":"unsubscribe","payload":{"key":"k"}}"#)
        try await ws.send(#"{"type":"subscribe","payload":{"key":"gone","since":\#(old),"epoch":"another-data-set"}}"#)
        #expect(try await ws.next() == #"{"type":"no-value","rev":\#(old + 20),"reset":true,"payload":{"key":"gone"}}"#)
        await ws.close()
    }

    @Test("a seed client next to a versioned one sees byte-identical seed messages", arguments: StoreKind.allCases)
    func seedUnchanged(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let seed = try await TestWebSocket.connect(stack.webSocketURL), versioned = try await TestWebSocket.connect(stack.webSocketURL)
        try await versioned.send(#"{"type":"subscribe","id":1,"payload":{"key":"k","initial":true}}"#)
        _ = try await versioned.next()
        _ = try await versioned.next()
        try await seed.send(#"{"type":"subscribe","payload":{"key":"k"}}"#)
        try await seed.send(#"{"type":"get","payload":{"key":"k"}}"#)
        #expect(try await seed.next() == #"{"type":"no-value","payload":{"key":"k"}}"#)
        try await seed.send(#"{"type":"set","payload":{"key":"k","value":[1,"two"],"ttl":"1h"}}"#)
        #expect(try await seed.next() == #"{"type":"value","payload":{"key":"k","value":[1,"two"]}}"#)
        #expect(Self.rev(try await versioned.next()) != nil)
        try await seed.send(#"{"type":"delete","payload":{"key":"k"}}"#)
        #expect(try await seed.next() == #"{"type":"no-value","payload":{"key":"k"}}"#)
        try await seed.send(#"{"type":"set","payload":{"key":"k"}}"#)
        #expect(try await seed.next() == #"{"type":"error","payload":"payload.value is required for set"}"#)
        await seed.close()
        await versioned.close()
    }

    @Test("when kv-stored restarts, an exact subscriber catches up from its history, and is not told it may have missed changes")
    func storeRestart() async throws {
        let data = try TempDirectory()
        let stack = try HTTPStack(wsArguments: [], storeArguments: ["--data-dir", data.file("data")])
        let http = stack.client()
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"subscribe","id":"s","payload":{"key":"k"}}"#)
        _ = try await ws.next()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        let before = try #require(Self.rev(try await ws.next()))
        stack.store?.terminate()
        stack.store = nil
        #expect(try await ws.next().contains("may be missed until it returns"))
        try stack.restartStore()
        // The first write after the restart may race kv-ws's reconnection: it then comes as a
        // replay from the history kv-stored keeps from its loaded revision on, else live.
        #expect(eventually { (try? http.send("POST", "/storage/k", json: #"{"value":2}"#).status) == 202 })
        var messages: [String] = []
        while !(messages.last.map { $0.contains(#""value":2"#) } ?? false) { messages.append(try await ws.next(within: 20)) }
        #expect(!messages.contains { $0.contains("may have been missed") }, "\(messages)")
        #expect(messages.allSatisfy { (Self.rev($0) ?? 0) > before && Self.member($0, "reset") == nil }, "\(messages)")
        #expect(messages.count == 1, "exactly the one change: \(messages)")
        await ws.close()
    }
}
