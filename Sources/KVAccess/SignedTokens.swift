import ExtrasBase64
import JWTKit
import KVCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Signed tokens (JWTs) an application's backend mints for its clients, verified with the keys
/// of the access file: HS256 (a shared secret), EdDSA (Ed25519) and ES256 (P-256) public keys.
///
/// jwt-kit checks the signature with the key the token's `kid` names (or the only key); it
/// picks the algorithm from the key, never from the token's header, so `alg: none` or an
/// HS256 token signed with a public key cannot pass. The claims are then read by this
/// project's own strict JSON reader, with the same rules parser as the access file, and the
/// times are checked against the injected clock (not jwt-kit's, which reads the system's).
struct SignedTokens: Sendable {
    let keys: JWTKeyCollection
    let keyCount: Int
    /// `iss` and `aud` a token must carry, when the file sets them.
    let issuer: String?
    let audience: String?

    /// What jwt-kit decodes: nothing, the claims are read below.
    struct SignatureOnly: JWTPayload {
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// Whether a bearer token is a JWT (three base64url parts) rather than a static token.
    static func looksSigned(_ token: String) -> Bool {
        var text = token
        return text.withUTF8 { bytes in
            var dots = 0
            for byte in bytes where byte == UInt8(ascii: ".") { dots += 1 }
            return dots == 2
        }
    }

