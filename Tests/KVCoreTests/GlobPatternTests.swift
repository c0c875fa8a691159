import KVCore
import Testing

/// Redis's glob semantics (`SCAN … MATCH`), without a server.
@Suite("Glob patterns")
struct GlobPatternTests {
    func matches(_ pattern: String, _ key: String) -> Bool {
        var steps = 0
        return Array(key.utf8).withUnsafeBytes { GlobPattern(Array(pattern.utf8)).matches($0, steps: &steps) }
    }

    @Test("*, ?, classes, ranges, negation and escapes match as in Redis")
    func semantics() {
        let cases: [(String, String, Bool)] = [
            ("*", "", true), ("*", "anything", true), ("a*", "abc", true), ("a*", "ba", false), ("*c", "abc", true),
            ("a*b*c", "aXXbYYc", true), ("a*b*c", "aXXcYYb", false), ("h?llo", "hello", true), ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true), ("h[ae]llo", "hillo", false), ("h[^e]llo", "hallo", true), ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true), ("h[c-a]llo", "hbllo", true), ("h[a-c]llo", "hdllo", false),
            (#"a\*b"#, "a*b", true), (#"a\*b"#, "aXb", false), (#"[\]]"#, "]", true), ("app/*", "app/", true), ("", "", true), ("", "x", false),
            ("**a", "a", true), ("*a*", "bab", true), ("*?", "", false), ("[abc", "b", true),
        ]
        for (pattern, key, expected) in cases { #expect(matches(pattern, key) == expected, "\(pattern) ~ \(key)") }
    }

    @Test("the literal prefix bounds the keys a SCAN walks; prefix* needs no matching at all")
    func literalPrefix() {
        func prefix(_ pattern: String) -> (String, Bool) {
            let (bytes, whole) = GlobPattern(Array(pattern.utf8)).literalPrefix
            return (String(decoding: bytes, as: UTF8.self), whole)
        }
        #expect(prefix("app/*") == ("app/", true))
        #expect(prefix("app/*/name") == ("app/", false))
        #expect(prefix(#"a\?b*"#) == ("a?b", true))
        #expect(prefix("user:?:x") == ("user:", false))
        #expect(prefix("exact") == ("exact", false))
        #expect(prefix("*") == ("", true))
    }

    @Test("matching costs at most the key's length times the pattern's, however many stars")
    func boundedWork() {
        let key = String(repeating: "a", count: 4096), pattern = String(repeating: "*a", count: 100) + "b"
        var steps = 0
        let matched = Array(key.utf8).withUnsafeBytes { GlobPattern(Array(pattern.utf8)).matches($0, steps: &steps) }
        #expect(!matched)
        #expect(steps <= 4096 * pattern.utf8.count, "\(steps) steps")
    }
}
