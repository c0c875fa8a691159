import Foundation
import Testing

/// kv-stored driven with redis-cli, as an admin would.
@Suite("kv-stored with redis-cli")
struct KVStoredRedisCLITests {
    func cli(_ socket: String, _ args: String...) throws -> String {
        let result = try run("redis-cli", ["-s", socket] + args)
        #expect(result.status == 0, "redis-cli \(args) exited \(result.status): \(result.output)")
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("the commands of the subset answer as Redis does")
    func commands() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        let s = store.socketPath
        #expect(try cli(s, "ping") == "PONG")
        #expect(try cli(s, "echo", "hi") == "hi")
        #expect(try cli(s, "select", "0") == "OK")
        #expect(try cli(s, "select", "1").contains("out of range"))
        #expect(try cli(s, "set", "k", "{\"a\":1}") == "OK")
        #expect(try cli(s, "get", "k") == "{\"a\":1}")
        #expect(try cli(s, "set", "k", "v2", "get") == "{\"a\":1}")
        #expect(try cli(s, "set", "k", "v3", "nx") == "")
        #expect(try cli(s, "set", "other", "v", "xx") == "")
        #expect(try cli(s, "exists", "k", "other", "k") == "2")
        #expect(try cli(s, "pttl", "k") == "-1")
        #expect(try cli(s, "pttl", "missing") == "-2")
        #expect(try cli(s, "set", "k", "v4", "px", "60000") == "OK")
        let pttl = Int(try cli(s, "pttl", "k")) ?? 0
        #expect(pttl > 59_000 && pttl <= 60_000)
        #expect(try cli(s, "ttl", "k") == "60")
        #expect(try cli(s, "set", "k", "v5", "keepttl") == "OK")
        #expect((Int(try cli(s, "pttl", "k")) ?? 0) > 59_000)
        #expect(try cli(s, "persist", "k") == "1")
        #expect(try cli(s, "pttl", "k") == "-1")
        #expect(try cli(s, "dbsize") == "1")
        #expect(try cli(s, "del", "k", "missing") == "1")
        #expect(try cli(s, "dbsize") == "0")
        #expect(try cli(s, "set", "k", "v", "px", "0").contains("invalid expire time"))
        #expect(try cli(s, "set", "k", "v", "nx", "xx").contains("syntax error"))
        #expect(try cli(s, "get").contains("wrong number of arguments"))
        #expect(try cli(s, "flushall").contains("unknown command 'flushall'"))
        #expect(try cli(s, "client", "setname", "admin") == "OK")
        #expect(try cli(s, "config", "get", "appendonly").contains("no"))
        let info = try cli(s, "info")
        for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] { #expect(info.contains(section)) }
        #expect(info.contains("redis_version:"))
        #expect(try cli(s, "-3", "hello", "3").contains("kv-stored"))
        #expect(try cli(s, "quit") == "OK")
    }

    @Test("KVLIST pages through a prefix over redis-cli, and the order is rebuilt from the log after a restart")
    func listing() throws {
        let dir = try TempDirectory()
        let path = dir.file("s")
        var store: StoreProcess? = try StoreProcess(socketPath: path, arguments: ["--data-dir", dir.file("data")])
        for i in [3, 1, 2, 10] { #expect(try cli(path, "set", "user/\(i)", "{\"n\":\(i)}") == "OK") }
        #expect(try cli(path, "set", "users", "not under user/") == "OK")
        #expect(try cli(path, "kvlist", "user/", "limit", "2") == "5\nuser/10\nuser/1\nuser/10")
        store?.terminate()
        store = try StoreProcess(socketPath: path, arguments: ["--data-dir", dir.file("data")])
        #expect(try cli(path, "kvlist", "user/", "after", "user/10", "values") == "5\n\nuser/2\n{\"n\":2}\n3\n-1\nuser/3\n{\"n\":3}\n1\n-1")
        _ = store
    }

    @Test("CONFIG GET answers what kv-stored does: appendonly is yes with the log on, no without it")
    func configMatchesPersistence() throws {
        let dir = try TempDirectory()
        let logged = try StoreProcess(socketPath: dir.file("a"), arguments: ["--data-dir", dir.file("data")])
        #expect(try cli(logged.socketPath, "config", "get", "appendonly") == "appendonly\nyes")
        let memory = try StoreProcess(socketPath: dir.file("b"))
        #expect(try cli(memory.socketPath, "config", "get", "appendonly") == "appendonly\nno")
        #expect(try cli(memory.socketPath, "config", "get", "maxmemory-policy") == "maxmemory-policy\nnoeviction")
    }

    @Test("keys expire actively, and redis-benchmark runs against kv-stored unchanged")
    func expiryAndBenchmark() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        #expect(try cli(store.socketPath, "set", "t", "1", "px", "50") == "OK")
        #expect(try eventually { try cli(store.socketPath, "info", "stats").contains("expired_keys:1") })
        #expect(try cli(store.socketPath, "dbsize") == "0")

        let bench = try run("redis-benchmark", ["-s", store.socketPath, "-t", "set,get", "-n", "2000", "-c", "4", "-q"])
        #expect(bench.status == 0, "\(bench.output)")
        #expect(bench.output.contains("SET:") && bench.output.contains("GET:"))
    }

