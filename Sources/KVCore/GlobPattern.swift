/// A Redis glob pattern (`SCAN … MATCH`): `*` any bytes, `?` any one byte, `[abc]`, `[a-z]`,
/// `[^a]` a class, `\x` the byte x; anything else itself. Written here because kv-stored
/// answers SCAN itself and no package in the mirror matches Redis's globs.
///
/// Matching backtracks only to the last `*` seen, so it costs at most the key's length times the
/// pattern's, never exponential time whatever the stars; `steps` counts the work, so a caller
/// can bound what one command may spend.
public struct GlobPattern: Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The bytes every match starts with: the pattern up to its first unescaped `*`, `?` or
    /// `[`, unescaped; and whether the pattern is exactly that prefix then one `*` (any key
    /// starting with the prefix matches, so no key needs matching).
    public var literalPrefix: (prefix: [UInt8], isWholePattern: Bool) {
        if let prefix = PrefixPattern.prefix(of: bytes) { return (prefix, true) }
        var prefix: [UInt8] = []
        var i = 0
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["): return (prefix, false)
            case UInt8(ascii: "\\") where i + 1 < bytes.count:
                prefix.append(bytes[i + 1])
                i += 2
            default:
                prefix.append(bytes[i])
                i += 1
            }
        }
        return (prefix, false)
    }

    /// Whether `key` matches; `steps` grows by the work done.
    public func matches(_ key: UnsafeRawBufferPointer, steps: inout Int) -> Bool {
        let pattern = bytes
        var p = 0, s = 0
        var star: (pattern: Int, key: Int)?
        while s < key.count {
            steps += 1
            if p < pattern.count {
                switch pattern[p] {
                case UInt8(ascii: "*"):
                    star = (p, s)
                    p += 1
                    continue
                case UInt8(ascii: "?"):
                    p += 1
                    s += 1
                    continue
                case UInt8(ascii: "["):
                    let (matched, end) = Self.matchClass(pattern, at: p, key[s], steps: &steps)
                    if matched {
                        p = end
                        s += 1
                        continue
                    }
                case UInt8(ascii: "\\") where p + 1 < pattern.count:
                    if pattern[p + 1] == key[s] {
                        p += 2
                        s += 1
                        continue
                    }
                default:
                    if pattern[p] == key[s] {
                        p += 1
                        s += 1
                        continue
                    }
                }
            }
            // A mismatch: let the last `*` take one more byte, or fail.
            guard let last = star else { return false }
            star = (last.pattern, last.key + 1)
            p = last.pattern + 1
            s = last.key + 1
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    /// Whether `byte` is in the class starting at `pattern[start]` (`[`), and the index after
    /// the class. A class without its `]` runs to the pattern's end, as in Redis.
    private static func matchClass(_ pattern: [UInt8], at start: Int, _ byte: UInt8, steps: inout Int) -> (Bool, Int) {
        var i = start + 1
        let negated = i < pattern.count && pattern[i] == UInt8(ascii: "^")
        if negated { i += 1 }
        var matched = false
        while i < pattern.count, pattern[i] != UInt8(ascii: "]") {
            steps += 1
            if pattern[i] == UInt8(ascii: "\\"), i + 1 < pattern.count {
                if pattern[i + 1] == byte { matched = true }
                i += 2
            } else if i + 2 < pattern.count, pattern[i + 1] == UInt8(ascii: "-"), pattern[i + 2] != UInt8(ascii: "]") {
                let low = min(pattern[i], pattern[i + 2]), high = max(pattern[i], pattern[i + 2])
                if byte >= low && byte <= high { matched = true }
                i += 3
            } else {
                if pattern[i] == byte { matched = true }
                i += 1
            }
        }
        return (matched != negated, min(i + 1, pattern.count))
    }
}
