import KVAccess
import KVCore
import Testing

/// Rule matching without sockets: prefixes, exceptions, longest prefix, the empty prefix.
@Suite struct AccessRulesTests {
    private func rules(_ json: String) async throws -> AccessRules {
        let policy = try await parse(#"{"tokens": [{"id": "t", "sha256": "\#(BearerToken.hashHex("secret-t"))", "rules": \#(json)}]}"#)
        guard case .identity(let identity)? = policy.authenticateCached(.bearer("secret-t"), now: 0) else {
            Issue.record("the token was not found")
            return .none
        }
        return identity.rules
    }

    @Test func noRuleMeansNoAccess() async throws {
        let r = try await rules(#"{"read": ["app/"]}"#)
        #expect(r.allows(.read, key: Array("app/x".utf8)))
        #expect(!r.allows(.read, key: Array("other".utf8)))
        #expect(!r.allows(.read, key: Array("app".utf8)), "a prefix longer than the key does not match")
        #expect(!r.allows(.write, key: Array("app/x".utf8)), "an operation not listed is refused")
        #expect(!r.allows(.subscribe, key: Array("app/x".utf8)))
    }

    @Test("coverage of a prefix: all, none, or some when a longer rule under it says otherwise")
    func coverageOfAPrefix() async throws {
        let r = try await rules(#"{"read": ["app/", "app/secret/public/"], "except": {"read": ["app/secret/"]}}"#)
        func coverage(_ prefix: String) -> AccessCoverage { r.coverage(.read, prefix: Array(prefix.utf8)) }
        #expect(coverage("app/user/") == .all)
        #expect(coverage("app/") == .some, "app/secret/ is excepted under it")
        #expect(coverage("app/secret/") == .some, "app/secret/public/ is allowed again under it")
        #expect(coverage("app/secret/x") == .none)
        #expect(coverage("app/secret/public/a") == .all)
        #expect(coverage("ap") == .some && coverage("") == .some, "shorter than every rule: what they allow")
        #expect(coverage("other/") == .none)
        #expect(r.coverage(.write, prefix: Array("app/".utf8)) == .none)
        let everything = try await rules(#"{"all": [""]}"#)
        #expect(everything.coverage(.subscribe, prefix: []) == .all)
    }

    @Test func longestPrefixWinsAcrossAllowAndExcept() async throws {
        let r = try await rules(#"{"read": ["app/", "app/secret/public/"], "except": {"read": ["app/secret/"]}}"#)
        #expect(r.allows(.read, key: Array("app/a".utf8)))
        #expect(!r.allows(.read, key: Array("app/secret/x".utf8)))
        #expect(r.allows(.read, key: Array("app/secret/public/x".utf8)))
        #expect(!r.allows(.read, key: Array("app/secret/".utf8)))
    }

    @Test func theIssueExampleReadsTheWholeAppAndWritesOneUser() async throws {
        let r = try await rules(#"{"read": ["app/"], "write": ["app/user/42/"]}"#)
        #expect(r.allows(.read, key: Array("app/user/42/profile".utf8)))
        #expect(r.allows(.write, key: Array("app/user/42/profile".utf8)))
        #expect(!r.allows(.write, key: Array("app/user/43/profile".utf8)))
        #expect(!r.allows(.delete, key: Array("app/user/42/profile".utf8)))
    }

    @Test func allAndTheEmptyPrefix() async throws {
        let r = try await rules(#"{"all": [""], "except": {"delete": ["keep/"]}}"#)
        for operation in AccessOperation.allCases { #expect(r.allows(operation, key: [])) }
        #expect(r.allows(.delete, key: Array("k".utf8)))
        #expect(!r.allows(.delete, key: Array("keep/1".utf8)))
        #expect(r.allows(.read, key: Array("keep/1".utf8)))
    }

    @Test func aPrefixBothAllowedAndExceptedIsExcepted() async throws {
        let r = try await rules(#"{"read": ["a/"], "except": {"read": ["a/"]}}"#)
        #expect(!r.allows(.read, key: Array("a/x".utf8)))
    }

    @Test func prefixesAreBytesOfTheKeyNotOfTheURL() async throws {
        // A rule is written with the key's own bytes: "%2F" in a rule is three characters,
        // and it never matches the key a URL's %2F decodes to.
        let r = try await rules(#"{"read": ["a%2F"]}"#)
        #expect(!r.allows(.read, key: Array("a/x".utf8)))
        #expect(r.allows(.read, key: Array("a%2Fx".utf8)))
        let unicode = try await rules(#"{"read": ["café/"]}"#)
        #expect(unicode.allows(.read, key: Array("café/menu".utf8)))
        #expect(!unicode.allows(.read, key: Array("cafe/menu".utf8)))
    }

    @Test func manyRulesAreFoundByLength() async throws {
        var r = AccessRules.none
        for index in 0..<10_000 { r.allow(.read, prefix: Array("tenant/\(index)/".utf8)) }
        #expect(r.allows(.read, key: Array("tenant/9999/x".utf8)))
        #expect(!r.allows(.read, key: Array("tenant/10000/x".utf8)))
        #expect(r.ruleCount == 10_000)
    }
}

func parse(_ text: String) async throws -> AccessPolicy {
    try await AccessPolicy.parse(Array(text.utf8))
}
