/// A key prefix written as a Redis glob pattern: the prefix with `\` before each of `*?[]\`,
/// then one `*` (`app/*` watches every key that starts with `app/`). kv-stored's `PSUBSCRIBE`
/// takes only such patterns: a prefix is matched against each changed key in one pass over
/// the key (see `ChangeFeed`), where a general glob would be matched against every key for
/// every pattern.
public enum PrefixPattern {
    /// The pattern that watches the keys starting with `prefix`.
    public static func pattern(of prefix: [UInt8]) -> [UInt8] {
        escaped(prefix) + [UInt8(ascii: "*")]
    }

    /// The prefix `pattern` watches, or nil when it is not a prefix pattern (a `?` or `[` not
    /// escaped, a `*` before the end, no `*` at the end, or a `\` with nothing after it).
    public static func prefix<Bytes: Collection<UInt8>>(of pattern: Bytes) -> [UInt8]? {
        var prefix: [UInt8] = []
        prefix.reserveCapacity(pattern.count)
        var escaping = false
        var index = pattern.startIndex
        while index != pattern.endIndex {
            let byte = pattern[index]
            pattern.formIndex(after: &index)
            if escaping {
                prefix.append(byte)
                escaping = false
                continue
            }
            switch byte {
            case UInt8(ascii: "\\"): escaping = true
            case UInt8(ascii: "*"): return index == pattern.endIndex ? prefix : nil
            case UInt8(ascii: "?"), UInt8(ascii: "["): return nil
            default: prefix.append(byte)
            }
        }
        return nil  // no `*` at the end: not a prefix pattern
    }

    /// `bytes` matched literally by a Redis glob pattern.
    public static func escaped(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 2)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            default: break
            }
            out.append(byte)
        }
        return out
    }
}
