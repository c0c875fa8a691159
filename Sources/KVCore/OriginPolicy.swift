/// Which browser origins may use the API (`--allowed-origins` of kv-fcgi and kv-ws).
///
/// Browsers send `Origin` on every WebSocket handshake and on every cross-site POST and DELETE,
/// and a page cannot forge it; curl, servers and native clients send none. So a request
/// without `Origin` is never a browser acting for another site and is allowed, and one with
/// `Origin` is allowed when the origin is the site the request was sent to (its host and port
/// equal the request's `Host`) or is listed. This is what stops any web page a user opens from
/// reading and writing through the user's browser (cross-site WebSocket hijacking).
public struct OriginPolicy: Sendable, Equatable {
    /// Origins allowed besides the same host, lowercased, as `scheme://host[:port]` with the
    /// scheme's default port left out (browsers leave it out too).
    public private(set) var listed: Set<String>
    /// `*` was given: every origin is allowed (an API meant for every site).
    public private(set) var allowsAny: Bool

    /// Same host only.
    public init() {
        listed = []
        allowsAny = false
    }

    /// `origins`: `*`, or origins such as `https://app.example.com` or `http://localhost:3000`.
    public init(parsing origins: [String]) throws(KVError) {
        self.init()
        for origin in origins {
            if origin == "*" {
                allowsAny = true
                continue
            }
            guard let normalized = Self.normalize(origin), normalized.authority != nil else {
                throw KVError(.invalidRequest, "\"\(origin.prefix(200))\" is not an origin: write scheme://host[:port], e.g. https://app.example.com")
            }
            listed.insert(normalized.origin)
        }
    }

    /// Whether a request with these `Origin` and `Host` headers may proceed.
    public func allows(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }  // not a browser
        if allowsAny { return true }
        guard let normalized = Self.normalize(origin), let authority = normalized.authority else { return false }  // "null", junk
        if listed.contains(normalized.origin) { return true }
        guard let host else { return false }
        return authority == Self.withoutDefaultPort(host.lowercased(), scheme: normalized.scheme)
    }

    /// `scheme://authority` lowercased, the default port dropped; nil if it is not of that form.
    static func normalize(_ origin: String) -> (origin: String, scheme: String, authority: String?)? {
        guard origin.utf8.count <= 2048 else { return nil }
        let text = origin.lowercased()
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1].hasPrefix("//") else { return nil }
        let scheme = String(parts[0])
        let rest = String(parts[1].dropFirst(2))
        guard !scheme.isEmpty, scheme.allSatisfy(Self.isSchemeCharacter), !rest.isEmpty, !rest.contains(where: Self.endsAuthority)
        else { return nil }
        let authority = withoutDefaultPort(rest, scheme: scheme)
        return ("\(scheme)://\(authority)", scheme, authority)
    }

    private static func isSchemeCharacter(_ c: Character) -> Bool {
        c.isLetter || c.isNumber || c == "+" || c == "-" || c == "."
    }

    /// A path, query, fragment, user info or space: not part of an origin.
    private static func endsAuthority(_ c: Character) -> Bool {
        c == "/" || c == "?" || c == "#" || c == "@" || c == " "
    }

    private static func withoutDefaultPort(_ authority: String, scheme: String) -> String {
        let port = scheme == "https" || scheme == "wss" ? ":443" : scheme == "http" || scheme == "ws" ? ":80" : nil
        if let port, authority.hasSuffix(port) { return String(authority.dropLast(port.count)) }
        return authority
    }
}
