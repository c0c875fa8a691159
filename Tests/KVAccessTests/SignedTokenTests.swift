import Crypto
import Foundation
import KVAccess
import KVCore
import NIOConcurrencyHelpers
import Testing

/// JWTs: the three algorithms, the kv claim, and the times against an injected clock.
@Suite struct SignedTokenTests {
    static let secret = "an HS256 secret of at least 32 bytes, shared with the app"
    static let now: Int64 = 1_800_000_000_000  // Unix ms, the injected clock

    private func claims(sub: String = "user-42", exp: Int64 = now / 1000 + 600, nbf: Int64? = nil, iss: String? = nil, aud: String? = nil,
                        kv: TokenMinting.Rules = .init(read: ["app/"], write: ["app/user/42/"])) -> TokenMinting.Claims {
        TokenMinting.Claims(sub: sub, exp: exp, nbf: nbf, iss: iss, aud: aud, kv: kv)
    }

    private func control(_ file: String, clock: NIOLockedValueBox<Int64> = NIOLockedValueBox(now)) async throws -> AccessControl {
        let policy = try await parse(file)
        return AccessControl(path: nil, policy: policy, now: { clock.withLockedValue { $0 } })
    }

    private static let hsFile = #"{"jwt": {"keys": [{"kid": "app", "alg": "HS256", "secret": "\#(secret)"}]}}"#

    @Test func hs256GrantsTheClaimedRules() async throws {
        let access = try await control(Self.hsFile)
        let token = try await TokenMinting.sign(self.claims(), with: .hs256(secret: Self.secret), kid: "app")
        guard case .identity(let identity) = await access.authenticate(.bearer(token)) else {
            Issue.record("a valid JWT was refused")
            return
        }
        #expect(identity.kind == .jwt && identity.id == "jwt:user-42" && identity.expiresAt == Self.now + 600_000)
        #expect(identity.allows(.read, key: Array("app/x".utf8)) && identity.allows(.write, key: Array("app/user/42/p".utf8)))
        #expect(!identity.allows(.write, key: Array("app/user/43/p".utf8)) && !identity.allows(.subscribe, key: Array("app/x".utf8)))
        // Verified once per policy: the second use is answered from the cache, still checked for time.
        #expect(access.policy.authenticateCached(.bearer(token), now: Self.now) == .identity(identity))
    }

    @Test func aWrongSecretATamperedPayloadAndAlgNoneAreRefused() async throws {
        let access = try await control(Self.hsFile)
        let forged = try await TokenMinting.sign(self.claims(), with: .hs256(secret: Self.secret + "!"), kid: "app")
        guard case .refused = await access.authenticate(.bearer(forged)) else {
            Issue.record("a JWT signed with another secret was accepted")
            return
        }
        let token = try await TokenMinting.sign(self.claims(), with: .hs256(secret: Self.secret), kid: "app")
        let parts = token.split(separator: ".").map(String.init)
        let widened = Data(#"{"sub":"user-42","exp":9999999999,"kv":{"all":[""]}}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        guard case .refused = await access.authenticate(.bearer([parts[0], widened, parts[2]].joined(separator: "."))) else {
            Issue.record("a JWT with a changed payload was accepted")
            return
        }
        let none = Data(#"{"alg":"none","typ":"JWT","kid":"app"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        guard case .refused = await access.authenticate(.bearer([none, widened, ""].joined(separator: "."))) else {
            Issue.record("alg none was accepted")
            return
        }
    }

    @Test func expiryAndNotBeforeFollowTheInjectedClock() async throws {
        let clock = NIOLockedValueBox(Self.now)
        let access = try await control(Self.hsFile, clock: clock)
        let token = try await TokenMinting.sign(self.claims(exp: Self.now / 1000 + 60, nbf: Self.now / 1000 + 10), with: .hs256(secret: Self.secret))
        #expect(await access.authenticate(.bearer(token)) == .refused("the token is not valid yet (nbf)"))
        clock.withLockedValue { $0 = Self.now + 10_000 }
        guard case .identity = await access.authenticate(.bearer(token)) else {
            Issue.record("a JWT inside its validity was refused")
            return
        }
        clock.withLockedValue { $0 = Self.now + 60_000 }
        #expect(await access.authenticate(.bearer(token)) == .refused("the token expired"))
    }

