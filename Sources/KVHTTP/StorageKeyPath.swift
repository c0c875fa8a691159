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
        let key = try percentDecode(encoded)
        try StorageKey.validate(key, limits: limits)
        if hasDotSegment(key) {
            throw KVError(.invalidKey, "a key sent over HTTP cannot have a \".\" or \"..\" path segment: nginx resolves them before routing (/storage/a/../b is the path /storage/b, %2E and %2F included), so the key would not be the path nginx checked; such keys are reachable over the WebSocket API")
        }
        return key
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
    static func percentDecode(_ bytes: ArraySlice<UInt8>) throws(KVError) -> [UInt8] {
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
                throw KVError(.invalidKey, "invalid percent-encoding in the key at byte \(i - bytes.startIndex)")
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
