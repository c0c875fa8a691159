import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every HTTP rule of docs/api.md, through the real nginx and kv-fcgi, on kv-stored and (the tests
/// with `StoreKind` arguments) again on a redis-server.
@Suite("HTTP API through nginx")
struct HTTPAPITests {
    @Test("each JSON type round-trips exactly; HEAD, 204 and DELETE behave as documented", arguments: StoreKind.allCases)
    func roundTrips(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        let values = [
            "123456789012345678901234567890", "1.0", "1", "-0.5e-7", "true", "false", "null", #""h\u00e9 \"q\" \n 😀""#,
            #"{"a":[1,2,{"b":null}],"c":{}}"#, "[]", #""""#,
        ]
        for (i, value) in values.enumerated() {
            let post = try http.send("POST", "/storage/v\(i)", json: "{ \"value\" : \(value) , \"unknown\": [1] }")
            #expect(post.status == 202, "\(post)")
            let get = try http.send("GET", "/storage/v\(i)")
            #expect(get.status == 200)
            #expect(get.headers["content-type"] == "application/json")
            #expect(get.text == "{\"value\":\(value)}")
            let head = try http.send("HEAD", "/storage/v\(i)")
            #expect(head.status == 200 && head.body.isEmpty)
        }
        // Whitespace outside strings is dropped; inside strings it is kept.
        _ = try http.send("POST", "/storage/ws", json: "{\"value\": { \"a b\" : [ 1 ,\n 2 ] } }")
        #expect(try http.send("GET", "/storage/ws").text == #"{"value":{"a b":[1,2]}}"#)

        let missing = try http.send("GET", "/storage/missing")
        #expect(missing.status == 204 && missing.body.isEmpty)
        #expect(try http.send("DELETE", "/storage/missing").status == 200)
        #expect(try http.send("DELETE", "/storage/v0").status == 200)
        #expect(try http.send("GET", "/storage/v0").status == 204)
        #expect(try http.send("GET", "/storage/v1?ignored=1").text == #"{"value":1.0}"#)
    }

    @Test("bad bodies and bad TTLs are 400 with a JSON error, and nothing is stored", arguments: StoreKind.allCases)
    func badRequests(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        let bodies = [
            "", "not json", "[1]", #"{"ttl":1}"#, #"{"value":1,}"#, #"{"value":NaN}"#, #"{"value":"\ud800"}"#,
            #"{"value":1,"ttl":0}"#, #"{"value":1,"ttl":-1}"#, #"{"value":1,"ttl":"10 parsecs"}"#, #"{"value":1,"ttl":"1h,,2m"}"#,
            #"{"value":1,"ttl":true}"#, #"{"value":1,"ttl":"101y"}"#, #"{"value":1} trailing"#,
            String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
        ]
        for body in bodies {
            let response = try http.send("POST", "/storage/k", json: body)
            #expect(response.status == 400, "\(body.prefix(40)) → \(response)")
            #expect(response.headers["content-type"] == "application/json")
            #expect(response.text.hasPrefix(#"{"error":""#))
        }
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1,"ttl":"10 parsecs"}"#).text.contains(#"unknown unit \"parsecs\""#))
        #expect(try stack.storeCLI("dbsize") == "0")
    }

    @Test("TTL numbers and strings expire; a plain write clears the TTL", arguments: StoreKind.allCases)
    func ttl(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/n", json: #"{"value":1,"ttl":150}"#).status == 202)
        #expect(try http.send("POST", "/storage/s", json: #"{"value":2,"ttl":"0.2s"}"#).status == 202)
        #expect(try http.send("GET", "/storage/n").status == 200)
        #expect(eventually { (try? http.send("GET", "/storage/n").status) == 204 })
        #expect(eventually { (try? http.send("GET", "/storage/s").status) == 204 })

        #expect(try http.send("POST", "/storage/c", json: #"{"value":1,"ttl":"10 hours 1m 5s"}"#).status == 202)
        let pttl = Int(try stack.storeCLI("pttl", stack.storeKey("c"))) ?? 0
        #expect(pttl > 36_000_000 && pttl <= 36_065_000)
        #expect(try http.send("POST", "/storage/c", json: #"{"value":2}"#).status == 202)
        #expect(try stack.storeCLI("pttl", stack.storeKey("c")) == "-1")
        #expect(try http.send("POST", "/storage/c", json: #"{"value":3,"ttl":null}"#).status == 202)
        #expect(try stack.storeCLI("pttl", stack.storeKey("c")) == "-1")
    }

    @Test("unusual keys: the raw path after /storage/, decoded once, shared with the store's key space", arguments: StoreKind.allCases)
    func keys(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        let cases: [(target: String, key: String)] = [
            ("/storage/a%2Fb", "a/b"), ("/storage/%2541", "%41"), ("/storage/with%20space", "with space"),
            ("/storage/%D0%BA%D0%BB%D1%8E%D1%87", "ключ"), ("/storage/x..y/.z", "x..y/.z"), ("/storage//lead", "/lead"),
            ("/storage/q%3Fmark?query=1", "q?mark"), ("/storage/plus+sign", "plus+sign"),
        ]
        for (i, c) in cases.enumerated() {
            #expect(try http.send("POST", c.target, json: "{\"value\":\(i)}").status == 202, "\(c.target)")
            #expect(try stack.storedValue(c.key) == String(i), "\(c.target) should be the key \(c.key)")
        }
        // Raw '/' and '%2F' name the same key; '%2541' is not '%41'.
        #expect(try http.send("GET", "/storage/a/b").text == #"{"value":0}"#)
        #expect(try http.send("GET", "/storage/%41").status == 204)
        // Raw UTF-8 bytes in the request line work like their percent-encoding.
        #expect(try http.send("GET", Array("/storage/ключ".utf8)).text == #"{"value":3}"#)

        let long = String(repeating: "k", count: 32 << 10)
        #expect(try http.send("POST", "/storage/" + long, json: #"{"value":"long"}"#).status == 202)
        #expect(try http.send("GET", "/storage/" + long).text == #"{"value":"long"}"#)

        for bad in ["/storage/", "/storage/%FF", "/storage/%C3%28", "/storage/%zz", "/storage/?only=query"] {
            let response = try http.send("GET", bad)
            #expect(response.status == 400, "\(bad) → \(response)")
        }
        #expect(try http.send("GET", [UInt8]("/storage/".utf8) + [0xFF]).status == 400)
    }

    @Test("an 8 MiB value round-trips; 405 with Allow; 413 over the limits", arguments: StoreKind.allCases)
    func sizesAndMethods(store: StoreKind) throws {
        let stack = try HTTPStack(fcgiArguments: ["--max-key-bytes", "40000", "--max-value-bytes", String(9 << 20)], on: store)
        let http = stack.client()
        let big = "\"" + String(repeating: "0123456789abcdef", count: (8 << 20) / 16) + "\""
        #expect(try http.send("POST", "/storage/big", json: "{\"value\":\(big)}").status == 202)
        let get = try http.send("GET", "/storage/big")
        #expect(get.status == 200)
        #expect(get.body.count == big.utf8.count + 10)
        #expect(get.text.hasSuffix("cdef\"}"))

        for method in ["PUT", "PATCH", "OPTIONS"] {
            let response = try http.send(method, "/storage/big")
            #expect(response.status == 405)
            #expect(response.headers["allow"] == "GET, HEAD, POST, DELETE")
        }
        // Over kv-fcgi's value limit.
        let tooBig = "\"" + String(repeating: "x", count: 10 << 20) + "\""
        let refused = try http.send("POST", "/storage/tooBig", json: "{\"value\":\(tooBig)}")
        #expect(refused.status == 413, "\(refused)")
        // Over kv-fcgi's key limit, and over what nginx accepts in a request line.
        #expect(try http.send("GET", "/storage/" + String(repeating: "k", count: 40_001)).status == 413)
        let overNginx = try http.send("GET", "/storage/" + String(repeating: "k", count: 70_000))
        #expect(overNginx.status == 413)
        #expect(overNginx.text.contains("larger than the configured limit"))
        #expect(try http.send("GET", "/storage/tooBig").status == 204)
    }

    @Test("503 with a JSON error while kv-stored is down, and recovery without a restart when it returns")
    func storageDown() throws {
        let stack = try HTTPStack()
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        stack.store?.terminate()
        stack.store = nil
        for method in ["GET", "POST", "DELETE"] {
            let start = Date()
            let response = try http.send(method, "/storage/k", json: #"{"value":2}"#)
            #expect(response.status == 503, "\(response)")
            #expect(response.text.contains("storage unavailable"))
            #expect(Date().timeIntervalSince(start) < 5, "503 must come at once, not after a timeout")
        }
        try stack.restartStore()
        #expect(eventually(within: 10) { (try? http.send("POST", "/storage/k", json: #"{"value":3}"#).status) == 202 })
        #expect(eventually(within: 10) { (try? http.send("GET", "/storage/k").text) == #"{"value":3}"# })
    }

    @Test("nginx names the daemon that is down: kv-fcgi for the HTTP API, kv-ws for /ws")
    func frontEndDown() throws {
        let stack = try HTTPStack()   // no kv-ws running
        let http = stack.client()
        let ws = try http.send("GET", "/ws")
        #expect(ws.status == 503 && ws.text.contains("the WebSocket API (kv-ws) is unavailable"), "\(ws)")
        stack.fcgi?.terminate()
        stack.fcgi = nil
        let storage = try http.send("GET", "/storage/k")
        #expect(storage.status == 503 && storage.text.contains("the HTTP API (kv-fcgi) is unavailable"), "\(storage)")
    }

    @Test("8× more concurrent requests than kv-fcgi threads all complete; concurrent writers leave one of their values", arguments: StoreKind.allCases)
    func concurrency(store: StoreKind) throws {
        let stack = try HTTPStack(fcgiThreads: 4, on: store)
        let http = stack.client()
        let value = "\"" + String(repeating: "v", count: 256 << 10) + "\""
        let writes = try (0..<32).map { i in try http.start("POST", "/storage/c\(i)", json: "{\"value\":\(value)}") }
        for pending in writes { #expect(try pending.finish().status == 202) }
        let reads = try (0..<32).map { i in try http.start("GET", Array("/storage/c\(i)".utf8)) }
        for pending in reads {
            let response = try pending.finish()
            #expect(response.status == 200 && response.body.count == value.utf8.count + 10)
        }
        let writers = try (0..<24).map { i in try http.start("POST", "/storage/same", json: "{\"value\":\(i)}") }
        for pending in writers { #expect(try pending.finish().status == 202) }
        let final = try http.send("GET", "/storage/same").text
        #expect((0..<24).map { "{\"value\":\($0)}" }.contains(final))
    }

    @Test("1,000 requests at once (250× kv-fcgi's 4 threads), twice over kept-alive FastCGI connections: every one completes with its own answer", arguments: StoreKind.allCases)
    func thousandConnections(store: StoreKind) throws {
        let stack = try HTTPStack(fcgiThreads: 4, on: store)
        let http = stack.client()
        let count = 1000
        // The first round makes nginx open many FastCGI connections and keep 64 per worker once
        // idle: far more than kv-fcgi's threads. A server that gave each kept connection a thread
        // would then leave the second round waiting for threads held by idle connections.
        for round in 0..<2 {
            let writes = try (0..<count).map { i in try http.start("POST", "/storage/many\(i)", json: "{\"value\":\(round * count + i)}") }
            let written = try writes.filter { try $0.finish().status == 202 }.count
            #expect(written == count, "round \(round): \(written) of \(count) writes answered 202")
            let reads = try (0..<count).map { i in try http.start("GET", Array("/storage/many\(i)".utf8)) }
            var read = 0
            for (i, pending) in reads.enumerated() where try pending.finish().text == "{\"value\":\(round * count + i)}" { read += 1 }
            #expect(read == count, "round \(round): \(read) of \(count) reads gave the value written")
        }
        #expect(try http.send("GET", "/healthz").status == 200)
    }

    @Test("FastCGI connections are reused; a body kv-fcgi leaves unread is skipped (small) or its connection closed (large), never read as the next request")
    func keptConnections() throws {
        let stack = try HTTPStack(fcgiThreads: 2)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/kept", json: #"{"value":"kept"}"#).status == 202)
        func accepted() throws -> Double {
            let exposition = try http.send("GET", "/metrics/kv-fcgi").text
            return try #require(metric("kv_fcgi_connections_accepted_total", in: exposition), "\(exposition.prefix(2000))")
        }
        // POST /healthz is refused (405) before its body is read: kv-fcgi must skip that body to
        // find the next request's records on the same connection. 30 KB is more than libfcgi's
        // 8 KiB read buffer takes in with the request's head.
        let before = try accepted()
        for _ in 0..<20 {
            #expect(try http.send("POST", "/healthz", body: [UInt8](repeating: 120, count: 30_000)).status == 405)
            #expect(try http.send("GET", "/storage/kept").text == #"{"value":"kept"}"#)
        }
        // 40 requests and more, each nginx worker reusing its connections: at most one new each.
        #expect(try accepted() - before <= 2, "connections were not kept")
        let large = try accepted()
        for _ in 0..<10 {
            #expect(try http.send("POST", "/healthz", body: [UInt8](repeating: 120, count: 100_000)).status == 405)
            #expect(try http.send("GET", "/storage/kept").text == #"{"value":"kept"}"#)
        }
        // Past 64 KiB unread, the connection is closed instead: the next request of that nginx
        // worker needs a new one (at most one closed connection per worker is not yet replaced).
        let after = try accepted()
        #expect(after - large >= 8, "\(large) → \(after)")
    }

    @Test("kv-fcgi stops promptly and cleanly on SIGTERM, and nginx answers 503 meanwhile", arguments: StoreKind.allCases)
    func fcgiStops(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        let stopped = try #require(stack.fcgi).terminate()
        #expect(stopped.status == 0, "\(stack.fcgi?.log ?? "")")
        #expect(stopped.seconds < 2, "took \(stopped.seconds) s")
        #expect(!FileManager.default.fileExists(atPath: stack.fcgiSocket))
        #expect(stack.fcgi?.log.contains("kv-fcgi stopped") == true)
        let down = try http.send("GET", "/storage/k")
        #expect(down.status == 503 && down.text.contains("kv-fcgi"))
        try stack.startFCGI()
        #expect(try http.send("GET", "/storage/k").text == #"{"value":1}"#)
    }

    @Test("a worker waiting on a stalled kv-stored lets another take requests: /healthz answers while the write still waits")
    func stalledStoreStepsAside() throws {
        // One thread taking requests at a time: without stepping aside, /healthz would wait for
        // the write's store call to time out (5 s), and the write would be answered first.
        let stack = try HTTPStack(fcgiThreads: 4, fcgiArguments: ["--active-threads", "1"])
        let http = stack.client()
        let store = try #require(stack.store)
        let fcgi = try #require(stack.fcgi)
        kill(store.process.processIdentifier, SIGSTOP)
        defer { kill(store.process.processIdentifier, SIGCONT) }
        let pending = try http.start("POST", "/storage/stalled", json: #"{"value":"late"}"#)
        #expect(eventually { fcgi.log.contains("request received") && fcgi.log.contains("kv.op=POST") }, "the write never reached kv-fcgi")
        #expect(try http.send("GET", "/healthz").status == 200)
        var waiting = pollfd(fd: pending.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&waiting, 1, 0) == 0, "the write was answered before /healthz: the worker did not step aside")
        kill(store.process.processIdentifier, SIGCONT)
        #expect(try pending.finish().status == 202)
    }

    @Test("a worker reading a large body lets another take requests: /healthz answers while the body is still coming")
    func largeBodyStepsAside() throws {
        let stack = try HTTPStack(fcgiThreads: 4, fcgiArguments: ["--active-threads", "1"])
        // Straight on kv-fcgi's socket, as nginx would, but stopping half way through a 2 MiB body
        // (nginx never does): the worker reading it steps aside before it starts.
        let writer = try FastCGIPeer(socket: stack.fcgiSocket)
        defer { writer.close() }
        let body = Array(#"{"value":""#.utf8) + [UInt8](repeating: 120, count: 2 << 20) + Array(#""}"#.utf8)
        try writer.begin(["REQUEST_METHOD": "POST", "REQUEST_URI": "/storage/large", "KV_ENDPOINT": "storage", "CONTENT_LENGTH": String(body.count)])
        try writer.stdin(Array(body[..<(1 << 20)]))
        let probe = try FastCGIPeer(socket: stack.fcgiSocket)
        defer { probe.close() }
        try probe.begin(["REQUEST_METHOD": "GET", "REQUEST_URI": "/healthz", "KV_ENDPOINT": "healthz"])
        try probe.stdin([])
        #expect(try probe.response().contains(#"{"status":"ok"}"#))
        try writer.stdin(Array(body[(1 << 20)...]))
        try writer.stdin([])
        #expect(try writer.response().hasPrefix("Status: 202"))
    }

    @Test("SIGTERM lets a request in flight finish before kv-fcgi exits")
    func inFlightRequestFinishes() throws {
        let stack = try HTTPStack()
        let http = stack.client()
        let store = try #require(stack.store)
        // A stopped kv-stored holds the request inside a kv-fcgi worker (its timeout is 5 s).
        kill(store.process.processIdentifier, SIGSTOP)
        let pending = try http.start("POST", "/storage/inflight", json: #"{"value":"kept"}"#)
        // In flight: kv-fcgi has the request (it logs its arrival at debug level) and waits for kv-stored.
        let fcgi = try #require(stack.fcgi)
        let reachedStore = eventually { fcgi.log.contains("request received") && fcgi.log.contains("kv.op=POST") }
        #expect(reachedStore, "the request never reached kv-fcgi")
        kill(fcgi.process.processIdentifier, SIGTERM)
        #expect(eventually { fcgi.log.contains("shutting down: finishing requests in flight") })
        kill(store.process.processIdentifier, SIGCONT)
        let response = try pending.finish()
        #expect(response.status == 202, "\(response)")
        fcgi.process.waitUntilExit()
        #expect(fcgi.process.terminationStatus == 0)
        #expect(try run("redis-cli", ["-s", stack.storeSocket, "get", "inflight"]).output.contains("kept"))
    }

    @Test("kv-fcgi serves on a socket inherited as fd 0, as spawn-fcgi passes it", arguments: StoreKind.allCases)
    func inheritedSocket(store: StoreKind) throws {
        let stack = try HTTPStack(inheritedSocket: true, on: store)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":"inherited"}"#).status == 202)
        #expect(try http.send("GET", "/storage/k").text == #"{"value":"inherited"}"#)
        #expect(stack.fcgi?.log.contains("inherited fd 0") == true)
    }

    @Test("nginx -t accepts the production site file as shipped")
    func nginxConfigChecks() throws {
        let root = Binaries.packageRoot
        let site = root.appendingPathComponent("nginx/kvserver.conf").path
        let check = try run(root.appendingPathComponent("scripts/nginx-check-site.sh").path, [site])
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("\(site) is accepted"))
    }
}
