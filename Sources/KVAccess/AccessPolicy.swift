import KVCore
import NIOConcurrencyHelpers

/// One reading of the access file (or the open service when there is none): who may do what.
/// Immutable; a reload makes a new one, so a request sees one policy from start to end.
public final class AccessPolicy: Sendable {
    /// No access file: every request may do everything, as the seed API says.
    public let isOpen: Bool
    /// The identity of requests without credentials; nil refuses them (401).
    let anonymous: Identity?
    let tokens: TokenTable
    let signed: SignedTokens?
    /// JWTs already verified under this policy (their signature checked once, their times on
    /// every use). Bounded: when full it is emptied, which costs only re-verifications.
    private let verified = NIOLockedValueBox<[String: Identity]>([:])
    static let maxVerified = 4096

    /// Largest access file read (1,000 tokens with 10,000 rules are about 1 MiB).
    public static let maxFileBytes = 64 << 20

    public static let open = AccessPolicy(isOpen: true, anonymous: .open, tokens: TokenTable(), signed: nil)

    private init(isOpen: Bool, anonymous: Identity?, tokens: TokenTable, signed: SignedTokens?) {
        self.isOpen = isOpen
        self.anonymous = anonymous
        self.tokens = tokens
        self.signed = signed
    }

    /// For the log line at load and reload.
    public var summary: String {
        if isOpen { return "open: no access file, every client may read, write, delete and subscribe to every key" }
        return "\(tokens.count) tokens, \(signed?.keyCount ?? 0) JWT keys, anonymous access \(anonymous == nil ? "refused" : "by its rules")"
    }

    /// Who presents `credential`, when that needs no signature check (static tokens, none);
    /// nil for a JWT not verified yet under this policy (then `authenticate` is needed).
    public func authenticateCached(_ credential: Credential, now: Int64) -> Authentication? {
        // Open: whatever the request carries (an nginx `auth_basic` login, say) is not ours to judge.
        if isOpen { return .identity(.open) }
        switch credential {
        case .none:
            return anonymous.map { .identity($0) } ?? .refused("credentials are required: send Authorization: Bearer <token>")
        case .malformed(let reason):
            return .refused(reason)
        case .bearer(let token):
            guard SignedTokens.looksSigned(token) else {
                return tokens.identity(for: token).map { .identity($0) } ?? .refused("the token is not known (or was revoked)")
            }
            guard signed != nil else { return .refused("the token is a JWT, and the access file lists no JWT keys") }
            guard let identity = verified.withLockedValue({ $0[token] }) else { return nil }
            if let refusal = identity.timeRefusal(now: now) { return .refused(refusal) }
            return .identity(identity)
        }
    }

    /// Who presents `credential`: a JWT's signature is checked once per policy, then cached.
    public func authenticate(_ credential: Credential, now: Int64) async -> Authentication {
        if let known = authenticateCached(credential, now: now) { return known }
        guard case .bearer(let token) = credential, let signed else { return .refused("the token is not known") }
        let result = await signed.verify(token, now: now)
        if case .identity(let identity) = result {
            verified.withLockedValue { cache in
                if cache.count >= Self.maxVerified { cache.removeAll(keepingCapacity: true) }
                cache[token] = identity
            }
        }
        return result
    }

    /// Reads an access file's text (docs/access.md):
    ///
    ///     {"anonymous": {"read": ["public/"]},
    ///      "tokens": [{"id": "admin", "sha256": "<64 hex>", "rules": {"all": [""]}}],
    ///      "jwt": {"issuer": "…", "audience": "…", "keys": [{"kid": "app", "alg": "HS256", "secret": "…"}]}}
    public static func parse(_ bytes: [UInt8]) async throws(AccessFileError) -> AccessPolicy {
        do throws(AccessFileError) {
            return try await parseUnlocated(bytes)
        } catch {
            throw error.located(in: bytes)
        }
    }

    private static func parseUnlocated(_ bytes: [UInt8]) async throws(AccessFileError) -> AccessPolicy {
        guard bytes.count <= maxFileBytes else { throw AccessFileError("the file is \(bytes.count) bytes, more than \(maxFileBytes)") }
        let document: JSONDocument
        switch JSONReader(maxDepth: 16, recordDepth: 6).readLocated(bytes) {
        case .success(let read): document = read
        case .failure(let failure): throw AccessFileError(failure.error.message, at: failure.offset)
        }
        guard document.root.kind == .object, let members = document.root.members else {
            throw AccessFileError("the file must hold one JSON object with tokens, anonymous and jwt", at: 0)
        }
        for member in members where !["anonymous", "tokens", "jwt"].contains(member.name) {
            throw AccessFileError("\(member.name): unknown member; use tokens, anonymous, jwt", at: member.value.range.lowerBound)
        }
        let anonymous = try document.root[member: "anonymous"].map { value throws(AccessFileError) in
            Identity(kind: .anonymous, id: "anonymous", rules: try AccessRules.parse(value, in: document, at: "anonymous"))
        }
        var tokens = TokenTable()
        if let list = document.root[member: "tokens"] {
            guard let elements = list.elements else { throw AccessFileError("tokens must be an array", at: list.range.lowerBound) }
            var ids = Set<String>()
            for (index, element) in elements.enumerated() {
                let path = "tokens[\(index)]"
                guard element.kind == .object, let fields = element.members else {
                    throw AccessFileError("\(path) must be an object {id, sha256, rules}", at: element.range.lowerBound)
                }
                for field in fields where !["id", "sha256", "rules"].contains(field.name) {
                    throw AccessFileError("\(path).\(field.name): unknown member; use id, sha256, rules", at: field.value.range.lowerBound)
                }
                guard let idValue = element[member: "id"], let id = document.string(idValue), (1...200).contains(id.utf8.count),
                    id.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F })
                else {
                    throw AccessFileError("\(path).id must be a name of 1 to 200 visible characters (it is what logs show)", at: element.range.lowerBound)
                }
                guard ids.insert(id).inserted else { throw AccessFileError("\(path): id \(id) is used twice", at: idValue.range.lowerBound) }
                guard let hashValue = element[member: "sha256"], let hex = document.string(hashValue), let digest = BearerToken.digest(hex: hex) else {
                    throw AccessFileError("\(path).sha256 must be the token's SHA-256 in 64 hex digits (kvctl token new prints it)", at: element.range.lowerBound)
                }
                guard let rulesValue = element[member: "rules"] else {
                    throw AccessFileError("\(path).rules is required", at: element.range.lowerBound)
                }
                let identity = Identity(kind: .token, id: id, rules: try AccessRules.parse(rulesValue, in: document, at: "\(path).rules"))
                guard tokens.insert(digest: digest, identity: identity) else {
                    throw AccessFileError("\(path): the same token is listed twice", at: hashValue.range.lowerBound)
                }
            }
        }
        let signed = try await document.root[member: "jwt"].asyncMap { value throws(AccessFileError) in try await SignedTokens.parse(value, in: document) }
        return AccessPolicy(isOpen: false, anonymous: anonymous, tokens: tokens, signed: signed)
    }
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws(AccessFileError) -> T) async throws(AccessFileError) -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