    @Test("SUBSCRIBE delivers every set, delete and expiry of a key, in revision order")
    func changeFeed() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        let (subscriber, out) = try Self.subscriber(store, "subscribe", "watched")
        defer { subscriber.terminate() }
        #expect(try eventually { try cli(store.socketPath, "info", "stats").contains("pubsub_subscriptions:1") })
        _ = try cli(store.socketPath, "set", "watched", "a")
        _ = try cli(store.socketPath, "set", "other", "x")
        _ = try cli(store.socketPath, "set", "watched", "a")
        _ = try cli(store.socketPath, "del", "watched")
        _ = try cli(store.socketPath, "del", "watched")  // not a change
        _ = try cli(store.socketPath, "set", "watched", "b", "px", "20")
        let (done, text) = Self.read(out, until: "expired:")
        #expect(done, "got: \(text)")
        let payloads = text.split(separator: "\n").filter { $0.contains(":") }
        #expect(payloads == ["set:1:a", "set:3:a", "deleted:4", "set:5:b", "expired:6"])
    }

    @Test("redis-cli PSUBSCRIBE with a prefix pattern gets a pmessage for every change of every key under the prefix")
    func prefixChangeFeed() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        let (subscriber, out) = try Self.subscriber(store, "psubscribe", "app/*")
        defer { subscriber.terminate() }
        #expect(try eventually { try cli(store.socketPath, "info", "stats").contains("pubsub_pattern_subscriptions:1") })
        _ = try cli(store.socketPath, "set", "app/a", "1")
        _ = try cli(store.socketPath, "set", "apple", "x")
        _ = try cli(store.socketPath, "del", "app/a")
        _ = try cli(store.socketPath, "set", "app/b/c", "2", "px", "20")
        let (done, text) = Self.read(out, until: "expired:")
        #expect(done, "got: \(text)")
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0 == "pmessage" }.count == 4, "\(lines)")
        #expect(lines.filter { $0.contains(":") } == ["set:1:1", "deleted:3", "set:4:2", "expired:5"], "\(lines)")
        #expect(!lines.contains("apple"))
        #expect(try cli(store.socketPath, "psubscribe", "a?c*").contains("prefix patterns only"))
    }

    @Test("redis-cli --scan walks every key, or those a pattern matches, with kv-stored's numeric cursors")
    func scan() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        var piped = ""
        for i in 0..<2500 { piped += "SET user:\(i):name n\(i)\nSET session:\(i) s\n" }
        let load = try run("/usr/bin/env", ["redis-cli", "-s", store.socketPath], input: Data(piped.utf8))
        #expect(load.status == 0)
        let all = try run("/usr/bin/env", ["redis-cli", "-s", store.socketPath, "--scan"])
        #expect(Set(all.output.split(separator: "\n")).count == 5000, "every key once")
        let users = try run("/usr/bin/env", ["redis-cli", "-s", store.socketPath, "--scan", "--pattern", "user:1*:name"])
        let expected = Set((0..<2500).map { "user:\($0):name" }.filter { $0.hasPrefix("user:1") })
        #expect(Set(users.output.split(separator: "\n").map(String.init)) == expected)
    }

    /// A `redis-cli` left running with `arguments` (a subscription), and its output.
    static func subscriber(_ store: StoreProcess, _ arguments: String...) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["redis-cli", "-s", store.socketPath] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        return (process, out)
    }

    /// What `out` has printed once it contains `marker` (or the wait gave up: false).
    static func read(_ out: Pipe, until marker: String) -> (Bool, String) {
        var text = ""
        let done = eventually {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
            return text.contains(marker)
        }
        return (done, text)
    }
}
