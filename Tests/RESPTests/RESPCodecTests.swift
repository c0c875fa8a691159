import NIOCore
import NIOTestUtils
import Testing
@testable import RESP

private let limits = RESPLimits(maxBulkBytes: 1 << 20, maxElements: 1000, maxLineBytes: 1024, maxDepth: 8)

private func encoded(_ value: RESPValue) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.writeRESPValue(value)
    return buffer
}

@Suite("RESP value codec")
struct RESPValueCodecTests {
    static let values: [RESPValue] = [
        .simpleString(ByteBuffer(string: "OK")), .error(ByteBuffer(string: "ERR nope")), .integer(-42), .integer(Int64.max),
        .bulkString(ByteBuffer(string: "hello\r\nworld")), .bulkString(ByteBuffer()), .null, .boolean(true), .boolean(false),
        .double(ByteBuffer(string: "3.14")), .bigNumber(ByteBuffer(string: "123456789012345678901234567890")),
        .verbatimString(ByteBuffer(string: "txt:some text")), .blobError(ByteBuffer(string: "SYNTAX bad\r\n")),
        .array([]), .array([.integer(1), .bulkString(ByteBuffer(string: "x")), .array([.null])]),
        .set([.simpleString(ByteBuffer(string: "a"))]), .map([.bulkString(ByteBuffer(string: "k")), .integer(1)]),
        .push([.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "key")), .bulkString(ByteBuffer(string: "set:1:v"))]),
    ]

    @Test("every frame type round-trips, split at every byte boundary")
    func roundTripEverySplit() throws {
        for value in Self.values {
            let bytes = encoded(value)
            for split in 0...bytes.readableBytes {
                var first = bytes.getSlice(at: 0, length: split)!
                var decoder = RESPValueDecoder(limits: limits)
                if split < bytes.readableBytes {
                    #expect(try decoder.decode(buffer: &first) == nil, "\(value) decoded early at \(split)")
                    #expect(first.readerIndex == 0, "consumed bytes of an incomplete frame")
                }
                var whole = first
                whole.writeImmutableBuffer(bytes.getSlice(at: split, length: bytes.readableBytes - split)!)
                #expect(try decoder.decode(buffer: &whole) == value)
                #expect(whole.readableBytes == 0)
            }
        }
    }

    @Test("the NIO decoder verifier accepts the value decoder")
    func verifier() throws {
        let pairs = Self.values.map { (encoded($0), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { RESPValueDecoder(limits: limits) }
    }

    @Test("RESP2 nulls and attributes decode")
    func resp2NullsAndAttributes() throws {
        for text in ["$-1\r\n", "*-1\r\n", "_\r\n"] {
            var b = ByteBuffer(string: text)
            #expect(try RESPValueDecoder.decode(buffer: &b, limits: limits) == .null)
        }
        var attributed = ByteBuffer(string: "|1\r\n+key-popularity\r\n:1\r\n:42\r\n")
        #expect(try RESPValueDecoder.decode(buffer: &attributed, limits: limits) == .integer(42))
    }

    @Test("oversize and malformed frames are refused before allocation", arguments: [
        "$1048577\r\n", "*1001\r\n", "%1001\r\n", "$-2\r\n", "*-2\r\n", ":12x\r\n", ":\r\n", "?\r\n", "#x\r\n",
        "$3\r\nabcXY", ":99999999999999999999\r\n", String(repeating: "+", count: 2000),
        String(repeating: "*1\r\n", count: 20) + ":1\r\n",
    ])
    func refused(text: String) {
        var buffer = ByteBuffer(string: text)
        #expect(throws: RESPProtocolError.self) { try RESPValueDecoder.decode(buffer: &buffer, limits: limits) }
    }
}

@Suite("RESP command decoder")
struct RESPCommandDecoderTests {
    @Test("array commands and inline commands decode, split at every byte")
    func verifier() throws {
        var set = ByteBuffer()
        set.writeRESPCommand([ByteBuffer(string: "SET"), ByteBuffer(string: "k\r\n"), ByteBuffer(string: "")])
        let pairs: [(ByteBuffer, [RESPCommand])] = [
            (set, [RESPCommand(arguments: [ByteBuffer(string: "SET"), ByteBuffer(string: "k\r\n"), ByteBuffer(string: "")])]),
            (ByteBuffer(string: "PING\r\n"), [RESPCommand("PING")]),
            (ByteBuffer(string: "get  key \r\n"), [RESPCommand("get", "key")]),
            (ByteBuffer(string: "\r\n*0\r\nPING\r\n"), [RESPCommand("PING")]),
            (ByteBuffer(string: "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n"), [RESPCommand("PING"), RESPCommand("ECHO", "x")]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { RESPCommandDecoder(limits: limits) }
    }

    @Test("the command name is matched case-insensitively")
    func name() {
        #expect(RESPCommand("sEt", "k").name == "SET")
    }

    @Test("oversize and malformed commands are refused from their header", arguments: [
        "*1001\r\n", "*1\r\n$1048577\r\n", "*1\r\n:1\r\n", "*1\r\n$-1\r\n", "*x\r\n", "*1\r\n$3\r\nGETxx",
        String(repeating: "a", count: 1025),
    ])
    func refused(text: String) {
        var buffer = ByteBuffer(string: text)
        #expect(throws: RESPProtocolError.self) { try RESPCommandDecoder.decode(buffer: &buffer, limits: limits) }
    }
}

@Suite("RESP encoders")
struct RESPEncoderTests {
    @Test("RESP2 and RESP3 forms of version-dependent frames")
    func versioned() {
        var b = ByteBuffer()
        b.writeRESPNull(.v2); b.writeRESPNull(.v3)
        b.writeRESPPushHeader(count: 3, version: .v2); b.writeRESPPushHeader(count: 3, version: .v3)
        b.writeRESPMapHeader(count: 2, version: .v2); b.writeRESPMapHeader(count: 2, version: .v3)
        b.writeRESPError("ERR two\r\nlines")
        #expect(String(buffer: b) == "$-1\r\n_\r\n*3\r\n>3\r\n*4\r\n%2\r\n-ERR two  lines\r\n")
    }
}
