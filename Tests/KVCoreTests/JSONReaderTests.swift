import KVTestSupport
import Testing
@testable import KVCore

private func read(_ text: String, maxDepth: Int = JSONReader.defaultMaxDepth) throws(KVError) -> JSONDocument {
    try JSONReader(maxDepth: maxDepth).read(Array(text.utf8))
}

private func valueText(_ text: String) throws -> String {
    let doc = try read(text)
    let value = try #require(doc.root[member: "value"])
    return String(decoding: doc.compactText(of: value), as: UTF8.self)
}

@Suite("Strict JSON reader")
struct JSONReaderTests {
    static let roundTrips: [(String, String)] = [
        (#"{"value": 123456789012345678901234567890}"#, "123456789012345678901234567890"),
        (#"{"value":1.0}"#, "1.0"), (#"{"value":1}"#, "1"), (#"{"value":true}"#, "true"), (#"{"value":false}"#, "false"),
        (#"{"value":null}"#, "null"), (#"{"value":-0.5e-7}"#, "-0.5e-7"), (#"{"value":1E+300}"#, "1E+300"),
        (#"{"value":"h\u00e9\n\"q\"\\/"}"#, #""h\u00e9\n\"q\"\\/""#), (#"{"value":"é😀"}"#, #""é😀""#),
        (#"{"value":"\ud83d\ude00"}"#, #""\ud83d\ude00""#),
        ("{ \"value\" :\n {\"a\" : [1, 2, {\"b\": null}] , \"s\": \"a b\\t\"} }", #"{"a":[1,2,{"b":null}],"s":"a b\t"}"#),
        (#"{"value":[],"ttl":"1h","extra":{"x":[1,{"y":2}]}}"#, "[]"), (#"{"value":{}}"#, "{}"),
        (#"{"value":"\" { } [ ] , :"}"#, #""\" { } [ ] , :""#),
    ]

    @Test("a value comes back exactly as written, less insignificant whitespace", arguments: roundTrips)
    func roundTrip(input: String, expected: String) throws {
        #expect(try valueText(input) == expected)
    }

    static let rejected: [String] = [
        #"{"value":1,}"#, #"[1,]"#, #"{"value":1} x"#, #"{"value":NaN}"#, #"{"value":Infinity}"#, #"{"value":01}"#,
        #"{"value":1.}"#, #"{"value":.5}"#, #"{"value":-}"#, #"{"value":+1}"#, #"{"value":1e}"#, #"{"value":0x10}"#,
        #"{"value":"\ud800"}"#, #"{"value":"\udc00"}"#, #"{"value":"\ud800\u0041"}"#, #"{"value":"\ud800x"}"#,
        "{\"value\":\"a\u{01}\"}", #"{"value":"\x"}"#, #"{"value":"\u12"}"#, #"{"value":"\u12G4"}"#,
        #"{"value":1 /* c */}"#, "{\"value\":1} // c", #"{'value':1}"#, #"{value:1}"#, #"{"value" 1}"#,
        #"{"value":1,"value":2}"#, "", "   ", "{", "}", #"{"value":tru}"#, #"{"value":nul}"#, #"{"value":True}"#,
        "\u{FEFF}{\"value\":1}", #"{"value":"unterminated}"#, "[1 2]", #"{"a":1 "b":2}"#, #"{,}"#, "[,]",
    ]

    @Test("RFC 8259 violations are rejected", arguments: rejected)
    func rejects(input: String) {
        #expect(throws: KVError.self) { try read(input) }
    }

    @Test("invalid UTF-8 inside strings is rejected", arguments: [
        [0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC3], [0x80], [0xF8, 0x88, 0x80, 0x80, 0x80],
    ] as [[UInt8]])
    func invalidUTF8(bytes: [UInt8]) {
        let doc: [UInt8] = Array(#"{"value":""#.utf8) + bytes + Array(#""}"#.utf8)
        #expect(throws: KVError.self) { try JSONReader().read(doc) }
    }

    @Test("nesting is limited to the documented depth")
    func depthLimit() throws {
        let limit = JSONReader.defaultMaxDepth
        #expect(limit >= 128)
        let deepest = String(repeating: "[", count: limit - 1) + String(repeating: "]", count: limit - 1)
        _ = try read("{\"value\":\(deepest)}")
        let tooDeep = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(throws: KVError.self) { try read("{\"value\":\(tooDeep)}") }
        // A hostile document far beyond the limit fails cleanly instead of exhausting the stack.
        let hostile = String(repeating: "[", count: 1_000_000)
        #expect(throws: KVError.self) { try read(hostile) }
    }

    /// Issue 15, finding 1: the duplicate check compared each member with every earlier one, so
    /// 200,000 members cost 2·10¹⁰ comparisons (minutes). The limit is a guard against that hang,
    /// sixty times what the linear reader needs, not a speed assertion (docs/BENCHMARKS.md has those).
    @Test("an object of 200,000 members is read in linear time, at depth 0 and 1, and a late duplicate is still caught",
          .timeLimit(.minutes(1)))
    func manyMembers() throws {
        let members = (0..<200_000).map { "\"k\($0)\":0" }.joined(separator: ",")
        let top = try read("{\"value\":1,\(members)}")
        #expect(top.root.members?.count == 200_001)
        let nested = try read("{\"value\":{\(members)}}")
        #expect(nested.root[member: "value"]?.members?.count == 200_000)
        #expect(throws: KVError.self) { try read("{\"value\":1,\(members),\"k0\":1}") }
        #expect(throws: KVError.self) { try read("{\"value\":{\(members),\"k199999\":1}}") }
    }

    @Test("errors say where and what")
    func errorMessages() {
        do {
            _ = try read(#"{"value":1,}"#)
            Issue.record("accepted")
        } catch {
            #expect(error.code == .invalidJSON)
            #expect(error.message.contains("byte 11"))
        }
    }

    @Test("member names and string values decode escapes")
    func decoding() throws {
        let doc = try read(#"{"k\u0065y":"a\u00e9\ud83d\ude00\n\"","payload":{"key":"x"}}"#)
        let key = try #require(doc.root[member: "key"])
        #expect(doc.string(key) == "aé😀\n\"")
        let payload = try #require(doc.root[member: "payload"])
        #expect(payload.members?.count == 1)
        #expect(doc.string(try #require(payload[member: "key"])) == "x")
        #expect(doc.string(payload) == nil)
    }

    @Test("truncations of a valid document never crash and are all rejected")
    func truncations() throws {
        let text = Array(#"{"value":{"a":[1,-2.5e3,true,false,null,"x\u00e9\ud83d\ude00"],"b":{}},"ttl":"1h"}"#.utf8)
        _ = try JSONReader().read(text)
        for length in 0..<text.count {
            #expect(throws: KVError.self) { try JSONReader().read(Array(text[0..<length])) }
        }
    }

    @Test("random bytes and random mutations never crash the reader")
    func fuzz() {
        var rng = SplitMix64(seed: 0x5EED)
        let seed = Array(#"{"value":{"a":[1,-2.5e3,true,false,null,"x\u00e9\ud83d\ude00"],"b":{}},"ttl":"1h"}"#.utf8)
        let alphabet = Array(#"{}[]",:.-+eE0123456789truefalsn\u "#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xFF]
        for _ in 0..<20_000 {
            var bytes: [UInt8]
            if rng.next() % 2 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            } else {
                bytes = seed
                for _ in 0..<(1 + rng.next() % 4) {
                    let i = Int(rng.next() % UInt64(bytes.count))
                    bytes[i] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            if let doc = try? JSONReader().read(bytes), let value = doc.root[member: "value"] {
                // Whatever is accepted must be re-readable after compaction.
                let compact = doc.compactText(of: value)
                #expect((try? JSONReader().read(compact)) != nil)
            }
        }
    }

    @Test("randomly generated documents round-trip exactly")
    func generatedRoundTrip() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2_000 {
            let compact = RandomJSON.value(&rng, depth: 0)
            let spaced = "{ \"value\" : \(compact) , \"ttl\" : null }"
            #expect(try valueText(spaced) == compact)
        }
    }
}

@Suite("Keys")
struct StorageKeyTests {
    let limits = Limits(maxKeyBytes: 8, maxValueBytes: 8)

    @Test("a key is a non-empty UTF-8 string within the limit")
    func rules() throws {
        try StorageKey.validate(Array("a/b".utf8), limits: limits)
        try StorageKey.validate(Array("é😀".utf8), limits: limits)
        #expect(throws: KVError(.invalidKey, "key must not be empty")) { try StorageKey.validate([UInt8](), limits: limits) }
        #expect(throws: KVError(.invalidKey, "key is not valid UTF-8 (byte 1)")) { try StorageKey.validate([0x61, 0xFF], limits: limits) }
        #expect(throws: KVError(.tooLarge, "key is 9 bytes, the limit is 8")) { try StorageKey.validate(Array("123456789".utf8), limits: limits) }
    }

    @Test("UTF-8 validation agrees with the standard library on random input")
    func utf8AgreesWithStandardLibrary() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<50_000 {
            let bytes = (0..<Int(rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next() | (rng.next() % 3 == 0 ? 0x80 : 0)) }
            let ours = UTF8Validation.isValid(bytes)
            let theirs = String(validating: bytes, as: UTF8.self) != nil
            #expect(ours == theirs, "\(bytes)")
        }
    }
}

@Suite("Change payloads")
struct ChangePayloadTests {
    @Test("payloads parse back to their kind, revision and value", arguments: [
        ("set:42:{\"a\":1}", ChangeKind.set, UInt64(42), "{\"a\":1}"), ("set:1:", .set, 1, ""),
        ("deleted:7", .deleted, 7, nil), ("expired:18446744073709551615", .expired, UInt64.max, nil),
    ] as [(String, ChangeKind, UInt64, String?)])
    func parse(text: String, kind: ChangeKind, revision: UInt64, value: String?) throws {
        let bytes = Array(text.utf8)
        let parsed = try #require(bytes.withUnsafeBytes { ChangePayload.parse($0) })
        #expect(parsed.kind == kind)
        #expect(parsed.revision == revision)
        #expect(parsed.valueOffset.map { String(decoding: bytes[$0...], as: UTF8.self) } == value)
        if kind != .set { #expect(ChangePayload.header(kind: kind, revision: revision) == text) }
    }

    @Test("anything else is not a payload", arguments: ["", "set", "set:", "set:1", "deleted:", "deleted:1:x", "moved:1", "set:x:1", "expired:18446744073709551616"])
    func reject(text: String) {
        #expect(Array(text.utf8).withUnsafeBytes { ChangePayload.parse($0) } == nil)
    }
}
