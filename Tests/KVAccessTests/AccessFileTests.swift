import KVAccess
import KVCore
import Testing

/// The access file: what reads, and every mistake refused with its line.
@Suite struct AccessFileTests {
    private func failure(_ text: String) async -> AccessFileError? {
        do {
            _ = try await parse(text)
            return nil
        } catch let error as AccessFileError {
            return error
        } catch {
            Issue.record("unexpected \(error)")
            return nil
        }
    }

    @Test func staticTokensAndAnonymous() async throws {
        let admin = BearerToken.mint()
        let reader = BearerToken.mint()
        #expect(admin.hasPrefix("kv_") && admin.utf8.count == 46 && admin != reader)
        let policy = try await parse("""
            {"anonymous": {"read": ["public/"]},
             "tokens": [{"id": "admin", "sha256": "\(BearerToken.hashHex(admin))", "rules": {"all": [""]}},
                        {"id": "reader", "sha256": "\(BearerToken.hashHex(reader).uppercased())", "rules": {"read": ["app/"]}}]}
            """)
        #expect(!policy.isOpen)
        guard case .identity(let a)? = policy.authenticateCached(.bearer(admin), now: 0),
            case .identity(let r)? = policy.authenticateCached(.bearer(reader), now: 0),
            case .identity(let anonymous)? = policy.authenticateCached(.none, now: 0)
        else {
            Issue.record("an identity is missing")
            return
        }
        #expect(a.id == "admin" && a.kind == .token && a.allows(.delete, key: Array("x".utf8)))
        #expect(r.id == "reader" && r.allows(.read, key: Array("app/1".utf8)) && !r.allows(.write, key: Array("app/1".utf8)))
        #expect(anonymous.kind == .anonymous && anonymous.allows(.read, key: Array("public/x".utf8)) && !anonymous.allows(.read, key: Array("app/1".utf8)))
        #expect(policy.authenticateCached(.bearer("kv_unknown"), now: 0) == .refused("the token is not known (or was revoked)"))
        #expect(policy.authenticateCached(.bearer(String(admin.dropLast())), now: 0) != .identity(a))
    }

    @Test func withoutAnonymousNoCredentialsIsRefused() async throws {
        let policy = try await parse(#"{"tokens": []}"#)
        guard case .refused? = policy.authenticateCached(.none, now: 0) else {
            Issue.record("a request without credentials was let in")
            return
        }
    }

    @Test func theOpenServiceLetsEveryoneDoEverything() async {
        let policy = AccessPolicy.open
        #expect(policy.isOpen)
        #expect(policy.authenticateCached(.none, now: 0) == .identity(.open))
        #expect(policy.authenticateCached(.bearer("anything"), now: 0) == .identity(.open))
        // An nginx auth_basic login in front of an open service keeps working.
        #expect(policy.authenticateCached(Credential.fromAuthorization("Basic YWxpY2U6cHc="), now: 0) == .identity(.open))
    }

    @Test func authorizationHeaders() async {
        #expect(Credential.fromAuthorization(nil) == .none)
        #expect(Credential.fromAuthorization("Bearer abc") == .bearer("abc"))
        #expect(Credential.fromAuthorization("bearer  abc ") == .bearer("abc"))
        #expect(Credential.fromAuthorization("\tBEARER\tabc") == .bearer("abc"))
        for bad in ["Bearer a b", "Bearerabc", "Bearer", "Bearer ", "", "  ", "Bearer\u{e9} abc", "Beare abc"] {
            guard case .malformed = Credential.fromAuthorization(bad) else {
                Issue.record("\(bad) was taken for a bearer token")
                continue
            }
        }
        guard case .malformed = Credential.fromAuthorization("Basic dXNlcjpwdw==") else {
            Issue.record("Basic was taken for a bearer token")
            return
        }
        guard case .malformed = Credential.fromAuthorization("Bearer "), case .malformed = Credential.token(String(repeating: "a", count: (16 << 10) + 1)) else {
            Issue.record("an empty or oversize token was accepted")
            return
        }
    }

    @Test func mistakesNameTheirLine() async {
        let hash = BearerToken.hashHex("x")
        let cases: [(String, Int, String)] = [
            ("{\n\"tokens\": [\n  {\"id\": \"a\", \"sha256\": \"\(hash)\", \"rules\": {\"read\": [\"\"]},}\n]}", 3, "invalid JSON"),
            ("{\n\"tokens\": [\n  {\"id\": \"a\",\n   \"sha256\": \"abc\", \"rules\": {}}]}", 3, "sha256"),
            ("{\"tokens\": [\n{\"id\": \"a\", \"sha256\": \"\(hash)\",\n \"rules\": {\"raed\": [\"\"]}}]}", 3, "unknown operation"),
            ("{\"tokens\": [{\"id\": \"a\", \"sha256\": \"\(hash)\", \"rules\": {}},\n{\"id\": \"a\", \"sha256\": \"\(BearerToken.hashHex("y"))\", \"rules\": {}}]}", 2, "used twice"),
            ("{\"tokens\": [{\"id\": \"a\", \"sha256\": \"\(hash)\", \"rules\": {}},\n{\"id\": \"b\", \"sha256\": \"\(hash)\", \"rules\": {}}]}", 2, "listed twice"),
            ("{\"anonymous\": {\"read\": \"app/\"}}", 1, "must be an array"),
            ("{\n\"anonymous\": {\"except\": {\"except\": {}}}}", 2, "own except"),
            ("{\n\n\"token\": []}", 3, "unknown member"),
            ("{\"tokens\": [{\"id\": \"a b\", \"sha256\": \"\(hash)\", \"rules\": {}}]}", 1, "visible characters"),
            ("{\"jwt\": {\"keys\": [{\"alg\": \"HS256\", \"secret\": \"short\"}]}}", 1, "32 bytes"),
            ("{\"jwt\": {\"keys\": [{\"alg\": \"none\"}]}}", 1, "HS256, EdDSA or ES256"),
            ("{\"jwt\": {\"keys\": [\n{\"alg\": \"EdDSA\", \"publicKey\": \"not a key\"}]}}", 2, "Ed25519"),
            ("{\"jwt\": {\"keys\": [\n{\"alg\": \"ES256\", \"publicKey\": \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\"}]}}", 2, "P-256"),
            ("[]", 1, "one JSON object"),
        ]
        for (text, line, words) in cases {
            let error = await failure(text)
            #expect(error?.line == line, "\(text)")
            #expect(error?.message.contains(words) == true, "\(error?.message ?? "accepted"): \(text)")
        }
    }
}
