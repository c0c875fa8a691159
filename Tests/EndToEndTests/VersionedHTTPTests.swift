import Foundation
import Testing

/// ETags, conditional requests and KV-Expires-At through the real nginx, kv-fcgi and kv-stored.
@Suite("HTTP versions through nginx")
struct VersionedHTTPTests {
    @Test("GET carries the revision as ETag; If-None-Match gives 304; KV-Expires-At shows a TTL's deadline", arguments: StoreKind.allCases)
    func etagsAndExpiry(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        let post = try http.send("POST", "/storage/k", json: #"{"value":{"a":1}}"#)
        #expect(post.status == 202 && post.headers["etag"] == "\"1\"", "\(post)")
        let get = try http.send("GET", "/storage/k")
        #expect(get.status == 200 && get.headers["etag"] == "\"1\"" && get.headers["kv-expires-at"] == nil, "\(get)")
        let cached = try http.send("GET", "/storage/k", headers: ["If-None-Match": "\"1\""])
        #expect(cached.status == 304 && cached.body.isEmpty && cached.headers["etag"] == "\"1\"", "\(cached)")
        #expect(try http.send("GET", "/storage/k", headers: ["If-None-Match": "\"0\""]).status == 200)

        let before = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":1,"ttl":"1h"}"#).status == 202)
        let brief = try http.send("GET", "/storage/brief")
        let deadline = try #require(brief.headers["kv-expires-at"].flatMap { Int64($0) }, "\(brief)")
        let after = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(deadline >= before + 3_600_000 - 1000 && deadline <= after + 3_600_000 + 1000, "\(deadline) vs now \(after)")
    }

    @Test("two writers racing with the same If-Match: exactly one wins, the other gets 412 with the new ETag", arguments: StoreKind.allCases)
    func racingWriters(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        for round in 0..<20 {
            let key = "/storage/race\(round)"
            let created = try http.send("POST", key, json: #"{"value":0}"#)
            let etag = try #require(created.headers["etag"])
            // Both requests are written before either answer is read: both are in flight at once.
            let a = try http.start("POST", Array(key.utf8), body: Array(#"{"value":"a"}"#.utf8), headers: ["If-Match": etag])
            let b = try http.start("POST", Array(key.utf8), body: Array(#"{"value":"b"}"#.utf8), headers: ["If-Match": etag])
            let answers = [try a.finish(), try b.finish()]
            let winners = answers.filter { $0.status == 202 }, losers = answers.filter { $0.status == 412 }
            #expect(winners.count == 1 && losers.count == 1, "\(answers)")
            guard let winner = winners.first, let loser = losers.first else { continue }
            #expect(loser.headers["etag"] == winner.headers["etag"], "the 412 names the winner's revision")
            #expect(loser.text.contains("precondition failed"))
            let now = try http.send("GET", key)
            #expect(now.headers["etag"] == winner.headers["etag"])
        }
    }

    @Test("If-None-Match: * creates only; DELETE with If-Match deletes only at that revision", arguments: StoreKind.allCases)
    func createAndDelete(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/once", body: Array(#"{"value":1}"#.utf8), headers: ["If-None-Match": "*"]).status == 202)
        let again = try http.send("POST", "/storage/once", body: Array(#"{"value":2}"#.utf8), headers: ["If-None-Match": "*"])
        #expect(again.status == 412 && again.headers["etag"] == "\"1\"", "\(again)")
        #expect(try http.send("GET", "/storage/once").text == #"{"value":1}"#)

        let stale = try http.send("DELETE", "/storage/once", headers: ["If-Match": "\"7\""])
        #expect(stale.status == 412 && stale.headers["etag"] == "\"1\"", "\(stale)")
        #expect(try http.send("GET", "/storage/once").status == 200)
        #expect(try http.send("DELETE", "/storage/once", headers: ["If-Match": "\"1\""]).status == 200)
        #expect(try http.send("GET", "/storage/once").status == 204)
        let bad = try http.send("POST", "/storage/once", body: Array(#"{"value":1}"#.utf8), headers: ["If-Match": "1"])
        #expect(bad.status == 400 && bad.text.contains("quoted entity tags"), "\(bad)")
        // A client that sends none of these headers sees docs/api.md's behaviour.
        let plain = try http.send("POST", "/storage/once", json: #"{"value":3}"#)
        #expect(plain.status == 202 && plain.body.isEmpty)
        #expect(try http.send("DELETE", "/storage/once").status == 200)
        #expect(try http.send("DELETE", "/storage/once").status == 200)
    }
}
