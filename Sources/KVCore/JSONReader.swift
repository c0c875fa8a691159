/// A strict RFC 8259 reader for request bodies and WebSocket messages.
///
/// It validates the whole document (no trailing commas, comments, `NaN`, leading zeros,
/// control characters in strings, invalid UTF-8, lone surrogate escapes, trailing garbage,
/// or nesting deeper than `maxDepth`) and hands back where each value sits in the original
/// bytes, so a stored value is the client's own text: `1.0` stays `1.0`, big integers stay
/// exact, `1` never becomes `true`. Foundation's `JSONSerialization` cannot promise that.
///
/// Objects at depth 0 and 1 have their members recorded (enough for `{value, ttl}` bodies
/// and `{type, payload: {key, value, ttl}}` messages); deeper objects are only validated.
/// A configuration file asks for more with `recordDepth`: then objects and arrays down to that
/// depth have their members and elements recorded.
public struct JSONReader: Sendable {
    /// Deepest nesting accepted. docs/api.md asks for at least 128.
    public static let defaultMaxDepth = 512
    public var maxDepth: Int
    /// Objects and arrays at this depth or shallower have their contents recorded (arrays only
    /// when it is above 1, so request parsing records what it always did).
    public var recordDepth: Int

    public init(maxDepth: Int = JSONReader.defaultMaxDepth, recordDepth: Int = 1) {
        self.maxDepth = maxDepth
        self.recordDepth = recordDepth
    }

    /// Reads one JSON document.
    public func read(_ bytes: [UInt8]) throws(KVError) -> JSONDocument {
        try readLocated(bytes).mapError { $0.error }.get()
    }

    /// Reads one JSON document; a failure also says at which byte (for a file's line numbers).
    public func readLocated(_ bytes: [UInt8]) -> Result<JSONDocument, LocatedError> {
        let result: Result<JSONValue, LocatedError> = bytes.withUnsafeBytes { raw in
            var parser = JSONParser(bytes: raw, maxDepth: maxDepth, recordDepth: recordDepth)
            do throws(KVError) { return .success(try parser.parseDocument()) } catch { return .failure(LocatedError(error: error, offset: parser.position)) }
        }
        return result.map { JSONDocument(bytes: bytes, root: $0) }
    }

    public struct LocatedError: Error, Sendable {
        public var error: KVError
        public var offset: Int
    }
}

/// A validated JSON document and the positions of its values.
public struct JSONDocument: Sendable {
    public let bytes: [UInt8]
    public let root: JSONValue

    /// The original text of `value`, with whitespace outside strings dropped.
    public func compactText(of value: JSONValue) -> [UInt8] {
        let slice = bytes[value.range]
        guard value.kind == .object || value.kind == .array else { return Array(slice) }
        var out: [UInt8] = []
        out.reserveCapacity(slice.count)
        var inString = false
        var escaped = false
        for byte in slice {
            if inString {
                if escaped { escaped = false }
                else if byte == UInt8(ascii: "\\") { escaped = true }
                else if byte == UInt8(ascii: "\"") { inString = false }
                out.append(byte)
            } else {
                switch byte {
                case 0x20, 0x09, 0x0A, 0x0D: continue
                case UInt8(ascii: "\""): inString = true; out.append(byte)
                default: out.append(byte)
                }
            }
        }
        return out
    }

    /// The decoded contents of a string value (escapes resolved); nil for other kinds.
    public func string(_ value: JSONValue) -> String? {
        guard value.kind == .string else { return nil }
        let inner = bytes[(value.range.lowerBound + 1)..<(value.range.upperBound - 1)]
        guard inner.contains(UInt8(ascii: "\\")) else { return String(decoding: inner, as: UTF8.self) }
        return JSONStringDecoder.decode(inner)
    }

    /// The original text of a number value; nil for other kinds.
    public func numberText(_ value: JSONValue) -> ArraySlice<UInt8>? {
        value.kind == .number ? bytes[value.range] : nil
    }
}

/// Where one JSON value sits in its document.
public struct JSONValue: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case object, array, string, number, `true`, `false`, null
    }

    public let kind: Kind
    /// Byte range of the value's text in `JSONDocument.bytes`.
    public let range: Range<Int>
    /// Members of an object at depth 0 or 1, in document order; nil otherwise.
    public let members: [JSONMember]?
    /// Elements of an array within the reader's `recordDepth` (above 1); nil otherwise.
    public var elements: [JSONValue]? = nil

    /// The member named `name`, when this is a recorded object that has one.
    public subscript(member name: String) -> JSONValue? {
        members?.first { $0.name == name }?.value
    }
}

