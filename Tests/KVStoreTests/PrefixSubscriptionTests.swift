import KVCore
import NIOCore
import NIOEmbedded
import RESP
import Testing
@testable import KVStore

/// Prefix subscriptions (docs/protocol.md, "Prefix subscriptions"): the pattern rules, the
/// matching of changed keys against watched prefixes, PSUBSCRIBE's pushes and KVPSYNC.
@Suite("kv-stored prefix subscriptions")
struct PrefixSubscriptionTests {
    @Test("a prefix pattern is the prefix escaped, then one *; any other glob is not one")
    func patterns() {
        func prefix(_ pattern: String) -> String? { PrefixPattern.prefix(of: Array(pattern.utf8)).map { String(decoding: $0, as: UTF8.self) } }
        #expect(prefix("app/*") == "app/")
        #expect(prefix("*") == "")
        #expect(prefix(#"a\*b\?\[\]\\*"#) == #"a*b?[]\"#)
        #expect(prefix(#"\a*"#) == "a", "an unneeded escape is the byte itself")
        for notPrefix in ["app/", "a*b*", "a?*", "a[bc]*", #"a\"#, #"a\*"#, "", "**"] {
            #expect(prefix(notPrefix) == nil, "\(notPrefix)")
        }
        for text in ["", "app/", #"we*ird?[]\"#, "ü/日本"] {
            let bytes = Array(text.utf8)
            #expect(PrefixPattern.prefix(of: PrefixPattern.pattern(of: bytes)) == bytes, "round trip of \(text)")
        }
    }

    @Test("each changed key reaches exactly the watched prefixes it starts with, as a brute-force check says")
    func matching() {
        var watchers = PrefixWatchers()
        let subscriber = RecordingSubscriber()
        let prefixes = ["", "a", "ab", "abc", "abd", "b", "ba/", "ü", "abcdefgh"].map { Array($0.utf8) }
        for prefix in prefixes {
            let added = watchers.add(prefix, pattern: PrefixPattern.pattern(of: prefix), subscriber)
            #expect(added)
        }
        let again = watchers.add(Array("ab".utf8), pattern: Array("ab*".utf8), subscriber)
        #expect(!again, "already watched")
        #expect(watchers.count == prefixes.count && watchers.subscriptionCount == prefixes.count)
        func matches(_ key: String) -> Set<[UInt8]> {
            var found = Set<[UInt8]>()
            Array(key.utf8).withUnsafeBytes { raw in watchers.forEachMatch(raw) { found.insert($0.prefix) } }
            return found
        }
        for key in ["", "a", "abc", "abcdefghij", "abx", "ba", "ba/1", "über", "zzz", "abd"] {
            let expected = Set(prefixes.filter { Array(key.utf8).starts(with: $0) })
            #expect(matches(key) == expected, "\(key)")
        }
        let removed = watchers.remove(Array("abc".utf8), subscriber), removedAgain = watchers.remove(Array("abc".utf8), subscriber)
        #expect(removed && !removedAgain)
        #expect(matches("abcdefghij") == Set(["", "a", "ab", "abcdefgh"].map { Array($0.utf8) }))
        for prefix in prefixes where prefix != Array("abc".utf8) {
            let gone = watchers.remove(prefix, subscriber)
            #expect(gone)
        }
        #expect(watchers.isEmpty && watchers.subscriptionCount == 0)
        #expect(matches("abc").isEmpty)
    }

    @Test("the keyspace delivers a change once per subscription: through the key, and through each watched prefix")
    func keyspaceDelivery() {
        var ks = Keyspace(clock: ManualClock(startNanoseconds: 0))
        let subscriber = RecordingSubscriber()
        ks.subscribe("app/x", subscriber)
        ks.subscribe(prefix: Array("app/".utf8), pattern: Array("app/*".utf8), subscriber)
        ks.subscribe(prefix: [], pattern: Array("*".utf8), subscriber)
        _ = ks.set("app/x", "1")
        _ = ks.set("other", "2")
        #expect(subscriber.summary == ["set app/x=1 @1", "set app/x=1 @1", "set app/x=1 @1", "set other=2 @2"])
        #expect(Set(subscriber.patterns.prefix(3)) == [nil, "app/*", "*"] && subscriber.patterns[3] == "*")
        ks.unsubscribe(prefix: [], subscriber)
        _ = ks.delete("app/x")
        #expect(subscriber.summary.suffix(2) == ["deleted app/x @3", "deleted app/x @3"])
    }
}

