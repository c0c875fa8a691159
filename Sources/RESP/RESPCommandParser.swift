/// Finds one client command in a read buffer without copying it: the arguments are recorded as
/// byte ranges of the buffer, and the caller executes the command against the buffer in place.
///
/// Accepts what redis-server accepts: arrays of bulk strings (what every client library sends)
/// and inline commands (space-separated words ending in LF, what `nc` users type). Every length
/// is checked against `RESPLimits` as soon as its header is read, before anything is reserved.
public enum RESPCommandParser {
    public enum Outcome: Equatable, Sendable {
        /// A whole command of `consumed` bytes; its arguments are in the ranges array.
        case command(consumed: Int)
        /// `consumed` bytes held no command (a blank line, `*0`): skip them.
        case nothing(consumed: Int)
        /// The command is not complete yet.
        case incomplete
    }

    /// How far an incomplete command has been parsed, so the next read resumes there instead of
    /// parsing it again from its start: a client that drips a 1M-argument command a few bytes at
    /// a time would otherwise cost time quadratic in its size. Positions are relative to the
    /// command's first byte, which stays the buffer's start until the command is complete.
    public struct Progress: Sendable, Equatable {
        /// Where parsing resumes: the start of the first argument not yet read whole.
        var position = 0
        /// Arguments still to read; nil until the `*<count>` line has been read.
        var remaining: Int?
        /// Bytes of an inline command already searched for its LF.
        var scanned = 0

        public init() {}

        var isFresh: Bool { position == 0 && remaining == nil && scanned == 0 }
    }