public struct JSONMember: Sendable, Equatable {
    public let name: String
    public let value: JSONValue
}

/// Resolves the escapes of a validated JSON string body.
enum JSONStringDecoder {
    static func decode(_ inner: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(inner.count)
        var i = inner.startIndex
        func hex4(_ at: Int) -> UInt32 {
            var v: UInt32 = 0
            for k in 0..<4 {
                let c = inner[at + k]
                let d: UInt32 = switch c {
                case 0x30...0x39: UInt32(c - 0x30)
                case 0x41...0x46: UInt32(c - 0x41 + 10)
                default: UInt32(c - 0x61 + 10)
                }
                v = v << 4 | d
            }
            return v
        }
        while i < inner.endIndex {
            let b = inner[i]
            guard b == UInt8(ascii: "\\") else { out.append(b); i += 1; continue }
            let e = inner[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(i)
                i += 4
                if scalar >= 0xD800 && scalar < 0xDC00 {  // the validator guaranteed a low surrogate follows
                    let low = hex4(i + 2)
                    i += 6
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8))
            default: out.append(e)  // \" \\ \/
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Recursive descent over the raw bytes; recursion depth is bounded by `maxDepth`.
struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    let recordDepth: Int
    var position = 0

    init(bytes: UnsafeRawBufferPointer, maxDepth: Int, recordDepth: Int = 1) {
        self.bytes = bytes
        self.maxDepth = maxDepth
        self.recordDepth = recordDepth
    }

    private func fail(_ what: String) -> KVError {
        if position >= bytes.count {
            return KVError(.invalidJSON, "invalid JSON: unexpected end of input, \(what)")
        }
        return KVError(.invalidJSON, "invalid JSON at byte \(position): \(what)")
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func parseDocument() throws(KVError) -> JSONValue {
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        if position < bytes.count { throw fail("unexpected data after the JSON value") }
        return value
    }

    private mutating func parseValue(depth: Int) throws(KVError) -> JSONValue {
        guard let c = current else { throw fail("expected a value") }
        let start = position
        switch c {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["):
            // Separate paths, so request parsing (which never records arrays) keeps its small
            // stack frame: it recurses up to `maxDepth` levels on kv-fcgi's worker threads.
            if recordDepth > 1 { return try parseRecordedArray(depth: depth, start: start) }
            try parseArray(depth: depth)
            return JSONValue(kind: .array, range: start..<position, members: nil)
        case UInt8(ascii: "\""): try parseString(); return JSONValue(kind: .string, range: start..<position, members: nil)
        case UInt8(ascii: "t"): try expectLiteral("true"); return JSONValue(kind: .true, range: start..<position, members: nil)
        case UInt8(ascii: "f"): try expectLiteral("false"); return JSONValue(kind: .false, range: start..<position, members: nil)
        case UInt8(ascii: "n"): try expectLiteral("null"); return JSONValue(kind: .null, range: start..<position, members: nil)
        case UInt8(ascii: "-"), 0x30...0x39: try parseNumber(); return JSONValue(kind: .number, range: start..<position, members: nil)
        default: throw fail("expected a value")
        }
    }

    private mutating func enter(_ depth: Int) throws(KVError) {
        if depth >= maxDepth { throw fail("nesting deeper than \(maxDepth) levels") }
    }

    private mutating func parseObject(depth: Int) throws(KVError) -> JSONValue {
        try enter(depth)
        let start = position
        let recording = depth <= max(1, recordDepth)
        var members: [JSONMember] = []
        // Names seen so far: the duplicate check must cost O(1) per member, or an object of n
        // members costs n²/2 comparisons (40,000 members took 5 s). Swift's hashing is seeded
        // per process, so colliding names cannot be precomputed.
        var names = Set<String>()
        position += 1
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            return JSONValue(kind: .object, range: start..<position, members: recording ? [] : nil)
        }
        while true {
            guard current == UInt8(ascii: "\"") else { throw fail("expected a member name in double quotes") }
            let nameStart = position
            try parseString()
            let nameEnd = position
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw fail("expected ':' after a member name") }
            position += 1
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            if recording {
                let inner = ArraySlice(bytes[(nameStart + 1)..<(nameEnd - 1)])
                let name = inner.contains(UInt8(ascii: "\\"))
                    ? JSONStringDecoder.decode(inner) : String(decoding: inner, as: UTF8.self)
                guard names.insert(name).inserted else {
                    throw KVError(.invalidJSON, "invalid JSON: duplicate member \"\(name.prefix(100))\"")
                }
                members.append(JSONMember(name: name, value: value))
            }
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "}"):
                position += 1
                return JSONValue(kind: .object, range: start..<position, members: recording ? members : nil)
            default:
                throw fail("expected ',' or '}' in an object")
            }
        }
    }

