import KVCore

/// Entity tags: a key's revision is its ETag, `"<revision>"` (a strong tag: the value at one
/// revision is one exact byte sequence).
public enum EntityTags: Equatable, Sendable {
    /// `*`
    case any
    /// A list of tags; `revision` is nil for a tag that is not one of ours (it matches nothing).
    case list([(weak: Bool, revision: UInt64?)])

    public static func == (a: EntityTags, b: EntityTags) -> Bool {
        switch (a, b) {
        case (.any, .any): true
        case (.list(let x), .list(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.weak == $1.weak && $0.revision == $1.revision }
        default: false
        }
    }

    /// The ETag of a revision.
    public static func tag(_ revision: UInt64) -> String { "\"\(revision)\"" }

    /// Reads an `If-Match` / `If-None-Match` value: `*`, or comma-separated tags `"…"` or `W/"…"`.
    public static func parse(_ header: String, name: String) throws(KVError) -> EntityTags {
        let text = header.trimmingSpaces
        if text == "*" { return .any }
        var tags: [(weak: Bool, revision: UInt64?)] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            var tag = Substring(String(part).trimmingSpaces)
            let weak = tag.hasPrefix("W/")
            if weak { tag = tag.dropFirst(2) }
            guard tag.count >= 2, tag.first == "\"", tag.last == "\"", !tag.dropFirst().dropLast().contains("\"") else {
                throw KVError(.invalidRequest, "\(name) must be * or a list of quoted entity tags such as \"42\"")
            }
            tags.append((weak, UInt64(tag.dropFirst().dropLast())))
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
