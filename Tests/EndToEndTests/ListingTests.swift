import Foundation
import KVAccess
import Testing

/// Listing keys by prefix (docs/http.md and docs/websocket.md, "Listing keys") through the real
/// nginx, kv-fcgi, kv-ws and store: kv-stored pages in key order; a Redis server pages by SCAN,
/// each page sorted (docs/scaling.md).
@Suite("Listing keys through nginx")
struct ListingTests {
    /// A listing page as JSON.
    struct Page {
        var keys: [String]
        var items: [[String: Any]]
        var next: String?
        var revision: Int?

        init(_ response: HTTPClient.Response) throws {
            #expect(response.status == 200, "\(response)")
            try self.init(json: response.text)
        }

        init(json text: String) throws {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
            try self.init(object: object)
        }

        init(object: [String: Any]) throws {
            items = object["items"] as? [[String: Any]] ?? []
            keys = object["keys"] as? [String] ?? items.compactMap { $0["key"] as? String }
            next = object["next"] as? String
            revision = object["revision"] as? Int
        }
    }

    /// Every key under `prefix`, page by page (`limit` at a time), with the pages' keys in the
    /// order received; `during` runs between pages.
    static func listAll(_ http: HTTPClient, prefix: String, limit: Int, during: () throws -> Void = {}) throws -> [String] {
        var keys: [String] = [], after: String?
        var pages = 0
        repeat {
            var target = "/storage/?prefix=\(encoded(prefix))&limit=\(limit)"
            if let after { target += "&after=\(encoded(after))" }
            let page = try Page(try http.send("GET", target))
            #expect(page.keys.count <= limit, "a page holds at most limit keys")
            #expect(page.keys == page.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }, "a page is in key order")
            keys += page.keys
            after = page.next
            pages += 1
            try during()
        } while after != nil && pages < 10_000
        return keys
    }

