import KVAccess
import KVCore
import Testing
@testable import KVHTTP

/// The access rules as the HTTP API applies them: 401 and 403 before the store is asked
/// anything, for every method and for conditional requests.
@Suite("HTTP access control")
struct AccessRulesHTTPTests {
    let api = StorageAPI(limits: Limits(maxKeyBytes: 64, maxValueBytes: 1024))
    var reader: Identity {
        var rules = AccessRules.none
        rules.allow(.read, prefix: Array("app/".utf8))
        rules.except(.read, prefix: Array("app/secret/".utf8))
        rules.allow(.write, prefix: Array("app/user/42/".utf8))
        return Identity(kind: .token, id: "reader", rules: rules)
    }
    var anonymous: Identity {
        var rules = AccessRules.none
        rules.allow(.read, prefix: Array("public/".utf8))
        return Identity(kind: .anonymous, id: "anonymous", rules: rules)
    }

    /// A store that records every call, so "nothing was asked" is checked, not assumed.
    final class CountingStore: KeyValueStore {
        let inner = MemoryStore()
        var calls = 0
        func get(_ key: [UInt8]) throws(KVError) -> VersionedValue? { calls += 1; return try inner.get(key) }
        func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult {
            calls += 1
            return try inner.set(key, value: value, ttl: ttl, precondition: precondition)
        }
        func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult {
            calls += 1
            return try inner.delete(key, precondition: precondition)
        }
        func list(_ query: ListingQuery) throws(KVError) -> KeyListing { calls += 1; return try inner.list(query) }
    }

    private func seeded() -> CountingStore {
        let store = CountingStore()
        for key in ["app/a", "app/secret/s", "app/user/42/p", "public/p", "other"] {
            _ = try? store.inner.set(Array(key.utf8), value: Array("1".utf8), ttl: nil, precondition: .none)
        }
        return store
    }

    private func call(_ store: CountingStore, _ method: String, _ uri: String, as identity: Identity?, refused: String? = nil,
                      authorization: String? = "Bearer t", ifNoneMatch: String? = nil, ifMatch: String? = nil) -> HTTPResponse {
        let authentication: Authentication = identity.map { .identity($0) } ?? .refused(refused ?? "the token is not known")
        let body = method == "POST" ? #"{"value": 2}"# : ""
        return api.handle(HTTPRequest(method: method, uri: uri, body: body, ifMatch: ifMatch, ifNoneMatch: ifNoneMatch, authorization: authorization),
                          as: authentication, store: store)
    }

    @Test("a read-only token reads its prefix and nothing else; a refused request asks the store nothing")
    func readOnly() {
        let store = seeded()
        #expect(call(store, "GET", "/storage/app/a", as: reader).status == 200)
        #expect(call(store, "HEAD", "/storage/app/a", as: reader).status == 200)
        #expect(store.calls == 2)
        for (method, uri, operation) in [("GET", "/storage/other", "read"), ("HEAD", "/storage/app/secret/s", "read"), ("GET", "/storage/app/secret/missing", "read"),
                                         ("POST", "/storage/app/a", "write"), ("DELETE", "/storage/app/a", "delete")] {
            let response = call(store, method, uri, as: reader)
            #expect(response.status == 403, "\(method) \(uri)")
            #expect(response.bodyText.contains("reader may not \(operation) key"), "\(response.bodyText)")
            #expect(response.header("WWW-Authenticate")?.contains("insufficient_scope") == true)
        }
        #expect(store.calls == 2, "a refused request reached the store")
        // A missing key and an existing one are refused alike: the answer reveals nothing.
        let existing = call(store, "GET", "/storage/app/secret/s", as: reader)
        let missing = call(store, "GET", "/storage/app/secret/missing", as: reader)
        #expect(existing.status == missing.status && existing.headers.count == missing.headers.count)
        #expect(existing.bodyText == #"{"error":"forbidden: reader may not read key \"app/secret/s\""}"#)
        #expect(missing.bodyText == #"{"error":"forbidden: reader may not read key \"app/secret/missing\""}"#)
    }

    @Test("a prefix-scoped writer writes under its prefix only, with or without conditions")
    func scopedWriter() {
        let store = seeded()
        #expect(call(store, "POST", "/storage/app/user/42/p", as: reader).status == 202)
        #expect(call(store, "POST", "/storage/app/user/43/p", as: reader).status == 403)
        #expect(call(store, "POST", "/storage/app/user/43/p", as: reader, ifNoneMatch: "*").status == 403)
        #expect(store.inner.values[Array("app/user/43/p".utf8)] == nil)
    }

    @Test("conditional reads obey the rules: no 304 and no 412 for a key the client may not read")
    func conditionalRequests() {
        let store = seeded()
        let etag = call(store, "GET", "/storage/app/a", as: reader).header("ETag")
        #expect(call(store, "GET", "/storage/app/a", as: reader, ifNoneMatch: etag).status == 304)
        let calls = store.calls
        #expect(call(store, "GET", "/storage/other", as: reader, ifNoneMatch: "*").status == 403)
        #expect(call(store, "GET", "/storage/other", as: reader, ifMatch: #""999""#).status == 403)
        #expect(call(store, "DELETE", "/storage/other", as: reader, ifMatch: "*").status == 403)
        #expect(store.calls == calls)
    }

