/// What is wrong with an access file (or a JWT's `kv` claim), and where.
public struct AccessFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Byte offset in the file, when the problem is at one place.
    public var offset: Int?
    /// 1-based line, once resolved against the file's bytes.
    public var line: Int?

    public init(_ message: String, at offset: Int? = nil) {
        self.message = message
        self.offset = offset
    }

    /// The same error with its line number, counted in `bytes`.
    func located(in bytes: [UInt8]) -> AccessFileError {
        guard let offset else { return self }
        var located = self
        located.line = bytes.prefix(min(max(offset, 0), bytes.count)).reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        return located
    }

    public var description: String { line.map { "line \($0): \(message)" } ?? message }
}