extension ConnectionHandlerTests {
    @Test("PSUBSCRIBE prefix*: acknowledged, then a pmessage per change of every key under it, expiry included; other globs refused")
    func psubscribe() throws {
        let store = makeStore()
        let subscriber = try makeChannel(store)
        let writer = try makeChannel(store)
        try send(subscriber, ["PSUBSCRIBE", "app/*", #"we\*ird*"#])
        #expect(try output(subscriber) == "*3\r\n$10\r\npsubscribe\r\n$5\r\napp/*\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$8\r\nwe\\*ird*\r\n:2\r\n")
        try send(writer, ["SET", "app/a", "1", "PX", "10"])
        try send(writer, ["SET", "apple", "2"])
        try send(writer, ["SET", "we*ird/1", "3"])
        try send(writer, ["DEL", "app/a"])
        loop.run()
        #expect(try output(subscriber) == "*4\r\n$8\r\npmessage\r\n$5\r\napp/*\r\n$5\r\napp/a\r\n$7\r\nset:1:1\r\n"
            + "*4\r\n$8\r\npmessage\r\n$8\r\nwe\\*ird*\r\n$8\r\nwe*ird/1\r\n$7\r\nset:3:3\r\n"
            + "*4\r\n$8\r\npmessage\r\n$5\r\napp/*\r\n$5\r\napp/a\r\n$9\r\ndeleted:4\r\n")
        try send(writer, ["SET", "app/b", "x", "PX", "10"])
        loop.run()
        _ = try output(subscriber)
        clock.advance(milliseconds: 10)
        loop.advanceTime(by: .milliseconds(10))
        #expect(try output(subscriber) == "*4\r\n$8\r\npmessage\r\n$5\r\napp/*\r\n$5\r\napp/b\r\n$9\r\nexpired:6\r\n")
        #expect(store.withKeyspace { ($0.prefixSubscriptionCount, $0.watchedPrefixCount) } == (2, 2))

        try send(subscriber, ["GET", "k"])
        #expect(try output(subscriber).contains("only (P|S)SUBSCRIBE"), "RESP2 subscriber mode holds with patterns only")
        try send(subscriber, ["PSUBSCRIBE", "ok/*", "a?b*"])
        #expect(try output(subscriber).hasPrefix("-ERR kv-stored's PSUBSCRIBE takes prefix patterns only"))
        #expect(store.withKeyspace { $0.prefixSubscriptionCount } == 2, "a refused command subscribes nothing, not even its good patterns")
        try send(subscriber, ["PUNSUBSCRIBE", "app/*"])
        #expect(try output(subscriber) == "*3\r\n$12\r\npunsubscribe\r\n$5\r\napp/*\r\n:1\r\n")
        try send(subscriber, ["PUNSUBSCRIBE"])
        #expect(try output(subscriber) == "*3\r\n$12\r\npunsubscribe\r\n$8\r\nwe\\*ird*\r\n:0\r\n")
        #expect(store.withKeyspace { $0.prefixSubscriptionCount } == 0)
        try send(subscriber, ["PSUBSCRIBE", "*"])
        _ = try output(subscriber)
        _ = try subscriber.finish()
        #expect(store.withKeyspace { $0.prefixSubscriptionCount } == 0, "closing drops prefix subscriptions")
    }

    @Test("a slow prefix subscriber is conflated per key and pattern: the newest value of each key arrives")
    func slowPrefixSubscriber() throws {
        let store = makeStore()
        let subscriber = try makeChannel(store, outbox: .init(conflateBytes: 1000, maxBytes: 64_000))
        let writer = try makeChannel(store)
        try send(subscriber, ["PSUBSCRIBE", "k/*"])
        _ = try output(subscriber)
        subscriber.isWritable = false
        for i in 0..<300 { try send(writer, ["SET", "k/\(i % 3)", "value-\(i)"]) }
        loop.run()
        subscriber.isWritable = true
        subscriber.pipeline.fireChannelWritabilityChanged()
        let delivered = try output(subscriber)
        #expect(delivered.ranges(of: "pmessage").count < 100, "superseded values are dropped")
        for i in 297..<300 { #expect(delivered.contains("value-\(i)\r\n"), "the final value of each key arrives") }
    }

    @Test("KVPSYNC: the changes under a prefix after SINCE, or its state (INITIAL, reset), or TOOMANY past the state limit")
    func kvpsync() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        _ = try exchange(channel, "SET", "p/a", "1")
        _ = try exchange(channel, "SET", "q", "2")
        _ = try exchange(channel, "SET", "p/b", "3", "PX", "10")
        let epoch = try exchange(channel, "KVSYNC", "x").split(separator: "\r\n")[4]
        #expect(try exchange(channel, "KVPSYNC", "p/") == "*4\r\n$4\r\nlive\r\n$\(epoch.count)\r\n\(epoch)\r\n:3\r\n*0\r\n")
        #expect(try exchange(channel, "KVPSYNC", "p/", "INITIAL")
                == "*4\r\n$4\r\nlive\r\n$\(epoch.count)\r\n\(epoch)\r\n:3\r\n*2\r\n*4\r\n$3\r\nset\r\n:1\r\n$3\r\np/a\r\n$1\r\n1\r\n*4\r\n$3\r\nset\r\n:3\r\n$3\r\np/b\r\n$1\r\n3\r\n")
        _ = try exchange(channel, "DEL", "p/a")
        #expect(try exchange(channel, "KVPSYNC", "p/", "SINCE", "1", "EPOCH", String(epoch))
                == "*4\r\n$6\r\nreplay\r\n$\(epoch.count)\r\n\(epoch)\r\n:4\r\n*2\r\n*4\r\n$3\r\nset\r\n:3\r\n$3\r\np/b\r\n$1\r\n3\r\n*3\r\n$7\r\ndeleted\r\n:4\r\n$3\r\np/a\r\n")
        #expect(try exchange(channel, "KVPSYNC", "p/", "SINCE", "1", "EPOCH", "another")
                == "*4\r\n$5\r\nreset\r\n$\(epoch.count)\r\n\(epoch)\r\n:4\r\n*1\r\n*4\r\n$3\r\nset\r\n:3\r\n$3\r\np/b\r\n$1\r\n3\r\n")
        #expect(try exchange(channel, "KVPSYNC", "p/", "SINCE", "1").hasPrefix("-ERR SINCE and EPOCH go together"))
        for i in 0...CommandProcessor.prefixStateLimit { _ = try exchange(channel, "SET", "many/\(i)", "x") }
        #expect(try exchange(channel, "KVPSYNC", "many/", "INITIAL").hasPrefix("-TOOMANY the prefix holds more than 10000 keys"))
        #expect(try exchange(channel, "KVPSYNC", "many/").hasPrefix("*4\r\n$4\r\nlive"), "without a state there is no limit to pass")
    }

    @Test("SCAN: cursors stand for keys; a full iteration returns every key once, only the pattern's range is walked, COUNT bounds a call")
    func scan() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        for key in ["app/a", "app/b/x", "app/c", "apple", "b", "app/b/y"] { _ = try exchange(channel, "SET", key, "v") }
        func scanAll(_ extra: [String]) throws -> [String] {
            var cursor = "0", keys: [String] = [], calls = 0
            repeat {
                try send(channel, ["SCAN", cursor] + extra)
                let lines = try output(channel).split(separator: "\r\n").map(String.init)
                // *2 $n cursor *k ($len key)…
                cursor = lines[2]
                keys += stride(from: 5, to: lines.count, by: 2).map { lines[$0] }
                calls += 1
            } while cursor != "0" && calls < 100
            return keys
        }
        #expect(try scanAll([]) == ["app/a", "app/b/x", "app/b/y", "app/c", "apple", "b"])
        #expect(try scanAll(["COUNT", "1"]) == ["app/a", "app/b/x", "app/b/y", "app/c", "apple", "b"])
        #expect(try scanAll(["MATCH", "app/*", "COUNT", "2"]) == ["app/a", "app/b/x", "app/b/y", "app/c"])
        #expect(try scanAll(["MATCH", "app/b/?"]) == ["app/b/x", "app/b/y"])
        #expect(try scanAll(["MATCH", "*/x"]) == ["app/b/x"])
        #expect(try scanAll(["TYPE", "hash"]).isEmpty && scanAll(["TYPE", "string"]).count == 6)
        #expect(try exchange(channel, "SCAN", "12345").hasPrefix("-ERR invalid cursor: kv-stored keeps the last"))
        #expect(try exchange(channel, "SCAN", "x") == "-ERR invalid cursor\r\n")
        #expect(try exchange(channel, "SCAN", "0", "COUNT", "0").hasPrefix("-ERR value is not an integer"))
        #expect(try exchange(channel, "SCAN", "0", "BOGUS", "1") == "-ERR syntax error\r\n")
        #expect(try exchange(channel, "SCAN", "0", "MATCH") == "-ERR syntax error\r\n")
        #expect(try exchange(channel, "SCAN", "0", "MATCH", "?" + String(repeating: "x", count: 1024)).hasPrefix("-ERR MATCH pattern is 1025 bytes"))
        // A cursor stays valid: repeating a call gives the same page.
        try send(channel, ["SCAN", "0", "COUNT", "2"])
        let cursor = try output(channel).split(separator: "\r\n").map(String.init)[2]
        func page(_ reply: String) -> ArraySlice<Substring> { reply.split(separator: "\r\n").dropFirst(3) }
        let first = page(try exchange(channel, "SCAN", cursor, "COUNT", "2")), again = page(try exchange(channel, "SCAN", cursor, "COUNT", "2"))
        #expect(first == again && first.contains("app/b/y"), "\(first)")
    }
}