    @Test("percent-encoded slashes and dots are matched after decoding and cannot leave a prefix")
    func encodedKeys() {
        let store = seeded()
        #expect(call(store, "GET", "/storage/app%2Fa", as: reader).status == 200)
        #expect(call(store, "GET", "/storage/%61pp/a", as: reader).status == 200)
        #expect(call(store, "GET", "/storage/app/%73ecret/s", as: reader).status == 403)
        #expect(call(store, "GET", "/storage/app%2Fsecret%2Fs", as: reader).status == 403)
        #expect(call(store, "GET", "/storage/app/%2E%2E/other", as: reader).status == 400)
        #expect(call(store, "GET", "/storage/app/..%2Fother", as: reader).status == 400)
    }

    @Test("without credentials: 401 with a Bearer challenge, anonymous rules apply where they allow")
    func anonymousClients() {
        let store = seeded()
        #expect(call(store, "GET", "/storage/public/p", as: anonymous, authorization: nil).status == 200)
        let refused = call(store, "GET", "/storage/app/a", as: anonymous, authorization: nil)
        #expect(refused.status == 401)
        #expect(refused.header("WWW-Authenticate") == #"Bearer realm="kvserver""#)
        #expect(refused.bodyText.contains("without a token may not read"))
    }

    @Test("bad credentials: 401 invalid_token, whatever the method, before the key is looked at")
    func badCredentials() {
        let store = seeded()
        for (method, uri) in [("GET", "/storage/public/p"), ("POST", "/storage/x"), ("DELETE", "/storage/x"), ("GET", "/storage/")] {
            let response = call(store, method, uri, as: nil, refused: "the token expired")
            #expect(response.status == 401, "\(method) \(uri)")
            #expect(response.header("WWW-Authenticate")?.contains(#"error="invalid_token""#) == true)
            #expect(response.bodyText == #"{"error":"unauthorized: the token expired"}"#)
        }
        #expect(store.calls == 0)
    }

    @Test("a listing shows only the keys the token may read; a prefix it may read nothing under is refused without asking the store")
    func listing() {
        let store = seeded()
        let mixed = call(store, "GET", "/storage/?prefix=app/", as: reader)
        #expect(mixed.bodyText == #"{"keys":["app/a","app/user/42/p"],"next":null,"revision":5}"#, "app/secret/ is left out: \(mixed.bodyText)")
        #expect(call(store, "GET", "/storage/?prefix=app/user/", as: reader).bodyText.contains("app/user/42/p"))
        #expect(call(store, "GET", "/storage/?prefix=", as: reader).bodyText.contains(#"["app/a","app/user/42/p"]"#), "every key: those it may read")
        let calls = store.calls
        for uri in ["/storage/?prefix=app/secret/", "/storage/?prefix=app/secret/x", "/storage/?prefix=other"] {
            let refused = call(store, "GET", uri, as: reader)
            #expect(refused.status == 403 && refused.bodyText.contains("reader may not read any key under prefix"), "\(uri): \(refused.bodyText)")
        }
        let anonymousRefused = call(store, "GET", "/storage/?prefix=app/", as: anonymous, authorization: nil)
        #expect(anonymousRefused.status == 401 && anonymousRefused.bodyText.contains("without a token may not read any key under prefix"))
        #expect(store.calls == calls, "a refused listing reached the store")
        #expect(call(store, "GET", "/storage/?prefix=pub", as: anonymous, authorization: nil).bodyText.contains(#"["public/p"]"#),
                "a prefix shorter than the rule's lists what the rule allows")
    }

    @Test("the refusal is decided from the method and key alone (kv-fcgi then never reads a refused POST's body)")
    func refusalBeforeTheBody() {
        let post = HTTPRequest(method: "POST", uri: "/storage/app/user/43/p")
        #expect(api.accessRefusal(post, as: .identity(reader))?.status == 403)
        #expect(api.accessRefusal(HTTPRequest(method: "POST", uri: "/storage/app/user/42/p"), as: .identity(reader)) == nil)
        #expect(api.accessRefusal(post, as: .refused("the token expired"))?.status == 401)
        #expect(api.accessRefusal(HTTPRequest(method: "POST", uri: "/storage/"), as: .identity(reader)) == nil, "an empty key is the API's 400")
        #expect(api.accessRefusal(HTTPRequest(method: "PUT", uri: "/storage/other"), as: .identity(reader)) == nil, "405 for everyone")
    }

    @Test("a browser's preflight needs no token; the answer to the request itself exposes WWW-Authenticate")
    func preflight() {
        let store = seeded()
        let preflight = api.handle(HTTPRequest(method: "OPTIONS", uri: "/storage/app/a", origin: "http://localhost:8080", host: "localhost:8080"),
                                   as: .refused("credentials are required"), store: store)
        #expect(preflight.status == 204)
        #expect(preflight.header("Access-Control-Allow-Headers")?.contains("Authorization") == true)
        let refused = api.handle(HTTPRequest(method: "GET", uri: "/storage/app/a", origin: "http://localhost:8080", host: "localhost:8080"),
                                 as: .refused("credentials are required"), store: store)
        #expect(refused.status == 401 && refused.header("Access-Control-Expose-Headers")?.contains("WWW-Authenticate") == true)
    }
}
