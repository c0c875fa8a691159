import KVCore
import NIOCore
import NIOEmbedded
import RESP
import Testing
@testable import KVStore

/// KVGET, KVSET, KVDEL and KVSYNC (docs/protocol.md, "Versioned commands"), bytes in and out.
extension ConnectionHandlerTests {
    func exchange(_ channel: EmbeddedChannel, _ args: String...) throws -> String {
        try send(channel, args)
        return try output(channel)
    }

    @Test("KVGET answers the value with its revision and remaining TTL, or null")
    func kvget() throws {
        let channel = try makeChannel(makeStore())
        #expect(try exchange(channel, "KVGET", "k") == "$-1\r\n")
        _ = try exchange(channel, "SET", "k", "v", "PX", "5000")
        #expect(try exchange(channel, "KVGET", "k") == "*3\r\n$1\r\nv\r\n:1\r\n:5000\r\n")
        _ = try exchange(channel, "SET", "k", "w")
        #expect(try exchange(channel, "KVGET", "k") == "*3\r\n$1\r\nw\r\n:2\r\n:-1\r\n")
    }

    @Test("KVSET applies only when its condition holds, answers the new revision, and names the current one on a conflict")
    func kvset() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        #expect(try exchange(channel, "KVSET", "k", "1", "IFREV", "3") == "-CONFLICT 0\r\n", "absent: revision 0")
        #expect(try exchange(channel, "KVSET", "k", "1", "IFREV", "0") == ":1\r\n", "IFREV 0: create only")
        #expect(try exchange(channel, "KVSET", "k", "2", "NX") == "-CONFLICT 1\r\n")
        #expect(try exchange(channel, "KVSET", "k", "2", "IFREV", "1", "PX", "60000") == ":2\r\n")
        // Two writers read revision 2; exactly one of their writes lands.
        #expect(try exchange(channel, "KVSET", "k", "A", "IFREV", "2") == ":3\r\n")
        #expect(try exchange(channel, "KVSET", "k", "B", "IFREV", "2") == "-CONFLICT 3\r\n")
        #expect(try exchange(channel, "KVSET", "k", "C", "IFREV", "9", "IFREV", "3", "XX") == "-ERR syntax error\r\n")
        #expect(try exchange(channel, "KVSET", "k", "C", "IFREV", "9", "IFREV", "3") == ":4\r\n", "any of several revisions")
        #expect(try exchange(channel, "KVSET", "k", "D", "XX") == ":5\r\n")
        #expect(try exchange(channel, "KVSET", "k", "E", "PX", "0") == "-ERR invalid expire time in 'kvset' command\r\n")
        #expect(try exchange(channel, "KVSET", "k", "E", "IFREV", "x") == "-ERR syntax error\r\n")
        #expect(store.withKeyspace { ($0.revision, $0.get("k")) } == (5, "D"), "refused writes changed nothing")
    }

    @Test("KVDEL deletes when its condition holds, tells an absent key apart, and refuses a conflict")
    func kvdel() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        #expect(try exchange(channel, "KVDEL", "k") == "*2\r\n:0\r\n:0\r\n", "nothing to delete, at revision 0")
        #expect(try exchange(channel, "KVDEL", "k", "NX") == "*2\r\n:0\r\n:0\r\n", "absent, as required")
        _ = try exchange(channel, "SET", "k", "1")
        #expect(try exchange(channel, "KVDEL", "k", "NX") == "-CONFLICT 1\r\n")
        #expect(try exchange(channel, "KVDEL", "k", "IFREV", "7") == "-CONFLICT 1\r\n")
        #expect(store.withKeyspace { $0.get("k") } == "1")
        #expect(try exchange(channel, "KVDEL", "k", "IFREV", "1") == "*2\r\n:1\r\n:2\r\n")
        #expect(try exchange(channel, "KVDEL", "k", "XX") == "-CONFLICT 0\r\n")
    }

    @Test("KVSYNC: live state, exact replay of a key's missed changes, and a reset when it cannot replay")
    func kvsync() throws {
        let store = Store(clock: clock, timerLoop: loop, history: HistoryLimits(maxChanges: 6, maxBytes: 1 << 20))
        let processor = CommandProcessor(store: store, limits: Limits(), statistics: statistics, socketPath: "/test")
        let channel = try makeChannel(processor: processor)
        let epoch = processor.epoch
        let header = { (mode: String, revision: Int) in "*4\r\n$\(mode.utf8.count)\r\n\(mode)\r\n$\(epoch.utf8.count)\r\n\(epoch)\r\n:\(revision)\r\n" }

        #expect(try exchange(channel, "KVSYNC", "k") == header("live", 0) + "*0\r\n")
        #expect(try exchange(channel, "KVSYNC", "k", "INITIAL") == header("live", 0) + "*1\r\n*2\r\n$6\r\nabsent\r\n:0\r\n")
        for (key, value) in [("k", "1"), ("other", "x"), ("k", "2")] { _ = try exchange(channel, "SET", key, value) }
        #expect(try exchange(channel, "KVSYNC", "k", "INITIAL") == header("live", 3) + "*1\r\n*3\r\n$3\r\nset\r\n:3\r\n$1\r\n2\r\n")
        _ = try exchange(channel, "DEL", "k")
        _ = try exchange(channel, "SET", "k", "3")
        // Resuming after revision 1: the key's changes 3, 4 and 5, in order; "other" is not its business.
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "1", "EPOCH", epoch)
            == header("replay", 5) + "*3\r\n*3\r\n$3\r\nset\r\n:3\r\n$1\r\n2\r\n*2\r\n$7\r\ndeleted\r\n:4\r\n*3\r\n$3\r\nset\r\n:5\r\n$1\r\n3\r\n")
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "5", "EPOCH", epoch) == header("replay", 5) + "*0\r\n", "up to date")
        let state = "*1\r\n*3\r\n$3\r\nset\r\n:5\r\n$1\r\n3\r\n"
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "1", "EPOCH", "other-data") == header("reset", 5) + state)
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "9", "EPOCH", epoch) == header("reset", 5) + state, "a revision from the future")
        for i in 0..<6 { _ = try exchange(channel, "SET", "other", "\(i)") }  // the 6-change history moves past revision 5
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "1", "EPOCH", epoch) == header("reset", 11) + state)
        #expect(try exchange(channel, "KVSYNC", "k", "SINCE", "1") == "-ERR SINCE and EPOCH go together\r\n")
    }
}

