import Testing
@testable import KVCore

@Suite("TTL duration strings")
struct TTLDurationStringTests {
    static let valid: [(String, Int64)] = [
        ("1500", 1500), ("  1500  ", 1500), ("1", 1),
        ("1h30m", 5_400_000), ("1h 30m", 5_400_000), ("1h, 30m", 5_400_000), ("1h,30m", 5_400_000), ("1h ,30m", 5_400_000),
        ("10 hours 1m 5s", 36_065_000), ("10 hours, 1m, 5s", 36_065_000),
        ("1.5h", 5_400_000), (".5s", 500), ("0.1s", 100), ("0.5ms", 1), ("1.0000001ms", 2),
        ("0.4ms 0.6ms", 1), ("1ms 0.5ms", 2), ("1.0000000000000000000000001ms", 2),
        ("2 days", 172_800_000), ("1w", 604_800_000), ("1y", 31_557_600_000), ("100y", 3_155_760_000_000),
        ("1MS", 1), ("1 Hour", 3_600_000), ("2H", 7_200_000),
        ("1ms", 1), ("1msec", 1), ("2msecs", 2), ("1 millisecond", 1), ("2 milliseconds", 2),
        ("1s", 1000), ("1sec", 1000), ("2secs", 2000), ("1 second", 1000), ("2 seconds", 2000),
        ("1m", 60_000), ("1min", 60_000), ("2mins", 120_000), ("1 minute", 60_000), ("2 minutes", 120_000),
        ("1h", 3_600_000), ("1hr", 3_600_000), ("2hrs", 7_200_000), ("1 hour", 3_600_000), ("2 hours", 7_200_000),
        ("1d", 86_400_000), ("1day", 86_400_000), ("2 days", 172_800_000),
        ("1week", 604_800_000), ("2 weeks", 1_209_600_000),
        ("1yr", 31_557_600_000), ("2yrs", 63_115_200_000), ("1 year", 31_557_600_000), ("2 years", 63_115_200_000),
        ("1d1h1m1s1ms", 90_061_001), ("00012s", 12_000),
    ]

    @Test("valid duration strings give the right milliseconds", arguments: valid)
    func validString(text: String, expected: Int64) throws {
        #expect(try TTL(durationString: text).milliseconds == expected)
    }

    static let invalid: [(String, String)] = [
        ("", "empty"), ("   ", "empty"),
        ("1h,,2m", "expected a number at \",2m\""), ("1h,", "comma must be followed"), ("1h30m,", "comma must be followed"),
        ("1.", "expected digits after"), ("1.h", "expected digits after"), ("1500 2h", "missing unit after \"1500\""),
        ("10 parsecs", "unknown unit \"parsecs\""), ("1e3", "unknown unit \"e\""),
        ("-1s", "expected a number"), ("+1s", "expected a number"), ("h", "expected a number"), (",1h", "expected a number"),
        ("1h 30", "missing unit after \"30\""), ("1 h, , 2m", "expected a number"), ("1h\t", "expected a number"),
        ("0", "greater than 0"), ("0s", "greater than 0"), ("0.0h", "greater than 0"), ("0ms 0s", "greater than 0"),
        ("101y", "at most 100 years"), ("100y 1ms", "at most 100 years"), ("99999999999999999999999ms", "at most 100 years"),
        (String(repeating: "1", count: 101), "at most 100 characters"),
        ("NaN", "expected a number"), ("Infinity", "expected a number"), ("1_000", "missing unit after \"1\""), ("١s", "expected a number"),
        ("1 h m", "expected a number"),
    ]

    @Test("invalid duration strings are rejected with a message that says why", arguments: invalid)
    func invalidString(text: String, messagePart: String) {
        do {
            let ttl = try TTL(durationString: text)
            Issue.record("\"\(text)\" was accepted as \(ttl)")
        } catch {
            #expect(error.code == .invalidTTL)
            #expect(error.message.hasPrefix("ttl: "))
            #expect(error.message.contains(messagePart), "message was: \(error.message)")
        }
    }

    @Test("a 100-character string is still accepted")
    func maximumLength() throws {
        let text = String(repeating: " ", count: 97) + "1ms"
        #expect(text.utf8.count == 100)
        #expect(try TTL(durationString: text).milliseconds == 1)
    }
}

@Suite("TTL numbers")
struct TTLNumberTests {
    static let valid: [(String, Int64)] = [
        ("1", 1), ("1500", 1500), ("1.5", 2), ("0.001", 1), ("1e3", 1000), ("1E3", 1000), ("1.5e1", 15),
        ("2e-1", 1), ("1e-400", 1), ("3155760000000", 3_155_760_000_000), ("3155759999999.5", 3_155_760_000_000),
        ("100.0", 100), ("1e+2", 100),
    ]

    @Test("numbers are milliseconds, fractions rounded up", arguments: valid)
    func validNumber(text: String, expected: Int64) throws {
        #expect(try TTL(jsonNumberText: Array(text.utf8)).milliseconds == expected)
    }

    static let invalid: [(String, String)] = [
        ("0", "greater than 0"), ("0.0", "greater than 0"), ("-5", "greater than 0"), ("-0", "greater than 0"),
        ("-0.5", "greater than 0"), ("3155760000001", "at most 100 years"), ("3155760000000.1", "at most 100 years"),
        ("1e400", "at most 100 years"), ("1e99999999999", "at most 100 years"),
        // Found by the fuzzer: a non-digit in the exponent trapped (the init is public, and
        // trusted its caller to have validated the number).
        ("1e#", "not a number"), ("1e", "not a number"), ("1e+", "not a number"), ("1e1-1", "not a number"), ("1e--1", "not a number"),
    ]

    @Test("zero, negatives and more than 100 years are rejected", arguments: invalid)
    func invalidNumber(text: String, messagePart: String) {
        #expect {
            try TTL(jsonNumberText: Array(text.utf8))
        } throws: { error in
            guard let error = error as? KVError else { return false }
            return error.code == .invalidTTL && error.message.contains(messagePart)
        }
    }

    @Test("the milliseconds initialiser enforces the same bounds")
    func bounds() throws {
        #expect(throws: KVError.self) { try TTL(milliseconds: 0) }
        #expect(throws: KVError.self) { try TTL(milliseconds: TTL.maxMilliseconds + 1) }
        #expect(try TTL(milliseconds: TTL.maxMilliseconds).milliseconds == TTL.maxMilliseconds)
    }
}

@Suite("Byte sizes in settings")
struct ByteSizeTests {
    @Test("sizes read as Redis reads maxmemory; anything else is refused", arguments: [
        ("0", 0), ("1048576", 1 << 20), ("512k", 512 << 10), ("64MB", 64 << 20), ("4g", 4 << 30), ("10b", 10),
    ])
    func sizes(text: String, bytes: Int) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test("junk, signs and overflow are refused", arguments: ["", "k", "-1", "1.5g", "1 g", "1t", "99999999999999999999", "9223372036854775807g"])
    func refused(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }
}
