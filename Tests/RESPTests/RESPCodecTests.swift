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

/// Parses one command from `text`, returning its arguments as strings and the bytes consumed.
private func parseCommand(_ bytes: [UInt8]) throws(RESPProtocolError) -> (arguments: [String], outcome: RESPCommandParser.Outcome) {
    var ranges: [Range<Int>] = []
    let result: Result<([String], RESPCommandParser.Outcome), RESPProtocolError> = bytes.withUnsafeBytes { raw in
        do throws(RESPProtocolError) {
            let outcome = try RESPCommandParser.parse(raw, limits: limits, arguments: &ranges)
            let args = RESPArguments(bytes: raw, ranges: ranges)
            return .success(((0..<args.count).map { args.string($0) }, outcome))
        } catch {
            return .failure(error)
        }
    }
    return try result.get()
}

@Suite("RESP command parser")
struct RESPCommandParserTests {
    static let commands: [(String, [String])] = [
        ("*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n", ["SET", "k\r\n", ""]),
        ("PING\r\n", ["PING"]), ("get  key \r\n", ["get", "key"]), ("ping\n", ["ping"]),
        ("*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n", ["ECHO", "x"]),
    ]

    @Test("array and inline commands parse, and are incomplete at every earlier split", arguments: commands)
    func everySplit(text: String, expected: [String]) throws {
        let bytes = Array(text.utf8)
        for length in 0..<bytes.count {
            #expect(try parseCommand(Array(bytes[0..<length])).outcome == .incomplete, "complete at \(length) of \(text)")
        }
        let parsed = try parseCommand(bytes + Array("*1\r\n".utf8))
        #expect(parsed.outcome == .command(consumed: bytes.count))
        #expect(parsed.arguments == expected)
    }

    @Test("blank lines, *0 and null arrays are skipped", arguments: ["\r\n", "*0\r\n", "*-1\r\n", "  \n"])
    func nothing(text: String) throws {
        #expect(try parseCommand(Array(text.utf8)).outcome == .nothing(consumed: text.utf8.count))
    }

    @Test("oversize and malformed commands are refused from their header", arguments: [
        "*1001\r\n", "*1\r\n$1048577\r\n", "*1\r\n:1\r\n", "*1\r\n$-1\r\n", "*x\r\n", "*1\r\n$3\r\nGETxx",
        "*1\r\n$3x\r\n", "*\r\n", "*99999999999999999999\r\n", "*-2\r\n", String(repeating: "a", count: 1025),
        "*1\r\n$" + String(repeating: "1", count: 2000),
    ])
    func refused(text: String) {
        #expect(throws: RESPProtocolError.self) { try parseCommand(Array(text.utf8)) }
    }

    /// Issue 15: an incomplete command was parsed again from its start on every read, so one
    /// dripped a few bytes at a time cost time quadratic in its size.
    @Test("a command fed in pieces resumes where the last piece ended, and gives the same arguments as fed whole", arguments: [1, 3, 7, 64])
    func resumes(pieceSize: Int) throws {
        var text = "*201\r\n$4\r\nMSET\r\n"
        for i in 0..<200 { text += "$\(String(i).utf8.count)\r\n\(i)\r\n" }
        let bytes = Array(text.utf8)
        var ranges: [Range<Int>] = []
        var progress = RESPCommandParser.Progress()
        var fed = 0, outcome = RESPCommandParser.Outcome.incomplete
        while case .incomplete = outcome, fed < bytes.count {
            fed = min(fed + pieceSize, bytes.count)
            outcome = try Array(bytes[0..<fed]).withUnsafeBytes { raw throws(RESPProtocolError) in
                try RESPCommandParser.parse(raw, limits: RESPLimits(maxBulkBytes: 1024), arguments: &ranges, progress: &progress)
            }
            if case .incomplete = outcome {
                // Nothing before the first argument not yet whole is read again.
                let afterCountLine = progress.remaining == nil ? 0 : "*201\r\n".utf8.count
                #expect(progress.position == (ranges.last.map { $0.upperBound + 2 } ?? afterCountLine))
            }
        }
        #expect(outcome == .command(consumed: bytes.count))
        #expect(progress == RESPCommandParser.Progress(), "reset for the next command")
        let whole = try parseCommand(bytes)
        let pieces = bytes.withUnsafeBytes { raw in (0..<ranges.count).map { RESPArguments(bytes: raw, ranges: ranges).string($0) } }
        #expect(pieces == whole.arguments && pieces.count == 201)
    }

    @Test("an inline command fed in pieces searches each byte for its end once")
    func inlineResumes() throws {
        let bytes = Array("SET key value\r\n".utf8)
        var ranges: [Range<Int>] = []
        var progress = RESPCommandParser.Progress()
        for fed in 1..<bytes.count {
            let outcome = try Array(bytes[0..<fed]).withUnsafeBytes { raw throws(RESPProtocolError) in
                try RESPCommandParser.parse(raw, limits: RESPLimits(maxBulkBytes: 1024), arguments: &ranges, progress: &progress)
            }
            #expect(outcome == .incomplete && progress.scanned == fed)
        }
        let outcome = try bytes.withUnsafeBytes { raw throws(RESPProtocolError) in
            try RESPCommandParser.parse(raw, limits: RESPLimits(maxBulkBytes: 1024), arguments: &ranges, progress: &progress)
        }
        #expect(outcome == .command(consumed: bytes.count) && ranges.count == 3)
    }

    @Test("a command longer than its limit as a whole is refused from the header that crosses it, however its arguments are split")
    func commandBytes() throws {
        let limits = RESPLimits(maxBulkBytes: 100, maxCommandBytes: 60)
        var ranges: [Range<Int>] = []
        let fits = Array("*3\r\n$3\r\nDEL\r\n$10\r\naaaaaaaaaa\r\n$10\r\nbbbbbbbbbb\r\n".utf8)
        #expect(fits.count <= 60)
        let outcome = try fits.withUnsafeBytes { raw throws(RESPProtocolError) in try RESPCommandParser.parse(raw, limits: limits, arguments: &ranges) }
        #expect(outcome == .command(consumed: fits.count))
        let over = Array("*4\r\n$3\r\nDEL\r\n$10\r\naaaaaaaaaa\r\n$10\r\nbbbbbbbbbb\r\n$10\r\n".utf8)
        #expect(throws: RESPProtocolError.self) {
            try over.withUnsafeBytes { raw throws(RESPProtocolError) in try RESPCommandParser.parse(raw, limits: limits, arguments: &ranges) }
        }
    }

    @Test("arguments match words ignoring case")
    func matching() throws {
        let bytes = Array("*2\r\n$3\r\nsEt\r\n$2\r\npx\r\n".utf8)
        bytes.withUnsafeBytes { raw in
            var ranges: [Range<Int>] = []
            _ = try? RESPCommandParser.parse(raw, limits: limits, arguments: &ranges)
            let args = RESPArguments(bytes: raw, ranges: ranges)
            #expect(args.matches(0, "SET") && args.matches(1, "PX"))
            #expect(!args.matches(0, "GET") && !args.matches(1, "PXAT"))
        }
    }

    @Test("random bytes never crash the parser")
    func fuzz() {
        var state: UInt64 = 1
        let alphabet = Array("*$\r\n0123456789-abc ".utf8)
        for _ in 0..<20_000 {
            var bytes: [UInt8] = []
            for _ in 0..<Int(state % 40) {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                bytes.append(alphabet[Int((state >> 33) % UInt64(alphabet.count))])
            }
            state = state &* 6364136223846793005 &+ 1442695040888963407
            _ = try? parseCommand(bytes)
        }
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
