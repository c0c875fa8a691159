import KVCore

/// Takes the key out of a raw request target, as docs/api.md says: everything after `/storage/` up
/// to `?`, percent-decoded exactly once. Working on the raw `REQUEST_URI` matters: nginx's
/// decoded `DOCUMENT_URI` has already turned `%2F` into `/` and folded `/a/../b` and `//`.
public enum StorageKeyPath {
    public static let prefix = Array("/storage/".utf8)

    /// The decoded key bytes, checked against the key rules.
    public static func key(fromRequestURI uri: [UInt8], limits: Limits) throws(KVError) -> [UInt8] {
        guard uri.starts(with: prefix) else {
            throw KVError(.invalidKey, "the path must start with /storage/")
        }
        var end = uri.count
        if let question = uri.firstIndex(of: UInt8(ascii: "?")) { end = question }
        let encoded = uri[prefix.count..<end]
        if encoded.isEmpty { throw KVError(.invalidKey, "key must not be empty (to list keys: GET /storage/?prefix=…)") }
        let key = try percentDecode(encoded)
        try StorageKey.validate(key, limits: limits)
        if hasDotSegment(key) {
            throw KVError(.invalidKey, "a key sent over HTTP cannot have a \".\" or \"..\" path segment: nginx resolves them before routing (/storage/a/../b is the path /storage/b, %2E and %2F included), so the key would not be the path nginx checked; such keys are reachable over the WebSocket API")
        }
        return key
    }

    /// The listing a request target asks for, `/storage/?prefix=P[&after=A][&limit=N][&values=1]`
    /// (docs/http.md, "Listing keys"), or nil for any other target. `prefix` is required (empty:
    /// every key); values are percent-decoded once, as keys are, and `+` stays `+`. An unknown or
    /// repeated parameter is an error rather than ignored, so a typo is not a silently different
    /// listing.
    public static func listing(fromRequestURI uri: [UInt8], limits: Limits) throws(KVError) -> ListingQuery? {
        guard uri.count > prefix.count, uri.starts(with: prefix), uri[prefix.count] == UInt8(ascii: "?") else { return nil }
        var listedPrefix: [UInt8]?, after: [UInt8]?, limit: Int?, values: Bool?
        for pair in uri[(prefix.count + 1)...].split(separator: UInt8(ascii: "&")) {
            let equals = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.endIndex
            let name = String(decoding: pair[..<equals].prefix(100), as: UTF8.self)
            let value = try percentDecode(pair[min(equals + 1, pair.endIndex)...], what: name)
            func once<T>(_ field: T?) throws(KVError) {
                if field != nil { throw KVError(.invalidRequest, "the parameter \(name) is given twice") }
            }
            switch name {
            case "prefix":
                try once(listedPrefix)
                listedPrefix = value
            case "after":
                try once(after)
                after = value
            case "limit":
                try once(limit)
                guard value.count <= 4, let n = Int(String(decoding: value, as: UTF8.self)) else {
                    throw KVError(.invalidRequest, "limit must be an integer from 1 to \(ListingQuery.maxLimit)")
                }
                limit = n
            case "values":
                try once(values)
                switch String(decoding: value, as: UTF8.self) {
                case "1", "true": values = true
                case "0", "false": values = false
                default: throw KVError(.invalidRequest, "values must be 1 or 0")
                }
            default:
                throw KVError(.invalidRequest, "unknown parameter \(String(decoding: JSONText.quoted(name), as: UTF8.self)): a listing takes prefix, after, limit and values")
            }
        }
        guard let listedPrefix else {
            throw KVError(.invalidRequest, "a listing needs the prefix parameter (empty for every key): /storage/?prefix=app/")
        }
        return try ListingQuery(prefix: listedPrefix, after: after, limit: limit ?? ListingQuery.defaultLimit, values: values ?? false, limits: limits)
    }

    /// Whether `/storage/` + `key` has a `.` or `..` segment, which nginx folds away (after
    /// decoding) before it chooses a location. Acting on such a key would act on something
    /// other than what nginx routed and applied its rules to.
    static func hasDotSegment(_ key: [UInt8]) -> Bool {
        key.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).contains { segment in
            segment.elementsEqual([UInt8(ascii: ".")]) || segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")])
        }
    }

    /// Decodes `%XX` escapes once; `+` stays `+` (it is not a space in a path).
    static func percentDecode(_ bytes: ArraySlice<UInt8>, what: String = "the key") throws(KVError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            guard b == UInt8(ascii: "%") else {
                out.append(b)
                i += 1
                continue
            }
            guard i + 2 < bytes.endIndex, let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) else {
                throw KVError(.invalidKey, "invalid percent-encoding in \(what) at byte \(i - bytes.startIndex)")
            }
            out.append(high << 4 | low)
            i += 3
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }
}
