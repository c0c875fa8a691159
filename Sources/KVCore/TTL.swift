/// A time to live, in whole milliseconds: greater than 0 and at most 100 years.
///
/// Two spellings reach it (see docs/api.md, "TTL"): a JSON number of milliseconds, and a
/// duration string in the style of npm `ms`, extended to compound forms such as
/// `"10 hours 1m 5s"`. Fractions are rounded up to the next whole millisecond after
/// summing, with exact decimal arithmetic.
public struct TTL: Sendable, Equatable, Hashable, CustomStringConvertible {
    public let milliseconds: Int64

    /// 100 years of 365.25 days, the longest TTL accepted.
    public static let maxMilliseconds: Int64 = 3_155_760_000_000
    /// The longest duration string accepted, in characters (bytes; every valid string is ASCII).
    public static let maxStringLength = 100

    public init(milliseconds: Int64) throws(KVError) {
        guard milliseconds > 0 else { throw KVError(.invalidTTL, "ttl: must be greater than 0") }
        guard milliseconds <= Self.maxMilliseconds else { throw Self.tooLong }
        self.milliseconds = milliseconds
    }

    public var description: String { "\(milliseconds)ms" }

    static let tooLong = KVError(.invalidTTL, "ttl: must be at most 100 years")

    /// Milliseconds per unit; a year is 365.25 days as in npm `ms`. All factors are whole milliseconds.
    static let unitFactors: [String: UInt128] = {
        let ms: UInt128 = 1, s: UInt128 = 1000, m = 60 * s, h = 60 * m, d = 24 * h, w = 7 * d
        let y: UInt128 = 31_557_600_000
        var table: [String: UInt128] = [:]
        for name in ["ms", "msec", "msecs", "millisecond", "milliseconds"] { table[name] = ms }
        for name in ["s", "sec", "secs", "second", "seconds"] { table[name] = s }
        for name in ["m", "min", "mins", "minute", "minutes"] { table[name] = m }
        for name in ["h", "hr", "hrs", "hour", "hours"] { table[name] = h }
        for name in ["d", "day", "days"] { table[name] = d }
        for name in ["w", "week", "weeks"] { table[name] = w }
        for name in ["y", "yr", "yrs", "year", "years"] { table[name] = y }
        return table
    }()

    private static func finish(_ total: FixedPointDecimal) throws(KVError) -> TTL {
        if total.isZero { throw KVError(.invalidTTL, "ttl: must be greater than 0") }
        let rounded = total.roundedUp
        guard rounded <= UInt128(maxMilliseconds) else { throw tooLong }
        return try TTL(milliseconds: Int64(rounded))
    }

    /// The `ttl` member of a request: absent or null means none; a number is milliseconds;
    /// a string is a duration; anything else is invalid.
    public static func fromJSON(_ member: JSONValue?, in document: JSONDocument) throws(KVError) -> TTL? {
        guard let member, member.kind != .null else { return nil }
        switch member.kind {
        case .number:
            return try TTL(jsonNumberText: document.bytes[member.range])
        case .string:
            return try TTL(durationString: document.string(member) ?? "")
        default:
            throw KVError(.invalidTTL, "ttl: must be a number of milliseconds or a duration string, not \(member.kind.rawValue)")
        }
    }

    // MARK: - JSON numbers

    /// Reads the text of a JSON number (already checked against RFC 8259 by `JSONReader`)
    /// as milliseconds: `1500`, `1.5` (→ 2 ms), `1e3`.
    public init<C: Collection>(jsonNumberText text: C) throws(KVError) where C.Element == UInt8 {
        var digits: [UInt8] = []
        var pointPosition: Int? = nil
        var exponent = 0
        var negative = false
        var index = text.startIndex
        if index < text.endIndex, text[index] == UInt8(ascii: "-") {
            negative = true
            index = text.index(after: index)
        }
        while index < text.endIndex {
            let byte = text[index]
            if byte >= 0x30 && byte <= 0x39 {
                digits.append(byte - 0x30)
            } else if byte == UInt8(ascii: ".") {
                pointPosition = digits.count
            } else if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                guard let parsed = Self.parseExponent(text[text.index(after: index)...]) else {
                    throw KVError(.invalidTTL, "ttl: not a number")
                }
                exponent = parsed
                break
            } else {
                throw KVError(.invalidTTL, "ttl: not a number")
            }
            index = text.index(after: index)
        }
        guard !digits.isEmpty else { throw KVError(.invalidTTL, "ttl: not a number") }
        let point = (pointPosition ?? digits.count) + exponent
        guard let value = FixedPointDecimal(digits: digits, pointPosition: point, maxInteger: UInt128(Self.maxMilliseconds))
        else { throw Self.tooLong }
        if negative && !value.isZero { throw KVError(.invalidTTL, "ttl: must be greater than 0") }
        self = try Self.finish(value)
    }

    /// The exponent clamped to ±100 000: far enough that every clamped value is
    /// either far above 100 years or a nonzero sliver that rounds up to 1 ms. Nil unless it is
    /// an optional sign and digits: this init is public, and no text may trap it (the fuzzer
    /// found `1e#`, which wrapped below zero).
    private static func parseExponent<C: Collection>(_ text: C) -> Int? where C.Element == UInt8 {
        var sign = 1
        var value = 0
        var digits = 0
        for (offset, byte) in text.enumerated() {
            if offset == 0 && (byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")) {
                sign = byte == UInt8(ascii: "-") ? -1 : 1
            } else if byte >= 0x30 && byte <= 0x39 {
                value = min(value * 10 + Int(byte - 0x30), 100_000)
                digits += 1
            } else {
                return nil
            }
        }
        return digits > 0 ? sign * value : nil
    }

    // MARK: - Duration strings

    /// Parses a duration string: one or more `<number><spaces?><unit>` terms separated by
    /// spaces and/or a single comma, or one bare number of milliseconds.
    public init(durationString string: some StringProtocol) throws(KVError) {
        let bytes = Array(string.utf8)
        guard bytes.count <= Self.maxStringLength else {
            throw KVError(.invalidTTL, "ttl: a duration string is at most \(Self.maxStringLength) characters")
        }
        var parser = DurationParser(bytes: bytes)
        self = try Self.finish(try parser.parse())
    }
}

