import Foundation
import KVClient
import KVCore
import RESP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What is particular to a Redis store (docs/scaling.md), through the real nginx, kv-fcgi and
/// kv-ws on a real redis-server: the key layout, the change events on sharded channels, what
/// a resume and an expiry become without kv-stored's history, and outages. (docs/api.md's behaviour
/// itself is checked by the HTTP and WebSocket suites, which run on redis-server as well.)
@Suite("KvServer on a redis-server store", .serialized)
struct RedisStoreTests {
    static func member(_ message: String, _ name: String) -> String? { VersionedWebSocketTests.member(message, name) }
    static func rev(_ message: String) -> UInt64? { VersionedWebSocketTests.rev(message) }

    /// An exact and a seed subscriber of `key`, both subscribed once this returns.
    static func subscribers(_ stack: HTTPStack, _ key: String) async throws -> (exact: TestWebSocket, seed: TestWebSocket) {
        let exact = try await TestWebSocket.connect(stack.webSocketURL)
        let seed = try await TestWebSocket.connect(stack.webSocketURL)
        try await exact.send(#"{"type":"subscribe","id":1,"payload":{"key":"\#(key)"}}"#)
        _ = try await exact.next()  // the ok
        try await seed.send(#"{"type":"subscribe","payload":{"key":"\#(key)"}}"#)
        try await seed.send(#"{"type":"get","payload":{"key":"\#(key)"}}"#)
        _ = try await seed.next()  // the get's answer: the subscription is in force
        return (exact, seed)
    }

    @Test("a key is a hash in its group's slot, braces and all; its revisions keep growing across deletions")
    func layout() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        for key in ["{k} x", "}{", "{}", "plain"] {
            let path = "/storage/" + key.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            #expect(try http.send("POST", path, json: #"{"value":"braces"}"#).status == 202)
            #expect(try http.send("GET", path).text == #"{"value":"braces"}"#)
            #expect(try stack.storeCLI("hget", stack.storeKey(key), "v") == #""braces""#, "\(key) is the hash \(stack.storeKey(key))")
        }
        let first = try #require(try http.send("GET", "/storage/plain").headers["etag"])
        #expect(try http.send("DELETE", "/storage/plain").status == 200)
        #expect(try http.send("POST", "/storage/plain", json: #"{"value":2}"#).status == 202)
        let again = try #require(try http.send("GET", "/storage/plain").headers["etag"])
        #expect(again != first, "a re-created key gets a new revision, so an old If-Match cannot match it")
        #expect(try http.send("POST", "/storage/plain", body: Array(#"{"value":3}"#.utf8), headers: ["If-Match": first]).status == 412)
    }

    @Test("each write publishes kv-stored's change payload on the key's sharded channel, in the same step")
    func changeEvents() throws {
        let stack = try HTTPStack(redis: true)
        let http = stack.client()
        let channel = stack.storeKey("k")
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        listener.arguments = ["-s", stack.redisSocket, "--csv", "ssubscribe", channel]
        let output = Pipe()
        listener.standardOutput = output
        try listener.run()
        // SIGKILL: children of the test process inherit its blocked SIGTERM.
        defer { if listener.isRunning { kill(listener.processIdentifier, SIGKILL) } }
        #expect(eventually { (try? stack.storeCLI("pubsub", "shardnumsub", channel).hasSuffix("1")) == true })
        #expect(try http.send("POST", "/storage/k", json: #"{"value":{"x":1}}"#).status == 202)
        #expect(try http.send("DELETE", "/storage/k").status == 200)
        // Read until both messages are in (killing the listener at once raced its output); the
        // kill after 20 s ends the reading if they never come.
        let deadline = DispatchWorkItem { [listener] in if listener.isRunning { kill(listener.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: deadline)
        defer { deadline.cancel() }
        var text = ""
        while !text.contains("deleted:2") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        kill(listener.processIdentifier, SIGKILL)
        listener.waitUntilExit()
        #expect(text.contains(#""smessage","\#(channel)","set:1:{\"x\":1}""#) && text.contains(#""smessage","\#(channel)","deleted:2""#), "\(text)")
    }

    @Test("a resume with since is live when the key has not changed, else a reset with its state; Redis has no history to replay")
    func resume() async throws {
        let stack = try HTTPStack(wsArguments: [], redis: true)
        let http = stack.client()
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"subscribe","id":"s","payload":{"key":"k"}}"#)
        let epoch = try #require(Self.member(try await ws.next(), "epoch"))
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        let seen = try #require(Self.rev(try await ws.next()))
        try await ws.send(#"{"type":"unsubscribe","payload":{"key":"k"}}"#)

        try await ws.send(#"{"type":"subscribe","id":"same","payload":{"key":"k","since":\#(seen),"epoch":\#(epoch)}}"#)
        let live = try await ws.next()
        #expect(Self.member(live, "type") == #""ok""# && Self.rev(live) == seen, "\(live)")
        try await ws.send(#"{"type":"unsubscribe","payload":{"key":"k"}}"#)

        for i in 0..<5 { #expect(try http.send("POST", "/storage/k", json: #"{"value":\#(i)}"#).status == 202) }
        try await ws.send(#"{"type":"subscribe","payload":{"key":"k","since":\#(seen),"epoch":\#(epoch)}}"#)
        #expect(try await ws.next() == #"{"type":"value","rev":\#(seen + 5),"reset":true,"payload":{"key":"k","value":4}}"#)
        try await ws.send(#"{"type":"subscribe","payload":{"key":"gone","since":1,"epoch":"another-data-set"}}"#)
        let gone = try await ws.next()
        #expect(Self.member(gone, "type") == #""no-value""# && Self.member(gone, "reset") == "true", "\(gone)")
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(ws.pending.isEmpty, "nothing more: \(ws.pending)")
        await ws.close()
    }

    @Test("Redis's expiry reaches seed and exact subscribers (without a rev: it takes none); the next write's rev is higher")
    func expiry() async throws {
        let stack = try HTTPStack(wsArguments: [], redis: true)
        let http = stack.client()
        let (exact, seed) = try await Self.subscribers(stack, "brief")
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":1,"ttl":200}"#).status == 202)
        let set = try await exact.next()
        let written = try #require(Self.rev(set))
        #expect(try await seed.next() == WebSocketAPITests.value("brief", "1"))
        #expect(try await exact.next(within: 10) == #"{"type":"no-value","expired":true,"payload":{"key":"brief"}}"#, "the expiry, without a rev")
        #expect(try await seed.next(within: 10) == WebSocketAPITests.noValue("brief"))
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":2}"#).status == 202)
        let next = try await exact.next()
        #expect((Self.rev(next) ?? 0) > written, "\(next)")
        await exact.close()
        await seed.close()
    }

    @Test("when redis-server restarts empty, seed subscribers are told of the gap and exact ones are reset; both then see live changes")
    func restart() async throws {
        let stack = try HTTPStack(wsArguments: [], redis: true)
        let http = stack.client()
        let (exact, seed) = try await Self.subscribers(stack, "k")
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        _ = try await exact.next()
        _ = try await seed.next()
        stack.stopRedis()
        #expect(try await exact.next(within: 10).contains("may be missed until it returns"))
        #expect(try await seed.next(within: 10).contains("may be missed until it returns"))
        try stack.startRedis()
        #expect(try await seed.next(within: 20).contains("may have been missed"))
        // The data is gone (memory only) and with it the group's epoch: the exact subscriber
        // gets the state, absent, as a reset.
        let reset = try await exact.next(within: 20)
        #expect(Self.member(reset, "type") == #""no-value""# && Self.member(reset, "reset") == "true", "\(reset)")
        #expect(eventually { (try? http.send("POST", "/storage/k", json: #"{"value":2}"#).status) == 202 })
        #expect(try await seed.next(within: 10) == WebSocketAPITests.value("k", "2"))
        #expect(Self.member(try await exact.next(within: 10), "payload") == #"{"key":"k","value":2}"#)
        await exact.close()
        await seed.close()
    }

    @Test("a server with a password (KV_STORE_PASSWORD): HTTP and WebSocket log in; a wrong password is a clear error, not an outage")
    func password() async throws {
        let stack = try HTTPStack(wsArguments: [], on: .redis, redisPassword: "s3cret pass")
        let http = stack.client()
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        try await ws.send(#"{"type":"subscribe","payload":{"key":"k"}}"#)
        try await ws.send(#"{"type":"get","payload":{"key":"k"}}"#)
        #expect(try await ws.next() == WebSocketAPITests.noValue("k"))
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        #expect(try await ws.next() == WebSocketAPITests.value("k", "1"))
        #expect(try stack.storedValue("k") == "1")
        await ws.close()

        stack.fcgi?.terminate()
        stack.frontEndEnvironment[StoreCredentials.passwordVariable] = "wrong"
        try stack.startFCGI()
        let refused = try http.send("GET", "/storage/k")
        #expect(refused.status == 500 && refused.text.contains("refused the login"), "\(refused)")
        #expect(stack.fcgi?.log.contains("refused the login") == true)
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