    /// Parses the command at the start of `bytes`, replacing the contents of `arguments` with the
    /// ranges of its arguments (the name first).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer,
        limits: RESPLimits,
        arguments: inout [Range<Int>]
    ) throws(RESPProtocolError) -> Outcome {
        var progress = Progress()
        return try parse(bytes, limits: limits, arguments: &arguments, progress: &progress)
    }

    /// Parses the command at the start of `bytes`, resuming from `progress` (which an `.incomplete`
    /// outcome updates, and any other outcome resets). `arguments` must be the array given to the
    /// previous call while the command is incomplete: it keeps the arguments already read.
    /// Each byte is looked at a bounded number of times whatever the reads' sizes: the total cost
    /// is linear in the command's size.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer,
        limits: RESPLimits,
        arguments: inout [Range<Int>],
        progress: inout Progress
    ) throws(RESPProtocolError) -> Outcome {
        if progress.isFresh { arguments.removeAll(keepingCapacity: true) }
        guard let first = bytes.first else { return .incomplete }
        if first != UInt8(ascii: "*") { return try parseInline(bytes, limits: limits, arguments: &arguments, progress: &progress) }

        var position = progress.position
        var remaining: Int
        if let left = progress.remaining {
            remaining = left
        } else {
            position = 1
            // At most 18 digits (readNumber's own bound): re-reading this line is cheap.
            guard let count = try readNumber(bytes, at: &position, limits: limits) else { return .incomplete }
            guard count >= 0 else {
                if count == -1 { return .nothing(consumed: position) }  // a null array, as Redis skips it
                throw RESPProtocolError("invalid multibulk length \(count)")
            }
            guard count <= limits.maxElements else {
                throw RESPProtocolError("multibulk of \(count) exceeds the limit of \(limits.maxElements)")
            }
            if count == 0 { return .nothing(consumed: position) }
            remaining = count
            progress.remaining = count
            progress.position = position
        }
        while remaining > 0 {
            guard position < bytes.count else { return .incomplete }
            guard bytes[position] == UInt8(ascii: "$") else {
                throw RESPProtocolError("expected '$' in a command, got '\(Character(Unicode.Scalar(bytes[position])))'")
            }
            position += 1
            guard let length = try readNumber(bytes, at: &position, limits: limits) else { return .incomplete }
            guard length >= 0 else { throw RESPProtocolError("invalid bulk length \(length)") }
            guard length <= limits.maxBulkBytes else {
                throw RESPProtocolError("bulk of \(length) exceeds the limit of \(limits.maxBulkBytes)")
            }
            guard length <= limits.maxCommandBytes - position - 2 else {
                throw RESPProtocolError("command longer than the limit of \(limits.maxCommandBytes) bytes")
            }
            // The bulk's bytes are not looked at until they are all here.
            guard bytes.count - position >= length + 2 else { return .incomplete }
            arguments.append(position..<(position + length))
            position += length
            guard bytes[position] == 0x0D, bytes[position + 1] == 0x0A else {
                throw RESPProtocolError("bulk string not followed by CRLF")
            }
            position += 2
            remaining -= 1
            progress.position = position
            progress.remaining = remaining
        }
        progress = Progress()
        return .command(consumed: position)
    }

    /// Reads a decimal number ending in CRLF at `position`; nil when the CRLF has not arrived.
    private static func readNumber(_ bytes: UnsafeRawBufferPointer, at position: inout Int, limits: RESPLimits) throws(RESPProtocolError) -> Int? {
        var i = position
        var negative = false
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        var value = 0
        var digits = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x0D {
                guard i + 1 < bytes.count else { return nil }
                guard bytes[i + 1] == 0x0A, digits > 0 else { throw RESPProtocolError("invalid length line") }
                position = i + 2
                return negative ? -value : value
            }
            let d = b &- 0x30
            guard d <= 9, digits < 18 else { throw RESPProtocolError("invalid length line") }
            value = value * 10 + Int(d)
            digits += 1
            i += 1
        }
        if i - position > limits.maxLineBytes { throw RESPProtocolError("line longer than \(limits.maxLineBytes) bytes") }
        return nil
    }

    private static func parseInline(
        _ bytes: UnsafeRawBufferPointer, limits: RESPLimits, arguments: inout [Range<Int>], progress: inout Progress
    ) throws(RESPProtocolError) -> Outcome {
        // The search for the LF resumes where the last read's search ended.
        guard let lf = bytes[min(progress.scanned, bytes.count)...].firstIndex(of: 0x0A) else {
            if bytes.count > limits.maxLineBytes { throw RESPProtocolError("line longer than \(limits.maxLineBytes) bytes") }
            progress.scanned = bytes.count
            return .incomplete
        }
        progress = Progress()
        if lf > limits.maxLineBytes { throw RESPProtocolError("line longer than \(limits.maxLineBytes) bytes") }
        let end = lf > 0 && bytes[lf - 1] == 0x0D ? lf - 1 : lf
        var i = 0
        while i < end {
            while i < end, bytes[i] == UInt8(ascii: " ") { i += 1 }
            let start = i
            while i < end, bytes[i] != UInt8(ascii: " ") { i += 1 }
            if i > start { arguments.append(start..<i) }
        }
        return arguments.isEmpty ? .nothing(consumed: lf + 1) : .command(consumed: lf + 1)
    }
}

/// The arguments of one command, viewed in the read buffer. Valid only while that buffer is
/// (inside the parser's caller's `withUnsafeReadableBytes`); copy what must outlive it.
public struct RESPArguments {
    public let bytes: UnsafeRawBufferPointer
    public let ranges: [Range<Int>]

    public init(bytes: UnsafeRawBufferPointer, ranges: [Range<Int>]) {
        self.bytes = bytes
        self.ranges = ranges
    }

    public var count: Int { ranges.count }

    public subscript(index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[ranges[index]])
    }

    /// The argument as text (invalid UTF-8 repaired), for names, options and messages.
    public func string(_ index: Int) -> String {
        String(decoding: self[index], as: UTF8.self)
    }

    /// The argument's bytes, copied.
    public func array(_ index: Int) -> [UInt8] {
        Array(self[index])
    }

    /// The argument as a decimal integer, if it is one.
    public func integer(_ index: Int) -> Int64? {
        Int64(string(index))
    }

    /// Whether the argument equals `word`, ignoring ASCII case.
    public func matches(_ index: Int, _ word: StaticString) -> Bool {
        let arg = self[index]
        guard arg.count == word.utf8CodeUnitCount else { return false }
        let w = UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for i in 0..<arg.count where arg[i] | 0x20 != w[i] | 0x20 { return false }
        return true
    }
}
