import NIOCore

/// Encoders for every frame kv-stored and its clients send. Aggregates whose RESP3 type has
/// no RESP2 counterpart (push, map, null) are written in their RESP2 form on a RESP2 connection.
extension ByteBuffer {
    @inlinable
    public mutating func writeRESPDecimal(_ value: Int) {
        if value >= 0 && value < 10 {
            writeInteger(UInt8(truncatingIfNeeded: 0x30 + value))
            return
        }
        writeString(String(value))
    }

    @inlinable
    mutating func writeCRLF() {
        writeInteger(UInt16(0x0D0A))
    }

    public mutating func writeRESPSimpleString(_ text: String) {
        writeInteger(UInt8(ascii: "+"))
        writeString(text)
        writeCRLF()
    }

    public mutating func writeRESPOK() {
        writeStaticString("+OK\r\n")
    }

    /// An error reply. `text` starts with its code (`ERR`, `WRONGTYPE`, …) as in Redis;
    /// CR and LF are replaced so the frame stays one line.
    public mutating func writeRESPError(_ text: String) {
        writeInteger(UInt8(ascii: "-"))
        // Byte-wise: in a Swift String "\r\n" is one Character, so String-level replacing misses it.
        writeBytes(text.utf8.map { $0 == 0x0D || $0 == 0x0A ? UInt8(ascii: " ") : $0 })
        writeCRLF()
    }

    public mutating func writeRESPInteger(_ value: Int) {
        writeInteger(UInt8(ascii: ":"))
        writeRESPDecimal(value)
        writeCRLF()
    }

    public mutating func writeRESPBulkHeader(length: Int) {
        writeInteger(UInt8(ascii: "$"))
        writeRESPDecimal(length)
        writeCRLF()
    }

    public mutating func writeRESPBulkString(_ bytes: UnsafeRawBufferPointer) {
        writeRESPBulkHeader(length: bytes.count)
        writeBytes(bytes)
        writeCRLF()
    }

    public mutating func writeRESPBulkString(_ value: ByteBuffer) {
        writeRESPBulkHeader(length: value.readableBytes)
        writeImmutableBuffer(value)
        writeCRLF()
    }

    public mutating func writeRESPBulkString(_ text: String) {
        writeRESPBulkHeader(length: text.utf8.count)
        writeString(text)
        writeCRLF()
    }

    /// `_` on RESP3, `$-1` (null bulk) on RESP2.
    public mutating func writeRESPNull(_ version: RESPVersion) {
        writeStaticString(version == .v3 ? "_\r\n" : "$-1\r\n")
    }

    public mutating func writeRESPArrayHeader(count: Int) {
        writeInteger(UInt8(ascii: "*"))
        writeRESPDecimal(count)
        writeCRLF()
    }

    /// `>` on RESP3; a plain array on RESP2, where pushes are only sent in subscriber mode.
    public mutating func writeRESPPushHeader(count: Int, version: RESPVersion) {
        writeInteger(version == .v3 ? UInt8(ascii: ">") : UInt8(ascii: "*"))
        writeRESPDecimal(count)
        writeCRLF()
    }

    /// `%` with `count` pairs on RESP3; an array of `2 * count` elements on RESP2.
    public mutating func writeRESPMapHeader(count: Int, version: RESPVersion) {
        if version == .v3 {
            writeInteger(UInt8(ascii: "%"))
            writeRESPDecimal(count)
        } else {
            writeInteger(UInt8(ascii: "*"))
            writeRESPDecimal(count * 2)
        }
        writeCRLF()
    }

    /// A command as clients send it: an array of bulk strings.
    public mutating func writeRESPCommand(_ arguments: [ByteBuffer]) {
        writeRESPArrayHeader(count: arguments.count)
        for argument in arguments { writeRESPBulkString(argument) }
    }

    /// Any value, in its own RESP3 form (tests and tools).
    public mutating func writeRESPValue(_ value: RESPValue) {
        switch value {
        case .simpleString(let b): writeInteger(UInt8(ascii: "+")); writeImmutableBuffer(b); writeCRLF()
        case .error(let b): writeInteger(UInt8(ascii: "-")); writeImmutableBuffer(b); writeCRLF()
        case .integer(let i): writeRESPInteger(Int(i))
        case .bulkString(let b): writeRESPBulkString(b)
        case .null: writeRESPNull(.v3)
        case .boolean(let v): writeStaticString(v ? "#t\r\n" : "#f\r\n")
        case .double(let b): writeInteger(UInt8(ascii: ",")); writeImmutableBuffer(b); writeCRLF()
        case .bigNumber(let b): writeInteger(UInt8(ascii: "(")); writeImmutableBuffer(b); writeCRLF()
        case .verbatimString(let b): writeInteger(UInt8(ascii: "=")); writeRESPDecimal(b.readableBytes); writeCRLF(); writeImmutableBuffer(b); writeCRLF()
        case .blobError(let b): writeInteger(UInt8(ascii: "!")); writeRESPDecimal(b.readableBytes); writeCRLF(); writeImmutableBuffer(b); writeCRLF()
        case .array(let a): writeAggregate(UInt8(ascii: "*"), a, count: a.count)
        case .set(let a): writeAggregate(UInt8(ascii: "~"), a, count: a.count)
        case .push(let a): writeAggregate(UInt8(ascii: ">"), a, count: a.count)
        case .map(let a): writeAggregate(UInt8(ascii: "%"), a, count: a.count / 2)
        }
    }

    private mutating func writeAggregate(_ type: UInt8, _ elements: [RESPValue], count: Int) {
        writeInteger(type)
        writeRESPDecimal(count)
        writeCRLF()
        for element in elements { writeRESPValue(element) }
    }
}
