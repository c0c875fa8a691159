import Foundation
import KVAccess
import NIOWebSocket
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Access control through the real nginx, kv-fcgi and kv-ws, on kv-stored and on
/// redis-server (docs/access.md): tokens from an access file, JWTs, the three ways a WebSocket
/// presents a token, reload, and expiry in the middle of a connection.
@Suite("Access control", .serialized)
struct AccessControlTests {
    static let secret = "the app backend's HS256 secret, 32 bytes or more"

    /// An access file in its own directory, rewritten by `write`.
    final class AccessFile {
        let dir: TempDirectory
        var path: String { dir.file("access.json") }
        let admin = BearerToken.mint(), reader = BearerToken.mint(), writer = BearerToken.mint(), watcher = BearerToken.mint()

        init() throws {
            dir = try TempDirectory()
            try write(watcherListed: true)
        }

        func entry(_ id: String, _ token: String, _ rules: String) -> String {
            #"{"id": "\#(id)", "sha256": "\#(BearerToken.hashHex(token))", "rules": \#(rules)}"#
        }

        func write(watcherListed: Bool, extra: [String] = []) throws {
            var tokens = [
                entry("admin", admin, #"{"all": [""]}"#),
                entry("reader", reader, #"{"read": ["app/"], "except": {"read": ["app/secret/"]}}"#),
                entry("writer", writer, #"{"read": ["app/"], "write": ["app/user/42/"], "delete": ["app/user/42/"]}"#),
            ]
            if watcherListed { tokens.append(entry("watcher", watcher, #"{"read": ["app/"], "subscribe": ["app/"]}"#)) }
            tokens += extra
            try write("""
                {"anonymous": {"read": ["public/"]},
                 "tokens": [
                 \(tokens.joined(separator: ",\n "))
                 ],
                 "jwt": {"keys": [{"kid": "app", "alg": "HS256", "secret": "\(AccessControlTests.secret)"}]}}
                """)
        }

        func write(_ text: String) throws {
            // Written beside and renamed, as an editor or config management does.
            try text.write(toFile: path + ".new", atomically: false, encoding: .utf8)
            rename(path + ".new", path)
        }
    }

    private func stack(_ file: AccessFile, on kind: StoreKind) throws -> HTTPStack {
        try HTTPStack(fcgiArguments: ["--access-file", file.path], wsArguments: ["--access-file", file.path], on: kind)
    }

    private func bearer(_ token: String) -> [String: String] { ["Authorization": "Bearer \(token)"] }

    @Test("HTTP: an admin writes anything, a read-only token only reads its prefix, a scoped writer writes only its own; refusals store and reveal nothing", arguments: StoreKind.allCases)
    func httpRules(on kind: StoreKind) throws {
        let file = try AccessFile()
        let stack = try stack(file, on: kind)
        let http = stack.client()
        #expect(try http.send("POST", "/storage/app/a", body: Array(#"{"value": 1}"#.utf8), headers: bearer(file.admin)).status == 202)
        #expect(try http.send("POST", "/storage/app/secret/s", body: Array(#"{"value": "s"}"#.utf8), headers: bearer(file.admin)).status == 202)

        let read = try http.send("GET", "/storage/app/a", headers: bearer(file.reader))
        #expect(read.status == 200 && read.text == #"{"value":1}"#, "\(read)")
        // The same key by its percent-encoded name: matched after the one decoding.
        #expect(try http.send("GET", "/storage/app%2Fa", headers: bearer(file.reader)).status == 200)

        let write = try http.send("POST", "/storage/app/a", body: Array(#"{"value": 2}"#.utf8), headers: bearer(file.reader))
        #expect(write.status == 403, "\(write)")
        #expect(write.text == #"{"error":"forbidden: reader may not write key \"app/a\""}"#, "\(write)")
        #expect(try stack.storedValue("app/a") == "1", "a refused write changed the value")
        #expect(try http.send("DELETE", "/storage/app/a", headers: bearer(file.reader)).status == 403)
        #expect(try stack.storedValue("app/a") == "1")

        // An excepted prefix: the same 403 whether the key exists or not, HEAD and conditional GET included.
        for target in ["/storage/app/secret/s", "/storage/app/secret/missing", "/storage/app/%73ecret/s"] {
            let refused = try http.send("GET", target, headers: bearer(file.reader))
            #expect(refused.status == 403 && refused.headers["www-authenticate"]?.contains("insufficient_scope") == true, "\(target) \(refused)")
            #expect(try http.send("HEAD", target, headers: bearer(file.reader)).status == 403)
            #expect(try http.send("GET", target, headers: bearer(file.reader).merging(["If-None-Match": "*"]) { a, _ in a }).status == 403)
        }

        #expect(try http.send("POST", "/storage/app/user/42/p", body: Array(#"{"value": "mine"}"#.utf8), headers: bearer(file.writer)).status == 202)
        #expect(try http.send("POST", "/storage/app/user/43/p", body: Array(#"{"value": "theirs"}"#.utf8), headers: bearer(file.writer)).status == 403)
        #expect(try http.send("GET", "/storage/app/user/43/p", headers: bearer(file.admin)).status == 204, "a refused write was stored")
        #expect(try http.send("DELETE", "/storage/app/user/42/p", headers: bearer(file.writer)).status == 200)

        // No credentials: the anonymous rules, else 401 with a Bearer challenge.
        #expect(try http.send("GET", "/storage/public/none").status == 204)
        let anonymous = try http.send("GET", "/storage/app/a")
        #expect(anonymous.status == 401 && anonymous.headers["www-authenticate"] == #"Bearer realm="kvserver""#, "\(anonymous)")
        let unknown = try http.send("GET", "/storage/public/none", headers: bearer("kv_not-a-token"))
        #expect(unknown.status == 401 && unknown.headers["www-authenticate"]?.contains(#"error="invalid_token""#) == true, "\(unknown)")
        #expect(unknown.text.contains("not known"))
        #expect(try http.send("GET", "/storage/app/a", headers: ["Authorization": "Basic YTpi"]).status == 401)

        // Counted by daemon, operation and status; logged with the token's id, never the token.
        #expect(try ObservabilityTests.metric(stack, "kv-fcgi", #"kv_fcgi_access_refused_total{operation="POST",status="403"}"#) >= 2)
        #expect(try ObservabilityTests.metric(stack, "kv-fcgi", #"kv_fcgi_access_refused_total{operation="GET",status="401"}"#) >= 2)
        let log = stack.fcgi?.log ?? ""
        #expect(log.contains("request refused") && log.contains("kv.identity=reader"))
        for token in [file.admin, file.reader, file.writer] { #expect(!log.contains(token), "a token reached the log") }
    }

    @Test("WebSocket: a token from the Authorization header, a kv.bearer protocol offer or an auth message; refused operations are errors and the connection stays", arguments: StoreKind.allCases)
    func webSocketWays(on kind: StoreKind) async throws {
        let file = try AccessFile()
        let stack = try stack(file, on: kind)
        #expect(try stack.client().send("POST", "/storage/app/k", body: Array(#"{"value": "v"}"#.utf8), headers: bearer(file.admin)).status == 202)

        // 1. The Authorization header (native clients).
        let header = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer \(file.reader)")])
        try await header.send(type: "get", #"{"key":"app/k"}"#)
        #expect(try await header.next() == #"{"type":"value","payload":{"key":"app/k","value":"v"}}"#)
        try await header.send(#"{"type":"set","id":7,"payload":{"key":"app/k","value":"w"}}"#)
        #expect(try await header.next() == #"{"type":"error","id":7,"code":"forbidden","payload":"forbidden: reader may not write key \"app/k\""}"#)
        try await header.send(type: "subscribe", #"{"key":"app/k"}"#)
        #expect(try await header.next() == #"{"type":"error","code":"forbidden","payload":"forbidden: reader may not subscribe key \"app/k\""}"#)
        try await header.send(type: "get", #"{"key":"app/k"}"#)
        #expect(try await header.next() == #"{"type":"value","payload":{"key":"app/k","value":"v"}}"#, "the connection did not stay usable")
        #expect(try stack.storedValue("app/k") == "\"v\"")
        await header.close()

        // 2. A subprotocol offer (browsers): the server answers with kv.v1, never the token.
        let head = try RawWebSocket.handshakeResponse(port: stack.port, headers: ["Sec-WebSocket-Protocol: kv.v1, kv.bearer.\(file.watcher)"])
        #expect(head.hasPrefix("HTTP/1.1 101") && head.contains("Sec-WebSocket-Protocol: kv.v1\r\n") && !head.contains(file.watcher), "\(head)")
        let offered = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Sec-WebSocket-Protocol", "kv.v1, kv.bearer.\(file.watcher)")])
        try await offered.send(#"{"type":"subscribe","id":"s","payload":{"key":"app/k"}}"#)
        #expect(try await offered.next().hasPrefix(#"{"type":"ok","id":"s""#))
        try await offered.send(type: "subscribe", #"{"key":"other/k"}"#)
        #expect(try await offered.next().contains("watcher may not subscribe key \\\"other/k\\\""))
        #expect(try stack.client().send("POST", "/storage/app/k", body: Array(#"{"value": "changed"}"#.utf8), headers: bearer(file.admin)).status == 202)
        let change = try await offered.next()
        #expect(change.hasPrefix(#"{"type":"value","rev":"#) && change.hasSuffix(#""payload":{"key":"app/k","value":"changed"}}"#), "\(change)")
        await offered.close()

        // 3. An auth message first: before it, only the anonymous rules.
        let message = try await TestWebSocket.connect(stack.webSocketURL)
        try await message.send(type: "get", #"{"key":"app/k"}"#)
        #expect(try await message.next().contains(#""code":"unauthorized""#))
        try await message.send(#"{"type":"auth","id":1,"payload":{"token":"\#(file.writer)"}}"#)
        try await message.send(type: "set", #"{"key":"app/user/42/x","value":1}"#)
        try await message.send(type: "get", #"{"key":"app/user/42/x"}"#)
        #expect(try await message.next() == #"{"type":"authenticated","id":1,"payload":{"identity":"writer"}}"#)
        #expect(try await message.next() == #"{"type":"value","payload":{"key":"app/user/42/x","value":1}}"#, "a message after auth was served before it")
        try await message.send(#"{"type":"auth","payload":{"token":"kv_wrong"}}"#)
        #expect(try await message.next().contains("unauthorized: the token is not known"))
        try await message.send(type: "get", #"{"key":"app/user/42/x"}"#)
        #expect(try await message.next().contains(#""value":1"#), "a refused auth took the identity away")
        await message.close()

        // Bad credentials at the upgrade: 401, no WebSocket.
        let refused = try RawWebSocket.handshakeResponse(port: stack.port, headers: ["Authorization: Bearer kv_wrong"])
        #expect(refused.hasPrefix("HTTP/1.1 401") && refused.contains("WWW-Authenticate: Bearer"), "\(refused)")
        let refusedOffer = try RawWebSocket.handshakeResponse(port: stack.port, headers: ["Sec-WebSocket-Protocol: kv.v1, kv.bearer.kv_wrong"])
        #expect(refusedOffer.hasPrefix("HTTP/1.1 401"), "\(refusedOffer)")
        #expect(try ObservabilityTests.metric(stack, "kv-ws", #"kv_ws_access_refused_total{operation="connect",status="401"}"#) == 2)
        #expect(try ObservabilityTests.metric(stack, "kv-ws", #"kv_ws_access_refused_total{operation="subscribe",status="403"}"#) == 2)
    }

    @Test("reload: SIGHUP adds a token and revokes one while its subscriber is connected (closed with 4401), narrows another's rules (4403); a bad file keeps the old rules", arguments: StoreKind.allCases)
    func reload(on kind: StoreKind) async throws {
        let file = try AccessFile()
        let narrowed = BearerToken.mint()
        try file.write(watcherListed: true, extra: [file.entry("narrowed", narrowed, #"{"read": ["app/"], "subscribe": ["app/"]}"#)])
        let stack = try stack(file, on: kind)
        let narrowedSubscriber = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer \(narrowed)")])
        try await narrowedSubscriber.send(#"{"type":"subscribe","id":1,"payload":{"key":"app/k"}}"#)
        #expect(try await narrowedSubscriber.next().hasPrefix(#"{"type":"ok""#))
        let http = stack.client()
        let newcomer = BearerToken.mint()
        #expect(try http.send("GET", "/storage/app/k", headers: bearer(newcomer)).status == 401)

        let subscriber = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer \(file.watcher)")])
        try await subscriber.send(#"{"type":"subscribe","id":1,"payload":{"key":"app/k"}}"#)
        #expect(try await subscriber.next().hasPrefix(#"{"type":"ok""#))
        let bystander = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Authorization", "Bearer \(file.reader)")])

        try file.write(watcherListed: false, extra: [
            file.entry("newcomer", newcomer, #"{"read": ["app/"]}"#), file.entry("narrowed", narrowed, #"{"read": ["app/"], "subscribe": ["app/other/"]}"#),
        ])
        for daemon in [stack.fcgi, stack.ws] { kill(daemon?.process.processIdentifier ?? 0, SIGHUP) }
        #expect(await subscriber.closed(within: 10) == .unknown(4401), "the revoked token's subscriber was not closed")
        #expect(await narrowedSubscriber.closed(within: 10) == .unknown(4403), "a subscriber outside its new rules was not closed")
        #expect(eventually(within: 10) { (try? http.send("GET", "/storage/app/k", headers: bearer(newcomer)))?.status == 204 })
        #expect(try http.send("GET", "/storage/app/k", headers: bearer(file.watcher)).status == 401)
        try await bystander.send(type: "get", #"{"key":"app/k"}"#)
        #expect(try await bystander.next() == #"{"type":"no-value","payload":{"key":"app/k"}}"#, "a connection whose token stays was disturbed")
        await bystander.close()

        // A file with a mistake on line 3 is refused, named in the log, and changes nothing.
        try file.write("{\"tokens\": [\n\n{\"id\": \"x\", \"sha256\": \"nothex\", \"rules\": {}}]}")
        for daemon in [stack.fcgi, stack.ws] { kill(daemon?.process.processIdentifier ?? 0, SIGHUP) }
        #expect(eventually(within: 10) {
            [stack.fcgi, stack.ws].allSatisfy { ($0?.log ?? "").contains("access file not reloaded") && ($0?.log ?? "").contains("line 3: tokens[0].sha256") }
        }, "\(stack.ws?.log.suffix(2000) ?? "")")
        #expect(try http.send("GET", "/storage/app/k", headers: bearer(newcomer)).status == 204, "the old rules did not stay in force")
    }

    @Test("JWT: an app's HS256 token grants its claimed prefixes over HTTP and WebSocket, and its subscriber is closed with 4401 when it expires", arguments: StoreKind.allCases)
    func expiringJWT(on kind: StoreKind) async throws {
        let file = try AccessFile()
        let stack = try stack(file, on: kind)
        let http = stack.client()
        let now = Int64(Date().timeIntervalSince1970)
        // Far enough ahead for the steps below on a loaded machine; the close is awaited, not timed.
        let claims = TokenMinting.Claims(sub: "user-42", exp: now + 10, kv: .init(read: ["app/"], write: ["app/user/42/"], subscribe: ["app/user/42/"]))
        let token = try await TokenMinting.sign(claims, with: .hs256(secret: Self.secret), kid: "app")
        #expect(try http.send("POST", "/storage/app/user/42/p", body: Array(#"{"value": 1}"#.utf8), headers: bearer(token)).status == 202)
        #expect(try http.send("POST", "/storage/app/user/7/p", body: Array(#"{"value": 1}"#.utf8), headers: bearer(token)).status == 403)

        let socket = try await TestWebSocket.connect(stack.webSocketURL, headers: [("Sec-WebSocket-Protocol", "kv.v1, kv.bearer.\(token)")])
        try await socket.send(#"{"type":"subscribe","id":1,"payload":{"key":"app/user/42/p"}}"#)
        #expect(try await socket.next().hasPrefix(#"{"type":"ok""#))
        #expect(await socket.closed(within: 40) == .unknown(4401), "the subscriber outlived its token")
        let log = stack.ws?.log ?? ""
        #expect(log.contains("the token expired") && log.contains("kv.identity=jwt:user-42") && !log.contains(token))

        let expired = try http.send("GET", "/storage/app/user/42/p", headers: bearer(token))
        #expect(expired.status == 401 && expired.text.contains("the token expired"), "\(expired)")
    }
}