    /// An array within `recordDepth`, with its elements (configuration files).
    private mutating func parseRecordedArray(depth: Int, start: Int) throws(KVError) -> JSONValue {
        guard depth <= recordDepth else {
            try parseArray(depth: depth)
            return JSONValue(kind: .array, range: start..<position, members: nil)
        }
        try enter(depth)
        var elements: [JSONValue] = []
        position += 1
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            return JSONValue(kind: .array, range: start..<position, members: nil, elements: [])
        }
        while true {
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "]"):
                position += 1
                return JSONValue(kind: .array, range: start..<position, members: nil, elements: elements)
            default:
                throw fail("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(KVError) {
        try enter(depth)
        position += 1
        skipWhitespace()
        if current == UInt8(ascii: "]") { position += 1; return }
        while true {
            _ = try parseValue(depth: depth + 1)
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "]"):
                position += 1
                return
            default:
                throw fail("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(KVError) {
        let n = literal.utf8CodeUnitCount
        guard position + n <= bytes.count else { throw fail("invalid literal") }
        let expected = UnsafeRawBufferPointer(start: literal.utf8Start, count: n)
        for k in 0..<n where bytes[position + k] != expected[k] {
            throw fail("invalid literal")
        }
        position += n
    }

    private static func isDigit(_ b: UInt8?) -> Bool {
        guard let b else { return false }
        return b >= 0x30 && b <= 0x39
    }

    private mutating func parseNumber() throws(KVError) {
        if current == UInt8(ascii: "-") { position += 1 }
        if current == UInt8(ascii: "0") {
            position += 1
            if Self.isDigit(current) { throw fail("leading zeros are not allowed in numbers") }
        } else if Self.isDigit(current) {
            while Self.isDigit(current) { position += 1 }
        } else {
            throw fail("expected a digit")
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard Self.isDigit(current) else { throw fail("expected a digit after '.'") }
            while Self.isDigit(current) { position += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard Self.isDigit(current) else { throw fail("expected a digit in the exponent") }
            while Self.isDigit(current) { position += 1 }
        }
    }

    private mutating func hex4() throws(KVError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw fail("incomplete \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            position += 1
        }
        return v
    }

    private mutating func parseString() throws(KVError) {
        position += 1  // opening quote
        while true {
            // Fast path over plain ASCII.
            while position < bytes.count {
                let b = bytes[position]
                if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b < 0x20 || b >= 0x80 { break }
                position += 1
            }
            guard let b = current else { throw fail("unterminated string") }
            switch b {
            case UInt8(ascii: "\""):
                position += 1
                return
            case UInt8(ascii: "\\"):
                position += 1
                guard let e = current else { throw fail("unterminated escape") }
                position += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    let unit = try hex4()
                    if unit >= 0xDC00 && unit <= 0xDFFF { throw fail("lone low surrogate in \\u escape") }
                    if unit >= 0xD800 && unit <= 0xDBFF {
                        guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"),
                              bytes[position + 1] == UInt8(ascii: "u")
                        else { throw fail("lone high surrogate in \\u escape") }
                        position += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low <= 0xDFFF else { throw fail("lone high surrogate in \\u escape") }
                    }
                default:
                    position -= 1
                    throw fail("invalid escape")
                }
            default:
                if b < 0x20 { throw fail("control character in string") }
                // A multi-byte UTF-8 sequence: validate just this scalar.
                let end = min(position + 4, bytes.count)
                let window = UnsafeRawBufferPointer(rebasing: bytes[position..<end])
                let length: Int = switch b {
                case 0xC2...0xDF: 2
                case 0xE0...0xEF: 3
                case 0xF0...0xF4: 4
                default: 0
                }
                guard length > 0, length <= window.count,
                      UTF8Validation.isValid(UnsafeRawBufferPointer(rebasing: window[0..<length]))
                else { throw fail("invalid UTF-8 in string") }
                position += length
            }
        }
    }
}
