import KVCore

/// Entity tags: a key's revision is its ETag, `"<revision>"` (a strong tag: the value at one
/// revision is one exact byte sequence).
public enum EntityTags: Equatable, Sendable {
    /// One tag of a list; `revision` is nil for a tag that is not one of ours (it matches nothing).
    public struct Tag: Equatable, Sendable {
        public var weak: Bool
        public var revision: UInt64?
    }

    /// `*`
    case any
    case list([Tag])

    /// The ETag of a revision.
    public static func tag(_ revision: UInt64) -> String { "\"\(revision)\"" }

    /// Reads an `If-Match` / `If-None-Match` value: `*`, or comma-separated tags `"…"` or `W/"…"`.
    public static func parse(_ header: String, name: String) throws(KVError) -> EntityTags {
        let text = header.trimmingSpaces
        if text == "*" { return .any }
        var tags: [Tag] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            var tag = Substring(String(part).trimmingSpaces)
            let weak = tag.hasPrefix("W/")
            if weak { tag = tag.dropFirst(2) }
            guard tag.count >= 2, tag.first == "\"", tag.last == "\"", !tag.dropFirst().dropLast().contains("\"") else {
                throw KVError(.invalidRequest, "\(name) must be * or a list of quoted entity tags such as \"42\"")
            }
            tags.append(Tag(weak: weak, revision: UInt64(tag.dropFirst().dropLast())))
        }
        return .list(tags)
    }

    /// `If-Match`'s strong comparison: a weak tag never matches.
    public func matchesStrongly(_ revision: UInt64) -> Bool {
        switch self {
        case .any: true
        case .list(let tags): tags.contains { !$0.weak && $0.revision == revision }
        }
    }

    /// `If-None-Match`'s weak comparison.
    public func matchesWeakly(_ revision: UInt64) -> Bool {
        switch self {
        case .any: true
        case .list(let tags): tags.contains { $0.revision == revision }
        }
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