    /// The identity a JWT grants, or why it grants none.
    func verify(_ token: String, now: Int64) async -> Authentication {
        do {
            _ = try await keys.verify(token, as: SignatureOnly.self)
        } catch {
            return .refused("the token's signature does not verify with any key of the access file, or the token is malformed")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            let payload = try? Base64.decode(string: String(parts[1]), options: [.base64UrlAlphabet, .omitPaddingCharacter])
        else { return .refused("the token is malformed") }
        let identity: Identity
        do throws(AccessFileError) {
            identity = try claims(payload)
        } catch {
            return .refused("the token's claims are invalid: \(error.message)")
        }
        if let refusal = identity.timeRefusal(now: now) { return .refused(refusal) }
        return .identity(identity)
    }

    /// Reads `sub`, `exp` (required), `nbf`, `iss`, `aud` and the `kv` rules.
    func claims(_ payload: [UInt8]) throws(AccessFileError) -> Identity {
        let document: JSONDocument
        switch JSONReader(maxDepth: 16, recordDepth: 4).readLocated(payload) {
        case .success(let read): document = read
        case .failure(let failure): throw AccessFileError(failure.error.message)
        }
        let root = document.root
        guard root.kind == .object else { throw AccessFileError("the payload is not a JSON object") }
        guard let exp = root[member: "exp"] else { throw AccessFileError("exp is required: KvServer accepts only tokens that expire") }
        let expiresAt = try Self.unixMilliseconds(exp, in: document, name: "exp")
        let notBefore = try root[member: "nbf"].map { value throws(AccessFileError) in try Self.unixMilliseconds(value, in: document, name: "nbf") }
        if let issuer {
            guard let iss = root[member: "iss"], document.string(iss) == issuer else { throw AccessFileError("iss is not \(issuer)") }
        }
        if let audience {
            let listed: [String]
            if let aud = root[member: "aud"], let one = document.string(aud) {
                listed = [one]
            } else {
                listed = (root[member: "aud"]?.elements ?? []).compactMap { document.string($0) }
            }
            guard listed.contains(audience) else { throw AccessFileError("aud does not include \(audience)") }
        }
        guard let kv = root[member: "kv"] else { throw AccessFileError("the kv claim (the token's rules) is missing") }
        let subject = root[member: "sub"].flatMap { document.string($0) } ?? "-"
        return Identity(kind: .jwt, id: "jwt:" + String(subject.prefix(200)), rules: try AccessRules.parse(kv, in: document, at: "kv"),
                        notBefore: notBefore, expiresAt: expiresAt)
    }

    /// A NumericDate (seconds since the epoch, possibly fractional) in milliseconds.
    private static func unixMilliseconds(_ value: JSONValue, in document: JSONDocument, name: String) throws(AccessFileError) -> Int64 {
        guard let text = document.numberText(value), let seconds = Double(String(decoding: text, as: UTF8.self)),
            seconds.isFinite, seconds >= 0, seconds < 1e13
        else { throw AccessFileError("\(name) must be a number of seconds since 1970") }
        return Int64(seconds * 1000)
    }

    /// The `jwt` section of the access file: `{"issuer"?, "audience"?, "keys": [...]}`.
    static func parse(_ value: JSONValue, in document: JSONDocument) async throws(AccessFileError) -> SignedTokens {
        guard value.kind == .object, let members = value.members else {
            throw AccessFileError("jwt must be an object with keys (and optionally issuer and audience)", at: value.range.lowerBound)
        }
        for member in members where !["keys", "issuer", "audience"].contains(member.name) {
            throw AccessFileError("jwt.\(member.name): unknown member; use keys, issuer, audience", at: member.value.range.lowerBound)
        }
        func text(_ name: String) throws(AccessFileError) -> String? {
            guard let member = value[member: name] else { return nil }
            guard let string = document.string(member) else { throw AccessFileError("jwt.\(name) must be a string", at: member.range.lowerBound) }
            return string
        }
        let issuer = try text("issuer")
        let audience = try text("audience")
        guard let list = value[member: "keys"], let elements = list.elements, !elements.isEmpty else {
            throw AccessFileError("jwt.keys must be a non-empty array of keys", at: value.range.lowerBound)
        }
        let keys = JWTKeyCollection()
        var kids = Set<String>()
        for (index, element) in elements.enumerated() {
            let path = "jwt.keys[\(index)]"
            guard element.kind == .object, let members = element.members else {
                throw AccessFileError("\(path) must be an object {kid, alg, secret or publicKey}", at: element.range.lowerBound)
            }
            var fields: [String: String] = [:]
            for member in members {
                guard ["kid", "alg", "secret", "publicKey"].contains(member.name) else {
                    throw AccessFileError("\(path).\(member.name): unknown member; use kid, alg, secret, publicKey", at: member.value.range.lowerBound)
                }
                guard let string = document.string(member.value) else {
                    throw AccessFileError("\(path).\(member.name) must be a string", at: member.value.range.lowerBound)
                }
                fields[member.name] = string
            }
            let at = element.range.lowerBound
            let kid = fields["kid"]
            if elements.count > 1, kid == nil { throw AccessFileError("\(path): kid is required when there is more than one key", at: at) }
            if let kid, !kids.insert(kid).inserted { throw AccessFileError("\(path): kid \(kid) is listed twice", at: at) }
            let identifier = kid.map { JWKIdentifier(string: $0) }
            switch fields["alg"] {
            case "HS256":
                guard let secret = fields["secret"], secret.utf8.count >= 32 else {
                    throw AccessFileError("\(path): an HS256 key needs a secret of at least 32 bytes (RFC 7518 §3.2)", at: at)
                }
                await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: identifier)
            case "EdDSA":
                guard let text = fields["publicKey"] else { throw AccessFileError("\(path): an EdDSA key needs publicKey", at: at) }
                do {
                    let key = text.hasPrefix("-----BEGIN") ? try EdDSA.PublicKey(pem: text) : try EdDSA.PublicKey(x: text, curve: .ed25519)
                    await keys.add(eddsa: key, kid: identifier)
                } catch {
                    throw AccessFileError("\(path).publicKey is not an Ed25519 public key (PEM, or the base64url x of a JWK)", at: at)
                }
            case "ES256":
                guard let text = fields["publicKey"] else { throw AccessFileError("\(path): an ES256 key needs publicKey", at: at) }
                do {
                    await keys.add(ecdsa: try ES256PublicKey(pem: text), kid: identifier)
                } catch {
                    throw AccessFileError("\(path).publicKey is not a P-256 public key in PEM", at: at)
                }
            default:
                throw AccessFileError("\(path).alg must be HS256, EdDSA or ES256", at: at)
            }
        }
        return SignedTokens(keys: keys, keyCount: elements.count, issuer: issuer, audience: audience)
    }
}