    static func encoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? text
    }

    static func bytewise(_ keys: [String]) -> [String] { keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) } }

    @Test("GET /storage/?prefix= lists keys with /, %2F and unicode in bytewise order, page by page; values=1 adds value, rev and expiresAt", arguments: StoreKind.allCases)
    func listing(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        // Paths as a client writes them: /storage/app%2Fb is the key app/b; %252F is a literal %2F.
        let written = ["app/a": "/storage/app/a", "app/b/c": "/storage/app%2Fb%2Fc", "app/b%2Fd": "/storage/app/b%252Fd",
                       "app/ü": "/storage/app/%C3%BC", "app/日本": "/storage/app/日本", "app/z": "/storage/app/z", "apq": "/storage/apq",
                       "b": "/storage/b", " space": "/storage/%20space"]
        for (key, path) in written {
            let body = #"{"value":{"k":\#(String(decoding: JSONSerialization.quoted(key), as: UTF8.self))}}"#
            #expect(try http.send("POST", path, json: body).status == 202, "\(key)")
        }
        #expect(try http.send("POST", "/storage/app/brief", json: #"{"value":1,"ttl":"1h"}"#).status == 202)
        let underApp = Self.bytewise(written.keys.filter { $0.hasPrefix("app/") } + ["app/brief"])

        let all = try Page(try http.send("GET", "/storage/?prefix=app/"))
        if store == .kvStored {
            #expect(all.keys == underApp && all.next == nil, "\(all.keys)")
            #expect(all.revision != nil)
        } else {
            // One SCAN step of 100 names covers this small keyspace; the page is still sorted.
            #expect(Set(all.keys) == Set(underApp), "\(all.keys)")
        }
        // Paging: every key exactly once, in order on kv-stored.
        let paged = try Self.listAll(http, prefix: "app/", limit: 2)
        if store == .kvStored { #expect(paged == underApp) } else { #expect(Set(paged) == Set(underApp) && paged.count >= underApp.count) }

        // The prefix is percent-decoded once: %2F is /, %252F a literal %2F.
        #expect(Set(try Page(try http.send("GET", "/storage/?prefix=app%2Fb")).keys) == ["app/b/c", "app/b%2Fd", "app/brief"])
        #expect(try Page(try http.send("GET", "/storage/?prefix=app/b%252F")).keys == ["app/b%2Fd"])
        #expect(try Page(try http.send("GET", "/storage/?prefix=app/%C3%BC")).keys == ["app/ü"])
        #expect(try Page(try http.send("GET", "/storage/?prefix=app/日本")).keys == ["app/日本"])
        // Empty-looking prefixes: "" is every key; " " and "%" patterns are literal bytes.
        #expect(Set(try Self.listAll(http, prefix: "", limit: 3)) == Set(written.keys).union(["app/brief"]))
        #expect(try Page(try http.send("GET", "/storage/?prefix=%20")).keys == [" space"])
        #expect(try Page(try http.send("GET", "/storage/?prefix=*")).keys.isEmpty, "a glob character is not a pattern")
        #expect(try Page(try http.send("GET", "/storage/?prefix=nothing/")).keys.isEmpty)

        // values=1: the value as JSON, its revision, and the deadline of a key with a TTL.
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let valued = try Page(try http.send("GET", "/storage/?prefix=app/&values=1&limit=1000"))
        let brief = try #require(valued.items.first { $0["key"] as? String == "app/brief" })
        let expiresAt = try #require(brief["expiresAt"] as? Int64)
        #expect(abs(expiresAt - (before + 3_600_000)) < 5_000, "\(brief)")
        let a = try #require(valued.items.first { $0["key"] as? String == "app/a" })
        #expect((a["value"] as? [String: Any])?["k"] as? String == "app/a" && (a["rev"] as? Int ?? 0) > 0 && a["expiresAt"] == nil, "\(a)")
        let etag = try http.send("GET", "/storage/app/a").headers["etag"]
        #expect(etag == "\"\(a["rev"] as? Int ?? -1)\"", "an item's rev is the key's ETag")
        #expect(try http.send("HEAD", "/storage/?prefix=app/").body.isEmpty)
    }

    @Test("bad listings are 400s that name the problem; a key path still reads its key", arguments: [StoreKind.kvStored])
    func badListings(store: StoreKind) throws {
        let stack = try HTTPStack(on: store)
        let http = stack.client()
        let cases: [(String, String)] = [
            ("/storage/?prefix=a&limit=0", "limit must be an integer from 1 to 1000"),
            ("/storage/?prefix=a&limit=1001", "limit must be an integer from 1 to 1000"),
            ("/storage/?prefix=a&limit=ten", "limit must be an integer"),
            ("/storage/?prefix=a&values=yes", "values must be 1 or 0"),
            ("/storage/?prefix=a&prefix=b", "the parameter prefix is given twice"),
            ("/storage/?prefix=a&sort=desc", #"unknown parameter \"sort\""#),
            ("/storage/?limit=5", "a listing needs the prefix parameter"),
            ("/storage/?prefix=%C3", "prefix is not valid UTF-8"),
            ("/storage/?prefix=%zz", "invalid percent-encoding in prefix"),
            ("/storage/", "key must not be empty (to list keys: GET /storage/?prefix="),
        ]
        for (target, message) in cases {
            let response = try http.send("GET", target)
            #expect(response.status == 400 && response.text.contains(message), "\(target): \(response)")
        }
        let long = try http.send("GET", "/storage/?prefix=" + String(repeating: "k", count: (1 << 20) + 1))
        #expect(long.status == 413 || long.status == 414, "\(long)")
        // Writing to the listing's path is writing the empty key.
        #expect(try http.send("POST", "/storage/?prefix=a", json: #"{"value":1}"#).status == 400)
        #expect(try http.send("DELETE", "/storage/?prefix=a").status == 400)
        // A query after a key is not a listing.
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        #expect(try http.send("GET", "/storage/k?prefix=x").text == #"{"value":1}"#)
    }

    @Test("kv-stored: paging while keys are written, deleted and expire lists every key that exists throughout exactly once, in order")
    func pagingUnderWrites() throws {
        let stack = try HTTPStack()
        let http = stack.client(), writer = stack.client()
        let stable = (0..<300).map { String(format: "load/%04d", $0 * 2) }
        for key in stable { #expect(try http.send("POST", "/storage/\(key)", json: #"{"value":0}"#).status == 202) }
        var round = 0
        let listed = try Self.listAll(http, prefix: "load/", limit: 7) {
            // Between pages: new keys between the stable ones, deletes of those, and short TTLs.
            for _ in 0..<5 {
                let odd = String(format: "load/%04d", (round * 37 % 300) * 2 + 1)
                _ = try writer.send("POST", "/storage/\(odd)", json: #"{"value":1,"ttl":"5ms"}"#)
                if round % 3 == 0 { _ = try writer.send("DELETE", "/storage/\(odd)") }
                _ = try writer.send("POST", "/storage/\(stable[round % stable.count])", json: #"{"value":\#(round)}"#)
                round += 1
            }
        }
        #expect(listed == Self.bytewise(listed) && Set(listed).count == listed.count, "in order, no key twice")
        #expect(Set(stable).isSubset(of: Set(listed)), "every key that existed throughout is listed")
        // Once the short TTLs have run out, none of those keys is listed any more.
        Thread.sleep(forTimeInterval: 0.05)
        #expect(try Self.listAll(http, prefix: "load/", limit: 1000) == stable)
    }

    @Test("Redis: paging by SCAN while keys are written lists every key that exists throughout at least once")
    func redisPagingUnderWrites() throws {
        let stack = try HTTPStack(on: .redis)
        let http = stack.client(), writer = stack.client()
        let stable = (0..<300).map { "load/\($0)" }
        for key in stable { #expect(try http.send("POST", "/storage/\(key)", json: #"{"value":0}"#).status == 202) }
        var round = 0
        let listed = try Self.listAll(http, prefix: "load/", limit: 7) {
            _ = try writer.send("POST", "/storage/load/new\(round)", json: #"{"value":1,"ttl":"5ms"}"#)
            round += 1
        }
        #expect(Set(stable).isSubset(of: Set(listed)))
        Thread.sleep(forTimeInterval: 0.05)
        #expect(Set(try Self.listAll(http, prefix: "load/", limit: 1000)) == Set(stable))
        // One key a page: SCAN's buckets that hold more are split, and nothing is lost.
        let single = try Self.listAll(http, prefix: "load/", limit: 1)
        #expect(Set(single) == Set(stable), "\(Set(stable).subtracting(single).sorted())")
        let bad = try http.send("GET", "/storage/?prefix=load/&after=load/1")
        #expect(bad.status == 400 && bad.text.contains("after takes the next of the page before"), "\(bad)")
    }

    @Test("WebSocket list: the same page in a list message, with id; errors keep the connection", arguments: StoreKind.allCases)
    func webSocketList(store: StoreKind) async throws {
        let stack = try HTTPStack(wsArguments: [], on: store)
        let ws = try await TestWebSocket.connect(stack.webSocketURL)
        for key in ["w/a", "w/b", "w/c"] { try await ws.send(type: "set", #"{"key":"\#(key)","value":"\#(key)"}"#) }
        try await ws.send(#"{"type":"list","id":7,"payload":{"prefix":"w/","values":true}}"#)
        let reply = try await ws.next()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any], "\(reply)")
        #expect(object["type"] as? String == "list" && object["id"] as? Int == 7, "\(reply)")
        let page = try Page(object: try #require(object["payload"] as? [String: Any]))
        #expect(page.keys == ["w/a", "w/b", "w/c"] && page.items.map { $0["value"] as? String } == ["w/a", "w/b", "w/c"], "\(reply)")

        var keys: [String] = [], after: String?
        repeat {
            let afterField = after.map { #","after":\#(String(decoding: JSONSerialization.quoted($0), as: UTF8.self))"# } ?? ""
            try await ws.send(type: "list", #"{"prefix":"w/","limit":1\#(afterField)}"#)
            let text = try await ws.next()
            let message = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
            let page = try Page(object: try #require(message["payload"] as? [String: Any], "\(text)"))
            keys += page.keys
            after = page.next
        } while after != nil && keys.count < 10
        #expect(Set(keys) == ["w/a", "w/b", "w/c"])

        try await ws.send(type: "list", #"{"prefix":"w/","limit":5000}"#)
        #expect(try await ws.next().contains("limit must be an integer from 1 to 1000"))
        try await ws.send(type: "list", #"{"limit":5}"#)
        #expect(try await ws.next().contains("payload.prefix must be a string"))
        try await ws.send(type: "get", #"{"key":"w/a"}"#)
        #expect(try await ws.next() == #"{"type":"value","payload":{"key":"w/a","value":"w/a"}}"#)
        await ws.close()
    }

    @Test("with access rules a listing shows only what the token may read, over HTTP and WebSocket; a prefix with nothing readable is refused", arguments: StoreKind.allCases)
    func listingWithAccessRules(on kind: StoreKind) async throws {
        let file = try AccessControlTests.AccessFile()
        let stack = try HTTPStack(fcgiArguments: ["--access-file", file.path], wsArguments: ["--access-file", file.path], on: kind)
        let http = stack.client()
        let admin = ["Authorization": "Bearer \(file.admin)"], reader = ["Authorization": "Bearer \(file.reader)"]
        for key in ["app/a", "app/secret/s", "app/z", "other/o", "public/p"] {
            #expect(try http.send("POST", "/storage/\(key)", body: Array(#"{"value":1}"#.utf8), headers: admin).status == 202)
        }
        let all = try Page(try http.send("GET", "/storage/?prefix=&limit=1000", headers: admin))
        #expect(Set(all.keys) == ["app/a", "app/secret/s", "app/z", "other/o", "public/p"])
        // The reader may read app/ except app/secret/.
        let shown = try Page(try http.send("GET", "/storage/?prefix=app/&limit=1000", headers: reader))
        #expect(Set(shown.keys) == ["app/a", "app/z"], "\(shown.keys)")
        #expect(Set(try Page(try http.send("GET", "/storage/?prefix=&limit=1000", headers: reader)).keys) == ["app/a", "app/z"])
        let secret = try http.send("GET", "/storage/?prefix=app/secret/", headers: reader)
        #expect(secret.status == 403 && secret.text.contains("reader may not read any key under prefix"), "\(secret)")
        // Without a token only public/ can be read.
        #expect(try http.send("GET", "/storage/?prefix=app/").status == 401)
        #expect(try Page(try http.send("GET", "/storage/?prefix=p")).keys == ["public/p"])

        let ws = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer \(file.reader)")])
        try await ws.send(#"{"type":"list","id":1,"payload":{"prefix":"app/"}}"#)
        #expect(try await ws.next() == #"{"type":"list","id":1,"payload":{"keys":["app/a","app/z"],"next":null\#(kind == .kvStored ? ",\"revision\":5" : "")}}"#)
        try await ws.send(type: "list", #"{"prefix":"other/"}"#)
        #expect(try await ws.next() == #"{"type":"error","code":"forbidden","payload":"forbidden: reader may not read any key under prefix \"other/\""}"#)
        await ws.close()
    }
}

extension JSONSerialization {
    /// `text` as a JSON string literal.
    static func quoted(_ text: String) -> [UInt8] {
        (try? data(withJSONObject: [text], options: [.fragmentsAllowed])).map { Array($0.dropFirst().dropLast()) } ?? []
    }
}
