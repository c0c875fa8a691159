import NIOCore

/// Decodes replies and pushes (RESP2 and RESP3) for clients, with the same hard limits
/// as the command decoder plus a nesting limit. RESP3 attributes (`|`) are skipped.
public struct RESPValueDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPValue
    public let limits: RESPLimits

    public init(limits: RESPLimits) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        try Self.decode(buffer: &buffer, limits: limits)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }

    /// Decodes one value from the front of `buffer`, consuming it only when complete.
    public static func decode(buffer: inout ByteBuffer, limits: RESPLimits) throws(RESPProtocolError) -> RESPValue? {
        var cursor = RESPCursor(buffer: buffer, limits: limits)
        guard let value = try readValue(&cursor, depth: 0) else { return nil }
        buffer = cursor.buffer
        return value
    }

    private static func readValue(_ cursor: inout RESPCursor, depth: Int) throws(RESPProtocolError) -> RESPValue? {
        guard depth <= cursor.limits.maxDepth else {
            throw RESPProtocolError("nesting deeper than \(cursor.limits.maxDepth)")
        }
        guard var line = try cursor.readLine() else { return nil }
        guard let type = line.readInteger(as: UInt8.self) else { throw RESPProtocolError("empty line") }
        switch type {
        case UInt8(ascii: "+"): return .simpleString(line)
        case UInt8(ascii: "-"): return .error(line)
        case UInt8(ascii: ":"): return .integer(try RESPCursor.parseInteger(line))
        case UInt8(ascii: "_"): return .null
        case UInt8(ascii: ","): return .double(line)
        case UInt8(ascii: "("): return .bigNumber(line)
        case UInt8(ascii: "#"):
            switch String(buffer: line) {
            case "t": return .boolean(true)
            case "f": return .boolean(false)
            default: throw RESPProtocolError("invalid boolean")
            }
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let n = try RESPCursor.parseInteger(line)
            if n == -1 && type == UInt8(ascii: "$") { return .null }
            let length = try cursor.checkLength(n, limit: cursor.limits.maxBulkBytes, what: "bulk")
            guard let body = try cursor.readBulkBody(length: length) else { return nil }
            switch type {
            case UInt8(ascii: "$"): return .bulkString(body)
            case UInt8(ascii: "!"): return .blobError(body)
            default: return .verbatimString(body)
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let n = try RESPCursor.parseInteger(line)
            if n == -1 && type == UInt8(ascii: "*") { return .null }
            let pairs = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
            let count = try cursor.checkLength(n, limit: cursor.limits.maxElements, what: "aggregate")
            let total = pairs ? count * 2 : count
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(total, 64))
            for _ in 0..<total {
                guard let element = try readValue(&cursor, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            switch type {
            case UInt8(ascii: "*"): return .array(elements)
            case UInt8(ascii: "~"): return .set(elements)
            case UInt8(ascii: ">"): return .push(elements)
            case UInt8(ascii: "%"): return .map(elements)
            default: return try readValue(&cursor, depth: depth)  // attribute: the real value follows
            }
        default:
            throw RESPProtocolError("unknown type byte \(type)")
        }
    }
}