/// The grammar of duration strings, one byte at a time. Every valid string is ASCII.
private struct DurationParser {
    let bytes: [UInt8]
    var position: Int

    init(bytes: [UInt8]) {
        var start = 0, end = bytes.count
        while start < end, bytes[start] == UInt8(ascii: " ") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") { end -= 1 }
        self.bytes = Array(bytes[start..<end])
        self.position = 0
    }

    private var atEnd: Bool { position >= bytes.count }
    private var rest: String { String(decoding: bytes[position...], as: UTF8.self) }

    private mutating func skipSpaces() {
        while !atEnd, bytes[position] == UInt8(ascii: " ") { position += 1 }
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    private static func isLetter(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }

    mutating func parse() throws(KVError) -> FixedPointDecimal {
        if bytes.isEmpty { throw KVError(.invalidTTL, "ttl: empty duration") }
        var total = FixedPointDecimal.zero
        var isFirstTerm = true
        while true {
            let (number, numberText) = try parseNumber()
            skipSpaces()
            let unitStart = position
            while !atEnd, Self.isLetter(bytes[position]) { position += 1 }
            let unit = String(decoding: bytes[unitStart..<position], as: UTF8.self)
            if unit.isEmpty {
                if isFirstTerm && atEnd { return number }  // a bare number is milliseconds
                throw KVError(.invalidTTL, "ttl: missing unit after \"\(numberText)\"")
            }
            guard let factor = TTL.unitFactors[unit.lowercased()] else {
                throw KVError(.invalidTTL, "ttl: unknown unit \"\(unit)\"")
            }
            // Bound before multiplying so the exact product always fits in 128 bits.
            guard number.integerPart * factor <= UInt128(TTL.maxMilliseconds) else { throw TTL.tooLong }
            total = total + number.multiplied(by: factor)
            guard total.integerPart <= UInt128(TTL.maxMilliseconds) else { throw TTL.tooLong }
            isFirstTerm = false

            skipSpaces()
            if atEnd { return total }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                skipSpaces()
                if atEnd { throw KVError(.invalidTTL, "ttl: a comma must be followed by another term") }
            }
        }
    }

    /// `digits ['.' digits]` or `'.' digits`; no sign, no exponent.
    private mutating func parseNumber() throws(KVError) -> (FixedPointDecimal, String) {
        let start = position
        var digits: [UInt8] = []
        while !atEnd, Self.isDigit(bytes[position]) { digits.append(bytes[position] - 0x30); position += 1 }
        let pointPosition = digits.count
        if !atEnd, bytes[position] == UInt8(ascii: ".") {
            position += 1
            let fractionStart = digits.count
            while !atEnd, Self.isDigit(bytes[position]) { digits.append(bytes[position] - 0x30); position += 1 }
            if digits.count == fractionStart {
                throw KVError(.invalidTTL, "ttl: expected digits after \".\" in \"\(String(decoding: bytes[start..<position], as: UTF8.self))\"")
            }
        }
        if digits.isEmpty {
            if atEnd { throw KVError(.invalidTTL, "ttl: expected a number at the end") }
            throw KVError(.invalidTTL, "ttl: expected a number at \"\(rest)\"")
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        guard let value = FixedPointDecimal(digits: digits, pointPosition: pointPosition, maxInteger: UInt128(TTL.maxMilliseconds))
        else { throw TTL.tooLong }
        return (value, text)
    }
}
