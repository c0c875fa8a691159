import KVCore
import Testing
@testable import KVHTTP

/// An in-memory store, so the HTTP rules are tested without sockets. Its revisions count as
/// kv-stored's do: every write and every delete of an existing key takes the next one.
final class MemoryStore: KeyValueStore {
    var values: [[UInt8]: [UInt8]] = [:]
    var ttls: [[UInt8]: TTL] = [:]
    var revisions: [[UInt8]: UInt64] = [:]
    var revision: UInt64 = 0
    var failure: KVError?

    func get(_ key: [UInt8]) throws(KVError) -> VersionedValue? {
        if let failure { throw failure }
        guard let value = values[key], let revision = revisions[key] else { return nil }
        return VersionedValue(value: value, revision: revision, ttlMilliseconds: ttls[key]?.milliseconds)
    }

    private func holds(_ precondition: WritePrecondition, for key: [UInt8]) -> Bool {
        let current = revisions[key] ?? 0
        switch precondition {
        case .none: return true
        case .exists: return current != 0
        case .absent: return current == 0
        case .revision(let allowed): return allowed.contains(current)
        }
    }

    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult {
        if let failure { throw failure }
        guard holds(precondition, for: key) else { return .conflict(current: revisions[key] ?? 0) }
        revision += 1
        values[key] = value
        ttls[key] = ttl
        revisions[key] = revision
        return .applied(revision: revision)
    }

    func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult {
        if let failure { throw failure }
        guard holds(precondition, for: key) else { return .conflict(current: revisions[key] ?? 0) }
        guard values.removeValue(forKey: key) != nil else { return .applied(revision: revision) }
        ttls[key] = nil
        revisions[key] = nil
        revision += 1
        return .applied(revision: revision)
    }

    /// kv-stored's listing rules: bytewise order, after `after`, `limit` keys, `next` when more.
    func list(_ query: ListingQuery) throws(KVError) -> KeyListing {
        if let failure { throw failure }
        let keys = values.keys.filter { key in key.starts(with: query.prefix) && query.after.map { after in after.lexicographicallyPrecedes(key) } ?? true }
            .sorted { $0.lexicographicallyPrecedes($1) }
        let page = keys.prefix(query.limit)
        let items = page.map { key in
            query.values ? KeyListing.Item(key: key, value: values[key], revision: revisions[key], ttlMilliseconds: ttls[key]?.milliseconds) : KeyListing.Item(key: key)
        }
        return KeyListing(revision: revision, next: keys.count > query.limit ? page.last : nil, items: items)
    }
}

@Suite("HTTP API rules")
struct StorageAPITests {
    let api = StorageAPI(limits: Limits(maxKeyBytes: 64, maxValueBytes: 1024))

    func call(_ store: MemoryStore, _ method: String, _ uri: String, _ body: String = "") -> HTTPResponse {
        api.handle(HTTPRequest(method: method, uri: uri, body: body), store: store)
    }

    @Test("POST stores the value exactly as written; GET returns it wrapped; HEAD has no body", arguments: [
        #"123456789012345678901234567890"#, "1.0", "1", "true", "null", #""h\u00e9\n\"""#, #"{"a":[1,{"b":null}]}"#, "[]", "-0.5e-7",
    ])
    func roundTrip(value: String) {
        let store = MemoryStore()
        #expect(call(store, "POST", "/storage/k", "{ \"value\" : \(value) }").status == 202)
        let get = call(store, "GET", "/storage/k")
        #expect(get.status == 200)
        #expect(get.header("Content-Type") == "application/json")
        #expect(get.bodyText == "{\"value\":\(value)}")
        let head = call(store, "HEAD", "/storage/k")
        #expect(head.status == 200 && head.body.isEmpty && head.header("Content-Length") == String(get.body.count))
    }

