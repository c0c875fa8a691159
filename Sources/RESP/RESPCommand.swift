import NIOCore

/// A client command: its arguments as the bytes the client sent, the name first.
public struct RESPCommand: Sendable, Equatable {
    public var arguments: [ByteBuffer]

    public init(arguments: [ByteBuffer]) {
        self.arguments = arguments
    }

    public init(_ words: String...) {
        self.arguments = words.map { ByteBuffer(string: $0) }
    }

    /// The command name in upper case (ASCII), for dispatch.
    public var name: String {
        guard let first = arguments.first else { return "" }
        return String(buffer: first).uppercased()
    }
}

/// Decodes commands the way redis-server does: arrays of bulk strings (what every client
/// library sends) and inline commands (space-separated words, what `nc` users type).
/// Oversize lengths are rejected from the header, before any allocation.
public struct RESPCommandDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPCommand
    public let limits: RESPLimits

    public init(limits: RESPLimits) {
        self.limits = limits
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPCommand? {
        try Self.decode(buffer: &buffer, limits: limits)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPCommand? {
        try decode(buffer: &buffer)
    }

    static func decode(buffer: inout ByteBuffer, limits: RESPLimits) throws(RESPProtocolError) -> RESPCommand? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var cursor = RESPCursor(buffer: buffer, limits: limits)
        guard first == UInt8(ascii: "*") else {
            guard let line = try cursor.readLine() else { return nil }
            buffer = cursor.buffer
            let words = line.readableBytesView.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            if words.isEmpty { return try decode(buffer: &buffer, limits: limits) }  // blank line: skip it
            return RESPCommand(arguments: words.map { ByteBuffer(bytes: $0) })
        }
        guard var header = try cursor.readLine() else { return nil }
        header.moveReaderIndex(forwardBy: 1)
        let count = try cursor.checkLength(try RESPCursor.parseInteger(header), limit: limits.maxElements, what: "multibulk")
        var arguments: [ByteBuffer] = []
        arguments.reserveCapacity(min(count, 64))
        for _ in 0..<count {
            guard var bulkHeader = try cursor.readLine() else { return nil }
            guard bulkHeader.readInteger(as: UInt8.self) == UInt8(ascii: "$") else {
                throw RESPProtocolError("expected '$' in a command, got something else")
            }
            let length = try cursor.checkLength(try RESPCursor.parseInteger(bulkHeader), limit: limits.maxBulkBytes, what: "bulk")
            guard let body = try cursor.readBulkBody(length: length) else { return nil }
            arguments.append(body)
        }
        buffer = cursor.buffer
        if arguments.isEmpty { return try decode(buffer: &buffer, limits: limits) }  // `*0`: nothing to do
        return RESPCommand(arguments: arguments)
    }
}
