import Foundation
import KVClient
import KVCore
import RESP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP API with a redis-server as the store (`kv-fcgi --store redis+unix://…`), through
/// the real nginx: API.md's behaviour and the versioned HTTP (docs/http.md) on the Redis
/// functions (`RedisFunctions`) instead of kv-stored.
@Suite("HTTP API on a redis-server store", .serialized)
struct RedisStoreHTTPTests {
    func redisCLI(_ stack: HTTPStack, _ args: String...) throws -> String {
        try run("redis-cli", ["-s", stack.redisSocket] + args).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("values round-trip exactly; 204 for a missing key; DELETE always 200; bad bodies are 400 and store nothing")
    func roundTrips() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        let values = ["123456789012345678901234567890", "1.0", "null", #""h\u00e9 \"q\" 😀""#, #"{"a":[1,2,{"b":null}]}"#, "[]"]
        for (i, value) in values.enumerated() {
            #expect(try http.send("POST", "/storage/v\(i)", json: "{\"value\": \(value)}").status == 202)
            let get = try http.send("GET", "/storage/v\(i)")
            #expect(get.status == 200 && get.text == "{\"value\":\(value)}", "\(get)")
        }
        #expect(try http.send("GET", "/storage/missing").status == 204)
        #expect(try http.send("DELETE", "/storage/missing").status == 200)
        #expect(try http.send("DELETE", "/storage/v0").status == 200)
        #expect(try http.send("GET", "/storage/v0").status == 204)
        #expect(try http.send("POST", "/storage/bad", json: #"{"value":1,"ttl":"1 parsec"}"#).status == 400)
        #expect(try redisCLI(stack, "exists", "kv:bad") == "0")
        // Keys of any content, braces and spaces included, are keys of their own.
        #expect(try http.send("POST", "/storage/%7Bk%7D%20x", json: #"{"value":"braces"}"#).status == 202)
        #expect(try http.send("GET", "/storage/%7Bk%7D%20x").text == #"{"value":"braces"}"#)
        #expect(try redisCLI(stack, "hget", "kv:{k} x", "v") == #""braces""#)
    }

    @Test("TTLs expire and show in KV-Expires-At; a plain write clears the TTL")
    func ttl() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":1,"ttl":100}"#).status == 202)
        #expect(try http.send("GET", "/storage/brief").headers["kv-expires-at"] != nil)
        #expect(eventually { (try? http.send("GET", "/storage/brief"))?.status == 204 })
        #expect(try http.send("POST", "/storage/kept", json: #"{"value":1,"ttl":"1h"}"#).status == 202)
        #expect(try http.send("POST", "/storage/kept", json: #"{"value":2}"#).status == 202)
        #expect(try http.send("GET", "/storage/kept").headers["kv-expires-at"] == nil)
        #expect(try redisCLI(stack, "pttl", "kv:kept") == "-1")
    }

    @Test("ETags, If-None-Match 304, and two writers racing with If-Match: exactly one wins")
    func versions() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        let created = try http.send("POST", "/storage/k", body: Array(#"{"value":0}"#.utf8), headers: ["If-None-Match": "*"])
        let etag = try #require(created.headers["etag"], "\(created)")
        #expect(try http.send("POST", "/storage/k", body: Array(#"{"value":1}"#.utf8), headers: ["If-None-Match": "*"]).status == 412)
        #expect(try http.send("GET", "/storage/k", headers: ["If-None-Match": etag]).status == 304)
        for round in 0..<10 {
            let current = try #require(try http.send("GET", "/storage/k").headers["etag"])
            let a = try http.start("POST", Array("/storage/k".utf8), body: Array(#"{"value":"a\#(round)"}"#.utf8), headers: ["If-Match": current])
            let b = try http.start("POST", Array("/storage/k".utf8), body: Array(#"{"value":"b\#(round)"}"#.utf8), headers: ["If-Match": current])
            let statuses = [try a.finish().status, try b.finish().status].sorted()
            #expect(statuses == [202, 412], "round \(round): \(statuses)")
        }
        let stale = try http.send("DELETE", "/storage/k", headers: ["If-Match": etag])
        #expect(stale.status == 412 && stale.headers["etag"] != nil)
    }

    @Test("each write publishes kv-stored's change payload on the key's channel, in the same step")
    func changeEvents() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        listener.arguments = ["-s", stack.redisSocket, "--csv", "subscribe", "k"]
        let output = Pipe()
        listener.standardOutput = output
        try listener.run()
        // SIGKILL: children of the test process inherit its blocked SIGTERM.
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGKILL) } }
        #expect(eventually { (try? run("redis-cli", ["-s", stack.redisSocket, "pubsub", "numsub", "k"]).output.contains("1")) == true })
        #expect(try http.send("POST", "/storage/k", json: #"{"value":{"x":1}}"#).status == 202)
        #expect(try http.send("DELETE", "/storage/k").status == 200)
        kill(listener.processIdentifier, SIGKILL)
        listener.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains(#""message","k","set:1:{\"x\":1}""#) && text.contains(#""message","k","deleted:2""#), "\(text)")
    }

    @Test("503 with a JSON error while redis-server is down; back by itself when it returns; /readyz follows")
    func outage() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        #expect(try http.send("GET", "/readyz").status == 200)
        stack.stopRedis()
        let down = try http.send("GET", "/storage/k")
        #expect(down.status == 503 && down.text.contains("redis"), "\(down)")
        #expect(try http.send("GET", "/readyz").status == 503)
        #expect(try http.send("GET", "/metrics/kv-stored").status == 404, "there is no kv-stored to scrape")
        try stack.startRedis()
        #expect(eventually { (try? http.send("POST", "/storage/k", json: #"{"value":2}"#))?.status == 202 }, "the functions are loaded again on reconnection")
        #expect(try http.send("GET", "/storage/k").text == #"{"value":2}"#)
    }

    @Test("kv-fcgi's client reaches redis over TCP too (redis://127.0.0.1:PORT), with the same replies")
    func tcp() throws {
        let dir = try TempDirectory()
        let port = try freeLoopbackPort()
        let server = try DaemonProcess("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                       logPath: dir.file("redis.log"))
        defer {
            _ = try? run("redis-cli", ["-p", String(port), "shutdown", "nosave"])
            _ = server.terminate(limit: 5)
        }
        let client = BlockingStoreClient(address: try StoreAddress.parse("redis://127.0.0.1:\(port)"), limits: RESPLimits(maxBulkBytes: 1 << 20))
        #expect(eventually { (try? client.ping()) != nil }, "\(server.log)")
        #expect(try client.set(Array("k".utf8), value: Array("[1]".utf8), ttl: try TTL(milliseconds: 60_000), precondition: .absent) == .applied(revision: 1))
        let read = try #require(try client.versionedGet(Array("k".utf8)))
        #expect(read.value == Array("[1]".utf8) && read.revision == 1 && (read.ttlMilliseconds ?? 0) > 59_000)
        #expect(try client.set(Array("k".utf8), value: Array("2".utf8), ttl: nil, precondition: .revision(in: [7])) == .conflict(current: 1))
        #expect(try client.delete(Array("k".utf8), precondition: .exists) == .applied(revision: 2))
        #expect(try client.delete(Array("k".utf8), precondition: .none) == .applied(revision: 2), "nothing to delete: the store's revision")
    }
}