extension ConnectionHandlerTests {
    @Test("CLIENT NO-CONFLATE ON: a slow subscriber gets every change, or is cut off at the limit, never a conflated feed")
    func noConflate() throws {
        let store = makeStore()
        let subscriber = try makeChannel(store, outbox: OutputLimits(conflateBytes: 300, maxBytes: 100_000))
        #expect(try exchange(subscriber, "CLIENT", "NO-CONFLATE", "maybe").hasPrefix("-ERR unknown subcommand"))
        #expect(try exchange(subscriber, "CLIENT", "NO-CONFLATE", "ON") == "+OK\r\n")
        let small = try makeChannel(store, outbox: OutputLimits(conflateBytes: 300, maxBytes: 600))
        _ = try exchange(small, "CLIENT", "NO-CONFLATE", "ON")
        _ = try exchange(small, "SUBSCRIBE", "k")
        small.isWritable = false
        _ = try exchange(subscriber, "SUBSCRIBE", "k")
        subscriber.isWritable = false
        let writer = try makeChannel(store)
        for i in 0..<20 { _ = try exchange(writer, "SET", "k", "v\(i)") }
        subscriber.isWritable = true
        subscriber.pipeline.fireChannelWritabilityChanged()
        let pushes = try output(subscriber)
        #expect((0..<20).allSatisfy { pushes.contains("set:\($0 + 1):v\($0)") }, "every change, in order: \(pushes)")
        loop.run()
        #expect(!small.isActive, "past its limit, a connection that may not conflate is cut off")
    }
}