    @Test("a missing key is 204 with an empty body; DELETE is always 200")
    func missingAndDelete() {
        let store = MemoryStore()
        let missing = call(store, "GET", "/storage/nothing")
        #expect(missing.status == 204 && missing.body.isEmpty)
        #expect(call(store, "DELETE", "/storage/nothing").status == 200)
        _ = call(store, "POST", "/storage/k", #"{"value":1}"#)
        #expect(call(store, "DELETE", "/storage/k").status == 200)
        #expect(call(store, "GET", "/storage/k").status == 204)
    }

    @Test("the key is the raw path after /storage/, up to '?', percent-decoded once", arguments: [
        ("/storage/a/b", "a/b"), ("/storage/a%2Fb", "a/b"), ("/storage/%2541", "%41"), ("/storage/a?x=1", "a"),
        ("/storage/a%20b", "a b"), ("/storage/%D0%BA%D0%BB%D1%8E%D1%87", "ключ"), ("/storage/a+b", "a+b"),
        ("/storage/...%2F.x", ".../.x"), ("/storage//x", "/x"), ("/storage/a%3Fb?c", "a?b"),
    ])
    func keys(uri: String, key: String) {
        let store = MemoryStore()
        #expect(call(store, "POST", uri, #"{"value":1}"#).status == 202)
        #expect(store.values[Array(key.utf8)] == Array("1".utf8), "\(uri) → \(store.values.keys.map { String(decoding: $0, as: UTF8.self) })")
    }

    @Test("bad keys are 400 (or 413 over the limit) and store nothing", arguments: [
        ("/storage/", 400), ("/storage/?a", 400), ("/storage/%FF", 400), ("/storage/%zz", 400), ("/storage/a%2", 400),
        ("/storage/" + String(repeating: "k", count: 65), 413), ("/other/a", 400),
    ])
    func badKeys(uri: String, status: Int) {
        let store = MemoryStore()
        let response = call(store, "POST", uri, #"{"value":1}"#)
        #expect(response.status == status)
        #expect(response.bodyText.hasPrefix(#"{"error":""#))
        #expect(store.values.isEmpty)
        #expect(call(store, "GET", uri).status == status)
    }

    @Test("bad bodies are 400 with a message that says what is wrong, and store nothing", arguments: [
        ("", "invalid JSON"), ("[1]", "must be a JSON object"), ("1", "must be a JSON object"), (#"{"ttl":5}"#, #"\"value\" is required"#),
        (#"{"value":1,}"#, "invalid JSON"), (#"{"value":NaN}"#, "invalid JSON"), (#"{"value":"\ud800"}"#, "surrogate"),
        (#"{"value":1, "ttl": 0}"#, "ttl: must be greater than 0"), (#"{"value":1, "ttl": -5}"#, "greater than 0"),
        (#"{"value":1, "ttl": "10 parsecs"}"#, #"ttl: unknown unit \"parsecs\""#), (#"{"value":1, "ttl": true}"#, "ttl: must be a number"),
        (#"{"value":1, "ttl": [1]}"#, "ttl: must be a number"), (#"{"value":1, "ttl": "1h,,2m"}"#, "ttl:"),
        (#"{"value":1, "ttl": 3155760000001}"#, "100 years"), (#"{"value":1,"value":2}"#, "duplicate"),
    ])
    func badBodies(body: String, message: String) {
        let store = MemoryStore()
        let response = call(store, "POST", "/storage/k", body)
        #expect(response.status == 400)
        #expect(response.header("Content-Type") == "application/json")
        #expect(response.bodyText.contains(message), "\(response.bodyText)")
        #expect(store.values.isEmpty)
    }

    @Test("TTL numbers and strings reach the store; null or absent means none; unknown members are ignored")
    func ttls() {
        let store = MemoryStore()
        _ = call(store, "POST", "/storage/a", #"{"value":1,"ttl":1500}"#)
        _ = call(store, "POST", "/storage/b", #"{"value":1,"ttl":"10 hours 1m 5s"}"#)
        _ = call(store, "POST", "/storage/c", #"{"value":1,"ttl":null,"extra":{"x":1}}"#)
        _ = call(store, "POST", "/storage/d", #"{"value":1,"ttl":0.5}"#)
        #expect(store.ttls[Array("a".utf8)]?.milliseconds == 1500)
        #expect(store.ttls[Array("b".utf8)]?.milliseconds == 36_065_000)
        #expect(store.ttls[Array("c".utf8)] == nil && store.values[Array("c".utf8)] != nil)
        #expect(store.ttls[Array("d".utf8)]?.milliseconds == 1)
    }

    @Test("a value over the limit is 413 and nothing is stored")
    func valueTooLarge() {
        let store = MemoryStore()
        let big = "\"" + String(repeating: "x", count: 1100) + "\""
        #expect(call(store, "POST", "/storage/k", "{\"value\":\(big)}").status == 413)
        #expect(store.values.isEmpty)
    }

    @Test("other methods are 405 with Allow", arguments: ["PUT", "PATCH", "OPTIONS", "TRACE", "FOO"])
    func methods(method: String) {
        let response = call(MemoryStore(), method, "/storage/k")
        #expect(response.status == 405)
        #expect(response.header("Allow") == "GET, HEAD, POST, DELETE")
    }

    @Test("storage unreachable is 503 with a JSON error")
    func unavailable() {
        let store = MemoryStore()
        store.failure = KVError(.storageUnavailable, "storage unavailable: connection refused")
        for method in ["GET", "POST", "DELETE"] {
            let response = call(store, method, "/storage/k", #"{"value":1}"#)
            #expect(response.status == 503)
            #expect(response.bodyText == #"{"error":"storage unavailable: connection refused"}"#)
        }
    }

    @Test("every error code maps to one status")
    func statusMapping() {
        let expected: [KVError.Code: Int] = [
            .invalidKey: 400, .invalidJSON: 400, .invalidRequest: 400, .invalidTTL: 400,
            .tooLarge: 413, .storageUnavailable: 503, .storageError: 500, .storageFull: 507,
        ]
        for code in KVError.Code.allCases { #expect(StorageAPI.status(for: code) == expected[code]) }
    }

    @Test("error messages are valid JSON strings whatever they contain")
    func errorEscaping() throws {
        let response = StorageAPI.errorResponse(status: 400, message: "a \"quote\" \\ and\nnewline \u{01} é")
        let document = try JSONReader().read(response.body)
        #expect(document.string(try #require(document.root[member: "error"])) == "a \"quote\" \\ and\nnewline \u{01} é")
    }

    @Test("the CGI head carries the status line and headers")
    func cgiHead() {
        let head = StorageAPI.errorResponse(status: 503, message: "x").cgiHead
        #expect(head.hasPrefix("Status: 503 Service Unavailable\r\nContent-Type: application/json\r\n"))
        #expect(head.hasSuffix("\r\n\r\n"))
    }

    // MARK: - Versions: ETag, conditional requests, KV-Expires-At

    func call(_ store: MemoryStore, _ method: String, _ uri: String, _ body: String = "", ifMatch: String? = nil, ifNoneMatch: String? = nil) -> HTTPResponse {
        api.handle(HTTPRequest(method: method, uri: uri, body: body, ifMatch: ifMatch, ifNoneMatch: ifNoneMatch), store: store)
    }

    @Test("GET sends the revision as ETag and answers a matching If-None-Match with 304")
    func etags() {
        let store = MemoryStore()
        let post = call(store, "POST", "/storage/k", #"{"value":1}"#)
        #expect(post.status == 202 && post.header("ETag") == "\"1\"")
        let get = call(store, "GET", "/storage/k")
        #expect(get.status == 200 && get.header("ETag") == "\"1\"" && get.header("KV-Expires-At") == nil)
        for tags in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
            let cached = call(store, "GET", "/storage/k", ifNoneMatch: tags)
            #expect(cached.status == 304 && cached.body.isEmpty && cached.header("ETag") == "\"1\"", "\(tags)")
        }
        #expect(call(store, "GET", "/storage/k", ifNoneMatch: "\"2\"").status == 200)
        #expect(call(store, "GET", "/storage/k", ifMatch: "\"2\"").status == 412)
        #expect(call(store, "GET", "/storage/k", ifMatch: "W/\"1\"").status == 412, "If-Match compares strongly")
        #expect(call(store, "GET", "/storage/missing", ifNoneMatch: "*").status == 204)
        let bad = call(store, "GET", "/storage/k", ifNoneMatch: "1")
        #expect(bad.status == 400 && bad.bodyText.contains("quoted entity tags"))
    }

    @Test("a key with a TTL shows its absolute deadline in KV-Expires-At (Unix milliseconds)")
    func expiresAt() {
        let api = StorageAPI(limits: Limits(), now: { 1_700_000_000_000 })
        let store = MemoryStore()
        _ = api.handle(HTTPRequest(method: "POST", uri: "/storage/t", body: #"{"value":1,"ttl":"1m"}"#), store: store)
        #expect(api.handle(HTTPRequest(method: "GET", uri: "/storage/t"), store: store).header("KV-Expires-At") == "1700000060000")
    }

    @Test("POST and DELETE with If-Match write only at that revision; If-None-Match: * only creates; a failed condition is 412 with the current ETag and changes nothing")
    func conditionalWrites() {
        let store = MemoryStore()
        let created = call(store, "POST", "/storage/k", #"{"value":"a"}"#, ifNoneMatch: "*")
        #expect(created.status == 202 && created.header("ETag") == "\"1\"")
        let again = call(store, "POST", "/storage/k", #"{"value":"b"}"#, ifNoneMatch: "*")
        #expect(again.status == 412 && again.header("ETag") == "\"1\"" && again.bodyText.contains("revision 1"))
        // Two writers both read revision 1: the first wins, the second gets 412 and the new ETag.
        #expect(call(store, "POST", "/storage/k", #"{"value":"first"}"#, ifMatch: "\"1\"").status == 202)
        let second = call(store, "POST", "/storage/k", #"{"value":"second"}"#, ifMatch: "\"1\"")
        #expect(second.status == 412 && second.header("ETag") == "\"2\"")
        #expect(call(store, "GET", "/storage/k").bodyText == #"{"value":"first"}"#)
        #expect(call(store, "POST", "/storage/k", #"{"value":"c"}"#, ifMatch: "W/\"2\"").status == 412, "weak tags never match If-Match")
        #expect(call(store, "POST", "/storage/k", #"{"value":"c"}"#, ifMatch: "\"x\"").status == 412)
        #expect(call(store, "POST", "/storage/missing", #"{"value":1}"#, ifMatch: "*").status == 412)
        #expect(call(store, "POST", "/storage/k", #"{"value":"c"}"#, ifNoneMatch: "\"2\"").status == 400)
        #expect(call(store, "POST", "/storage/k", #"{"value":"c"}"#, ifMatch: "*", ifNoneMatch: "*").status == 400)
        #expect(store.revision == 2 && store.values[Array("k".utf8)] == Array(#""first""#.utf8), "refused writes changed nothing")

        let refused = call(store, "DELETE", "/storage/k", ifMatch: "\"1\"")
        #expect(refused.status == 412 && refused.header("ETag") == "\"2\"")
        #expect(call(store, "DELETE", "/storage/k", ifNoneMatch: "*").status == 412)
        let deleted = call(store, "DELETE", "/storage/k", ifMatch: "\"2\"")
        #expect(deleted.status == 200 && deleted.header("ETag") == nil)
        #expect(call(store, "DELETE", "/storage/k", ifMatch: "*").status == 412)
        let gone = call(store, "DELETE", "/storage/k", ifMatch: "\"2\"")
        #expect(gone.status == 412 && gone.header("ETag") == nil && gone.bodyText.contains("does not exist"))
    }
}

/// Issue 15, findings 6 and 7: keys nginx would route as another path, and pages of other sites.
@Suite("HTTP API: what nginx routed, and browser origins")
struct StorageAPIBoundaryTests {
    let api: StorageAPI

    init() throws {
        api = StorageAPI(limits: Limits(), origins: try OriginPolicy(parsing: ["https://app.example.com"]))
    }

    @Test("a key with a . or .. segment (as sent or percent-encoded) is a 400 and stores nothing; dots inside a segment are fine", arguments: [
        "/storage/..", "/storage/../healthz", "/storage/a/../b", "/storage/a/.", "/storage/./a", "/storage/a%2F..%2Fb",
        "/storage/%2E%2E/x", "/storage/a/%2e",
    ])
    func dotSegments(uri: String) {
        let store = MemoryStore()
        let response = api.handle(HTTPRequest(method: "POST", uri: uri, body: #"{"value":1}"#), store: store)
        #expect(response.status == 400 && response.bodyText.contains("path segment"), "\(response.bodyText)")
        #expect(store.values.isEmpty)
        for fine in ["/storage/.hidden", "/storage/a..b", "/storage/.../x", "/storage/a/.b/c.", "/storage/%2E%2E%2E"] {
            #expect(api.handle(HTTPRequest(method: "POST", uri: fine, body: #"{"value":1}"#), store: store).status == 202, "\(fine)")
        }
    }

    @Test("a page of another site gets 403 and changes nothing; the site itself, a listed origin and non-browsers are served")
    func origins() {
        let store = MemoryStore()
        let evil = api.handle(HTTPRequest(method: "POST", uri: "/storage/k", body: #"{"value":1}"#, origin: "https://evil.example", host: "kv.example.com"), store: store)
        #expect(evil.status == 403 && evil.bodyText.contains("not allowed") && evil.header("Access-Control-Allow-Origin") == nil)
        #expect(store.values.isEmpty)
        #expect(api.handle(HTTPRequest(method: "GET", uri: "/storage/k", origin: "null", host: "kv.example.com"), store: store).status == 403)
        for (origin, host) in [("http://kv.example.com", "kv.example.com"), ("https://kv.example.com", "kv.example.com:443"),
                               ("http://127.0.0.1:8080", "127.0.0.1:8080"), ("HTTPS://APP.example.com", "kv.example.com")] {
            let response = api.handle(HTTPRequest(method: "POST", uri: "/storage/k", body: #"{"value":1}"#, origin: origin, host: host), store: store)
            #expect(response.status == 202, "\(origin) to \(host)")
            #expect(response.header("Access-Control-Allow-Origin") == origin && response.header("Vary") == "Origin")
            #expect(response.header("Access-Control-Expose-Headers")?.contains("ETag") == true)
        }
        #expect(api.handle(HTTPRequest(method: "GET", uri: "/storage/k", origin: "http://127.0.0.1:9999", host: "127.0.0.1:8080"), store: store).status == 403,
                "another port is another origin")
        let plain = api.handle(HTTPRequest(method: "GET", uri: "/storage/k"), store: store)
        #expect(plain.status == 200 && plain.header("Access-Control-Allow-Origin") == nil, "curl sends no Origin and gets no CORS headers")
    }

    @Test("a CORS preflight is answered for allowed origins and refused for others; OPTIONS without Origin stays 405")
    func preflight() {
        let store = MemoryStore()
        let allowed = api.handle(HTTPRequest(method: "OPTIONS", uri: "/storage/k", origin: "https://app.example.com", host: "kv.example.com"), store: store)
        #expect(allowed.status == 204)
        #expect(allowed.header("Access-Control-Allow-Methods") == "GET, HEAD, POST, DELETE")
        #expect(allowed.header("Access-Control-Allow-Headers")?.contains("If-Match") == true)
        #expect(allowed.header("Access-Control-Allow-Origin") == "https://app.example.com")
        #expect(api.handle(HTTPRequest(method: "OPTIONS", uri: "/storage/k", origin: "https://evil.example", host: "kv.example.com"), store: store).status == 403)
        #expect(api.handle(HTTPRequest(method: "OPTIONS", uri: "/storage/k"), store: store).status == 405)
    }

    @Test("origin lists are checked: junk is refused with a clear message; * allows every origin")
    func originList() throws {
        #expect(throws: KVError.self) { try OriginPolicy(parsing: ["app.example.com"]) }
        #expect(throws: KVError.self) { try OriginPolicy(parsing: ["https://app.example.com/path"]) }
        let any = try OriginPolicy(parsing: ["*"])
        #expect(any.allows(origin: "https://whoever.example", host: "kv.example.com"))
        #expect(OriginPolicy().allows(origin: nil, host: nil))
        #expect(!OriginPolicy().allows(origin: "http://a.example", host: nil))
    }
}

@Suite("HTTP listing")
struct StorageListingTests {
    let api = StorageAPI(limits: Limits(maxKeyBytes: 64, maxValueBytes: 1024))

    func call(_ store: MemoryStore, _ method: String, _ uri: String, _ body: String = "") -> HTTPResponse {
        api.handle(HTTPRequest(method: method, uri: uri, body: body), store: store)
    }

    @Test("GET /storage/?prefix= lists a page of keys as JSON; values=1 adds value, rev and expiresAt; next pages on")
    func listing() throws {
        let store = MemoryStore()
        for key in ["a/1", "a/2", "a/3", "b"] { _ = call(store, "POST", "/storage/\(key)", #"{"value":"\#(key)"}"#) }
        _ = call(store, "POST", "/storage/a/ttl", #"{"value":0,"ttl":"10s"}"#)
        let api = StorageAPI(limits: self.api.limits, now: { 1_000 })
        let page = api.handle(HTTPRequest(method: "GET", uri: "/storage/?prefix=a/&limit=2"), store: store)
        #expect(page.status == 200 && page.bodyText == #"{"keys":["a/1","a/2"],"next":"a/2","revision":5}"#, "\(page.bodyText)")
        let rest = api.handle(HTTPRequest(method: "GET", uri: "/storage/?prefix=a%2F&after=a%2F2&values=1"), store: store)
        #expect(rest.bodyText == #"{"items":[{"key":"a/3","value":"a/3","rev":3},{"key":"a/ttl","value":0,"rev":5,"expiresAt":11000}],"next":null,"revision":5}"#,
                "\(rest.bodyText)")
        #expect(api.handle(HTTPRequest(method: "HEAD", uri: "/storage/?prefix="), store: store).body.isEmpty)
        store.failure = KVError(.storageUnavailable, "down")
        #expect(api.handle(HTTPRequest(method: "GET", uri: "/storage/?prefix="), store: store).status == 503)
    }

    @Test("listing parameters are checked: prefix required, limit 1-1000, values 1/0, no unknown or repeated ones, UTF-8 within the key limit")
    func listingParameters() {
        let store = MemoryStore()
        for (uri, message) in [
            ("/storage/?limit=2", "a listing needs the prefix parameter"), ("/storage/?", "a listing needs the prefix parameter"),
            ("/storage/?prefix=a&limit=0", "limit must be"), ("/storage/?prefix=a&limit=99999999999999999999", "limit must be"),
            ("/storage/?prefix=a&values=2", "values must be 1 or 0"), ("/storage/?prefix=a&after=x&after=y", "after is given twice"),
            ("/storage/?prefix=a&x", "unknown parameter \\\"x\\\""), ("/storage/?prefix=%FF", "prefix is not valid UTF-8"),
            ("/storage/?prefix=" + String(repeating: "p", count: 65), "prefix is 65 bytes, the key limit is 64"),
            ("/storage/?prefix=a&after=" + String(repeating: "p", count: 65), "after is 65 bytes"),
        ] {
            let response = call(store, "GET", uri)
            #expect(response.status == (message.contains("bytes") ? 413 : 400) && response.bodyText.contains(message), "\(uri): \(response.bodyText)")
        }
        #expect(call(store, "GET", "/storage/?prefix=a&limit=1000&values=0").status == 200)
        #expect(call(store, "GET", "/storage/?prefix=a&&limit=1&").status == 200, "empty parameters are nothing")
    }
}
