/// Hard limits a decoder checks before allocating anything for a frame.
public struct RESPLimits: Sendable, Equatable {
    /// Longest bulk string (`$<n>`), in bytes.
    public var maxBulkBytes: Int
    /// Most elements in one aggregate (`*<n>`, `%<n>` …) or arguments in one command.
    public var maxElements: Int
    /// Longest type line or inline command before its CRLF.
    public var maxLineBytes: Int
    /// Deepest nesting of aggregates (replies only; commands are flat).
    public var maxDepth: Int
    /// Longest command as a whole (all its arguments and their framing): what one incomplete
    /// command may hold in a server's read buffer.
    public var maxCommandBytes: Int

    public init(maxBulkBytes: Int, maxElements: Int = 1 << 20, maxLineBytes: Int = 64 << 10, maxDepth: Int = 64, maxCommandBytes: Int = .max) {
        self.maxBulkBytes = maxBulkBytes
        self.maxElements = maxElements
        self.maxLineBytes = maxLineBytes
        self.maxDepth = maxDepth
        self.maxCommandBytes = maxCommandBytes
    }
}

/// A frame that breaks the protocol or a limit. The connection cannot continue after it.
public struct RESPProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "Protocol error: \(message)" }
}
