import KVCore

/// Who a request comes from, and what it may do.
public struct Identity: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// No credentials: the access file's `anonymous` rules (everything when there is no file).
        case anonymous
        /// A static token of the access file.
        case token
        /// A signed token (JWT) verified with a key of the access file.
        case jwt
    }

    public var kind: Kind
    /// What logs show: the token's `id` in the file, `jwt:<sub>`, or `anonymous`. Never the token.
    public var id: String
    public var rules: AccessRules
    /// A JWT's `nbf` and `exp`, in Unix milliseconds.
    public var notBefore: Int64?
    public var expiresAt: Int64?

    public init(kind: Kind, id: String, rules: AccessRules, notBefore: Int64? = nil, expiresAt: Int64? = nil) {
        self.kind = kind
        self.id = id
        self.rules = rules
        self.notBefore = notBefore
        self.expiresAt = expiresAt
    }

    public static let open = Identity(kind: .anonymous, id: "anonymous", rules: .everything)

    public func allows(_ operation: AccessOperation, key: [UInt8]) -> Bool {
        rules.allows(operation, key: key)
    }

    public func coverage(_ operation: AccessOperation, prefix: [UInt8]) -> AccessCoverage {
        rules.coverage(operation, prefix: prefix)
    }

    /// Why the identity cannot be used at `now` (Unix ms), or nil when it can.
    public func timeRefusal(now: Int64) -> String? {
        if let expiresAt, now >= expiresAt { return "the token expired" }
        if let notBefore, now < notBefore { return "the token is not valid yet (nbf)" }
        return nil
    }
}

/// The outcome of looking at a request's credentials.
public enum Authentication: Sendable, Equatable {
    /// Credentials (or none, when anonymous access is configured) that name an identity.
    case identity(Identity)
    /// Missing, malformed, unknown, expired or badly signed credentials: HTTP 401.
    case refused(String)
}

/// A request's credentials as presented.
public enum Credential: Sendable, Equatable {
    case none
    case bearer(String)
    /// An `Authorization` header that is not `Bearer <token>`.
    case malformed(String)

    /// Longest token looked at; nginx's header buffers allow more, a token never needs it.
    public static let maxTokenBytes = 16 << 10

    /// Reads an `Authorization` header: `Bearer <token>` (RFC 6750: the scheme in any case, one
    /// or more spaces, a token without spaces). Done on the UTF-8 bytes: it runs on every request.
    public static func fromAuthorization(_ header: String?) -> Credential {
        guard var text = header else { return .none }
        return text.withUTF8 { bytes in
            let malformed = Credential.malformed("the Authorization header must be \"Bearer <token>\"")
            func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
            var start = 0, end = bytes.count
            while start < end, isBlank(bytes[start]) { start += 1 }
            while end > start, isBlank(bytes[end - 1]) { end -= 1 }
            // "bearer", in any case, then at least one blank.
            let scheme: StaticString = "bearer"
            guard end - start > scheme.utf8CodeUnitCount + 1, isBlank(bytes[start + scheme.utf8CodeUnitCount]) else { return malformed }
            for offset in 0..<scheme.utf8CodeUnitCount where bytes[start + offset] | 0x20 != scheme.utf8Start[offset] { return malformed }
            var tokenStart = start + scheme.utf8CodeUnitCount
            while tokenStart < end, isBlank(bytes[tokenStart]) { tokenStart += 1 }
            for index in tokenStart..<end where isBlank(bytes[index]) { return malformed }
            return token(String(decoding: UnsafeBufferPointer(rebasing: bytes[tokenStart..<end]), as: UTF8.self))
        }
    }

    /// A token given some other way (a WebSocket protocol offer or `auth` message).
    public static func token(_ text: String) -> Credential {
        guard !text.isEmpty else { return .malformed("the token is empty") }
        guard text.utf8.count <= maxTokenBytes else { return .malformed("the token is longer than \(maxTokenBytes) bytes") }
        return .bearer(text)
    }
}

/// Why a request was refused, in the words both APIs use; each adds only its own framing (a
/// status line and challenge over HTTP, an error message over WebSocket).
public struct AccessRefusal: Sendable, Equatable {
    /// No credentials were presented: present some (401) rather than "not allowed" (403).
    public let needsCredentials: Bool
    /// "clients without a token may not read key "k"", or "forbidden: app may not write key "k"".
    public let reason: String
}

extension Identity {
    /// nil when this identity may do `operation` on `key`; otherwise what to tell the client.
    /// The key is shown as JSON (escaped), cut to 200 bytes.
    public func refusal(_ operation: AccessOperation, key: [UInt8]) -> AccessRefusal? {
        guard !allows(operation, key: key) else { return nil }
        let shown = String(decoding: JSONText.quoted(String(decoding: key.prefix(200), as: UTF8.self)), as: UTF8.self)
        if kind == .anonymous {
            return AccessRefusal(needsCredentials: true, reason: "clients without a token may not \(operation.rawValue) key \(shown)")
        }
        return AccessRefusal(needsCredentials: false, reason: "forbidden: \(id) may not \(operation.rawValue) key \(shown)")
    }

    /// nil when this identity may do `operation` on some key under `prefix` (listing and prefix
    /// subscriptions then show only those: see `coverage`); otherwise what to tell the client.
    public func refusal(_ operation: AccessOperation, prefix: [UInt8]) -> AccessRefusal? {
        guard coverage(operation, prefix: prefix) == .none else { return nil }
        let shown = String(decoding: JSONText.quoted(String(decoding: prefix.prefix(200), as: UTF8.self)), as: UTF8.self)
        if kind == .anonymous {
            return AccessRefusal(needsCredentials: true, reason: "clients without a token may not \(operation.rawValue) any key under prefix \(shown)")
        }
        return AccessRefusal(needsCredentials: false, reason: "forbidden: \(id) may not \(operation.rawValue) any key under prefix \(shown)")
    }
}

extension Identity {
    /// `page`, a listing of the keys under `prefix`, as this identity may see it: whole when it
    /// may read every key under the prefix, otherwise without the keys it may not read.
    public func readable(_ page: KeyListing, under prefix: [UInt8]) -> KeyListing {
        coverage(.read, prefix: prefix) == .all ? page : page.filtered { allows(.read, key: $0) }
    }
}