    @Test func claimsAreChecked() async throws {
        let access = try await control(#"{"jwt": {"issuer": "https://app.example", "audience": "kvserver", "keys": [{"alg": "HS256", "secret": "\#(Self.secret)"}]}}"#)
        func outcome(_ claims: TokenMinting.Claims) async throws -> Authentication {
            let token = try await TokenMinting.sign(claims, with: .hs256(secret: Self.secret))
            return await access.authenticate(.bearer(token))
        }
        guard case .identity = try await outcome(claims(iss: "https://app.example", aud: "kvserver")) else {
            Issue.record("matching iss and aud were refused")
            return
        }
        guard case .refused(let wrongIssuer) = try await outcome(claims(iss: "https://evil.example", aud: "kvserver")),
            case .refused(let noAudience) = try await outcome(claims(iss: "https://app.example"))
        else {
            Issue.record("a JWT with a wrong issuer or without the audience was accepted")
            return
        }
        #expect(wrongIssuer.contains("iss") && noAudience.contains("aud"))
    }

    @Test func eddsaAndES256PublicKeys() async throws {
        let ed = Curve25519.Signing.PrivateKey()
        let x = ed.publicKey.rawRepresentation.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let p256 = P256.Signing.PrivateKey()
        let pem = p256.publicKey.pemRepresentation.replacingOccurrences(of: "\n", with: "\\n")
        let access = try await control("""
            {"jwt": {"keys": [{"kid": "ed", "alg": "EdDSA", "publicKey": "\(x)"},
                              {"kid": "es", "alg": "ES256", "publicKey": "\(pem)"}]}}
            """)
        let edToken = try await TokenMinting.sign(self.claims(sub: "ed-user"), with: .eddsa(ed), kid: "ed")
        let esToken = try await TokenMinting.sign(self.claims(sub: "es-user"), with: .es256(p256), kid: "es")
        guard case .identity(let a) = await access.authenticate(.bearer(edToken)), case .identity(let b) = await access.authenticate(.bearer(esToken)) else {
            Issue.record("an EdDSA or ES256 JWT was refused")
            return
        }
        #expect(a.id == "jwt:ed-user" && b.id == "jwt:es-user")
        let stranger = try await TokenMinting.sign(self.claims(), with: .eddsa(Curve25519.Signing.PrivateKey()), kid: "ed")
        guard case .refused = await access.authenticate(.bearer(stranger)) else {
            Issue.record("a JWT signed by an unknown Ed25519 key was accepted")
            return
        }
    }

    @Test func aJWTWithoutExpOrValidKVIsRefused() async throws {
        let access = try await control(Self.hsFile)
        let hs = SymmetricKey(data: Array(Self.secret.utf8))
        for payload in [#"{"sub":"a","kv":{"read":[""]}}"#, #"{"sub":"a","exp":9999999999}"#, #"{"sub":"a","exp":9999999999,"kv":{"raed":[""]}}"#] {
            let header = #"{"alg":"HS256","typ":"JWT","kid":"app"}"#
            let input = [header, payload].map { Self.base64url(Data($0.utf8)) }.joined(separator: ".")
            let signature = Self.base64url(Data(HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: hs)))
            guard case .refused(let reason) = await access.authenticate(.bearer(input + "." + signature)) else {
                Issue.record("\(payload) was accepted")
                continue
            }
            #expect(reason.contains("exp") || reason.contains("kv"))
        }
    }

    static func base64url(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

@Suite struct RefusalRateLimitTests {
    @Test func atMostThePerSecondPassAndTheRestAreCounted() async {
        var limit = RateLimit(perSecond: 3)
        let second: UInt64 = 1_000_000_000
        #expect((0..<3).map { limit.admit(at: 5 + UInt64($0)).passes } == [true, true, true])
        #expect((0..<100).allSatisfy { _ in !limit.admit(at: 10).passes })
        let next = limit.admit(at: 5 + second)
        #expect(next.passes && next.heldBack == 100)
        #expect(limit.admit(at: 6 + second).heldBack == 0)
    }
}
