import NIOCore

/// Reads RESP framing from a ByteBuffer without consuming it until a whole frame is present.
/// Every method returns nil for "need more bytes" and throws for a broken frame.
struct RESPCursor {
    var buffer: ByteBuffer
    let limits: RESPLimits

    init(buffer: ByteBuffer, limits: RESPLimits) {
        self.buffer = buffer
        self.limits = limits
    }

    /// The bytes before the next CRLF (consumed with it), or nil when no CRLF has arrived yet.
    mutating func readLine() throws(RESPProtocolError) -> ByteBuffer? {
        let found: Int? = buffer.withUnsafeReadableBytes { raw in
            guard raw.count >= 2 else { return nil }
            var i = 0
            while let lf = raw[i...].firstIndex(of: 0x0A) {
                if lf > 0 && raw[lf - 1] == 0x0D { return lf - 1 }
                i = lf + 1
                if i >= raw.count { break }
            }
            return nil
        }
        guard let length = found else {
            if buffer.readableBytes > limits.maxLineBytes {
                throw RESPProtocolError("line longer than \(limits.maxLineBytes) bytes")
            }
            return nil
        }
        if length > limits.maxLineBytes { throw RESPProtocolError("line longer than \(limits.maxLineBytes) bytes") }
        let line = buffer.readSlice(length: length)
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }

    /// A signed decimal line such as the `3` of `*3\r\n`.
    static func parseInteger(_ line: ByteBuffer) throws(RESPProtocolError) -> Int64 {
        let parsed: Int64? = line.withUnsafeReadableBytes { raw in
            guard !raw.isEmpty, raw.count <= 20 else { return nil }
            var i = 0
            var negative = false
            if raw[0] == UInt8(ascii: "-") { negative = true; i = 1 } else if raw[0] == UInt8(ascii: "+") { i = 1 }
            guard i < raw.count else { return nil }
            var value: Int64 = 0
            while i < raw.count {
                let d = raw[i] &- 0x30
                guard d <= 9 else { return nil }
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(Int64(d))
                if o1 || o2 { return nil }
                value = s
                i += 1
            }
            return negative ? -value : value
        }
        guard let parsed else { throw RESPProtocolError("invalid integer \"\(String(buffer: line))\"") }
        return parsed
    }

    /// The `<n>` bytes of a bulk string and its CRLF, after its header line was read.
    mutating func readBulkBody(length: Int) throws(RESPProtocolError) -> ByteBuffer? {
        guard buffer.readableBytes >= length + 2 else { return nil }
        guard let body = buffer.readSlice(length: length) else { return nil }
        let crlf = buffer.readInteger(as: UInt16.self)
        guard crlf == 0x0D0A else { throw RESPProtocolError("bulk string not followed by CRLF") }
        return body
    }

    /// Checks a declared length against a limit before anything is allocated for it.
    func checkLength(_ n: Int64, limit: Int, what: String) throws(RESPProtocolError) -> Int {
        guard n >= 0 else { throw RESPProtocolError("invalid \(what) length \(n)") }
        guard n <= Int64(limit) else { throw RESPProtocolError("\(what) of \(n) exceeds the limit of \(limit)") }
        return Int(n)
    }
}