/// KVLIST (docs/protocol.md, "Listing keys"), bytes in and out.
extension ConnectionHandlerTests {
    @Test("KVLIST pages through the keys of a prefix in bytewise order, with the revision of each page; expired and other keys never appear")
    func kvlist() throws {
        let channel = try makeChannel(makeStore())
        for key in ["app/b", "app/a", "app/c/1", "ap", "apq", "b", "app/é", "app/Z"] { _ = try exchange(channel, "SET", key, "v-\(key)") }
        _ = try exchange(channel, "SET", "app/gone", "x", "PX", "5")
        clock.advance(milliseconds: 10)  // expired, and not yet removed by the timer
        #expect(try exchange(channel, "KVLIST", "app/", "LIMIT", "2")
            == "*3\r\n:9\r\n$5\r\napp/a\r\n*2\r\n$5\r\napp/Z\r\n$5\r\napp/a\r\n", "uppercase sorts first (bytewise)")
        #expect(try exchange(channel, "KVLIST", "app/", "AFTER", "app/a", "LIMIT", "2")
            == "*3\r\n:9\r\n$7\r\napp/c/1\r\n*2\r\n$5\r\napp/b\r\n$7\r\napp/c/1\r\n")
        // The last page: the expired key is skipped, é (0xC3 0xA9) sorts after ASCII, next is null.
        #expect(try exchange(channel, "KVLIST", "app/", "AFTER", "app/c/1", "LIMIT", "2")
            == "*3\r\n:9\r\n$-1\r\n*1\r\n$6\r\napp/é\r\n")
        #expect(try exchange(channel, "KVLIST", "app/c", "VALUES")
            == "*3\r\n:9\r\n$-1\r\n*1\r\n*4\r\n$7\r\napp/c/1\r\n$9\r\nv-app/c/1\r\n:3\r\n:-1\r\n")
        #expect(try exchange(channel, "KVLIST", "").hasPrefix("*3\r\n:9\r\n$-1\r\n*8\r\n$2\r\nap\r\n"), "the empty prefix: every key")
        #expect(try exchange(channel, "KVLIST", "zzz") == "*3\r\n:9\r\n$-1\r\n*0\r\n")
        #expect(try exchange(channel, "KVLIST", "app/", "LIMIT", "1001").hasPrefix("-ERR syntax error"))
        #expect(try exchange(channel, "KVLIST", "app/", "LIMIT", "0").hasPrefix("-ERR syntax error"))
        #expect(try exchange(channel, "KVLIST", "app/", "BOGUS").hasPrefix("-ERR syntax error"))
        #expect(try exchange(channel, "KVLIST") == "-ERR wrong number of arguments for 'kvlist' command\r\n")
    }

    @Test("KVLIST looks at no more than ten keys per key asked for: a page behind many expired keys comes back short, with where to go on")
    func kvlistBudget() throws {
        let channel = try makeChannel(makeStore())
        for i in 0..<30 { _ = try exchange(channel, "SET", "e\(100 + i)", "x", "PX", "5") }
        _ = try exchange(channel, "SET", "e999", "live")
        clock.advance(milliseconds: 10)
        // LIMIT 1: at most 10 keys looked at, all expired: an empty page that says where to go on.
        #expect(try exchange(channel, "KVLIST", "e", "LIMIT", "1") == "*3\r\n:31\r\n$4\r\ne109\r\n*0\r\n")
        // A full page whose last key is the prefix's last: next is null, no empty page follows.
        #expect(try exchange(channel, "KVLIST", "e", "AFTER", "e129", "LIMIT", "1") == "*3\r\n:31\r\n$-1\r\n*1\r\n$4\r\ne999\r\n")
    }
}
