import KVCore
import KVHTTP
import KVStore
import KVWebSocket
import NIOCore
import RESP

/// The parsers a hostile client (or a damaged disk) feeds, each wrapped for a fuzzer: the
/// input is handed to the parser, which may accept or refuse it but must not crash, and what
/// it accepts must satisfy the parser's promises (checked with `FuzzTarget.Violation`).
///
/// `kv-fuzz` runs these under libFuzzer (`make fuzz`); the unit tests replay the committed
/// corpora (`Fuzz/corpus/<target>/`) and every input that once failed (`Fuzz/regressions/`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `JSONReader`: request bodies and WebSocket messages.
    case json
    /// The TTL grammar: duration strings and JSON numbers.
    case ttl
    /// kv-stored's command parser, whole and resumed in pieces; and the clients' reply decoder.
    case resp
    /// A WebSocket message as kv-ws reads it (`ClientRequest.parse`).
    case wsMessage = "ws-message"
    /// A raw request target as kv-fcgi reads the key from it (`StorageKeyPath`).
    case keyPath = "key-path"
    /// kv-stored's log reader, over whatever bytes a disk holds.
    case log

    /// An accepted input that breaks a promise of its parser.
    public struct Violation: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs one input through the target's parser.
    public func run(_ data: UnsafeRawBufferPointer) throws(Violation) {
        let bytes = Array(data)
        switch self {
        case .json: try Self.json(bytes)
        case .ttl: try Self.ttl(bytes)
        case .resp: try Self.resp(bytes)
        case .wsMessage: try Self.wsMessage(bytes)
        case .keyPath: try Self.keyPath(bytes)
        case .log: try Self.log(data)
        }
    }

    /// Runs one input given as an array.
    public func run(bytes: [UInt8]) throws(Violation) {
        let result: Result<Void, Violation> = bytes.withUnsafeBytes { raw in Result { () throws(Violation) in try run(raw) } }
        try result.get()
    }

    private static func check(_ condition: Bool, _ what: @autoclosure () -> String) throws(Violation) {
        if !condition { throw Violation(description: what()) }
    }

    /// What is accepted reads again to the same compact text (compaction is idempotent).
    private static func json(_ bytes: [UInt8]) throws(Violation) {
        let reader = JSONReader(maxDepth: 64)
        guard let document = try? reader.read(bytes) else { return }
        let compact = document.compactText(of: document.root)
        let again: JSONDocument
        do throws(KVError) { again = try reader.read(compact) } catch { throw Violation(description: "compact text no longer reads: \(error.message)") }
        try check(again.compactText(of: again.root) == compact, "compacting twice changed the text")
        for member in document.root.members ?? [] { _ = document.string(member.value) }
    }

    /// An accepted TTL is within the contract: 1 ms to 100 years.
    private static func ttl(_ bytes: [UInt8]) throws(Violation) {
        let text = String(decoding: bytes, as: UTF8.self)
        for parsed in [try? TTL(durationString: text), try? TTL(jsonNumberText: bytes)] {
            guard let ttl = parsed else { continue }
            try check((1...TTL.maxMilliseconds).contains(ttl.milliseconds), "TTL of \(ttl.milliseconds) ms accepted")
        }
    }

    /// The same command fed in two pieces (split where the first byte says) parses as when fed
    /// whole; a burst takes the commands the parser finds; the reply decoder never consumes more
    /// than it was given.
    private static func resp(_ bytes: [UInt8]) throws(Violation) {
        let limits = RESPLimits(maxBulkBytes: 1 << 16, maxElements: 1024, maxLineBytes: 1024, maxCommandBytes: 1 << 17)
        var wholeArguments: [Range<Int>] = []
        let whole = bytes.withUnsafeBytes { raw in
            Result { () throws(RESPProtocolError) in try RESPCommandParser.parse(raw, limits: limits, arguments: &wholeArguments) }
        }
        let split = bytes.isEmpty ? 0 : Int(bytes[0]) % bytes.count
        var pieceArguments: [Range<Int>] = []
        var progress = RESPCommandParser.Progress()
        let first = Array(bytes[..<split]).withUnsafeBytes { raw in
            Result { () throws(RESPProtocolError) in
                try RESPCommandParser.parse(raw, limits: limits, arguments: &pieceArguments, progress: &progress)
            }
        }
        if case .success(.incomplete) = first {
            let resumed = bytes.withUnsafeBytes { raw in
                Result { () throws(RESPProtocolError) in
                    try RESPCommandParser.parse(raw, limits: limits, arguments: &pieceArguments, progress: &progress)
                }
            }
            switch (whole, resumed) {
            case (.success(let a), .success(let b)):
                try check(a == b, "resumed outcome \(b) differs from \(a)")
                if case .command = a { try check(wholeArguments == pieceArguments, "resumed arguments differ") }
            case (.failure, .failure): break
            default: throw Violation(description: "resuming changed success into failure or back: \(whole) vs \(resumed)")
            }
        }
        // A burst takes the same commands as the parser does one after another.
        let burstAgrees = bytes.withUnsafeBytes { raw in
            var burst = RESPCommandBurst()
            burst.fill(raw, limits: limits, capacity: 16)
            var taken: [Range<Int>] = [], parsed: [Range<Int>] = []
            var offset = 0
            while let consumed = burst.take(into: &taken) {
                let outcome = try? RESPCommandParser.parse(UnsafeRawBufferPointer(rebasing: raw[offset...]), limits: limits, arguments: &parsed)
                guard outcome == .command(consumed: consumed), taken == parsed else { return false }
                offset += consumed
            }
            return true
        }
        try check(burstAgrees, "a burst's command differs from the parser's")
        var buffer = ByteBuffer(bytes: bytes)
        if (try? RESPValueDecoder.decode(buffer: &buffer, limits: RESPLimits(maxBulkBytes: 1 << 16, maxElements: 1024, maxLineBytes: 1024, maxDepth: 16))) != nil {
            try check(buffer.readableBytes <= bytes.count, "the decoder made bytes up")
        }
    }

    /// Whatever the message, kv-ws has an answer: a request, or an error with a message.
    private static func wsMessage(_ bytes: [UInt8]) throws(Violation) {
        let limits = Limits(maxKeyBytes: 256, maxValueBytes: 4096)
        let (_, parsed) = ClientRequest.parse(bytes, limits: limits)
        switch parsed {
        case .success(let request): try check(!request.message.key.isEmpty && request.message.key.count <= 256, "a key outside the limits was accepted")
        case .failure(let error): try check(!error.message.isEmpty, "an error without a message")
        }
    }

    /// An accepted key is non-empty UTF-8 within the limit, with no `.` or `..` segment.
    private static func keyPath(_ bytes: [UInt8]) throws(Violation) {
        let limits = Limits(maxKeyBytes: 512, maxValueBytes: 1024)
        guard let key = try? StorageKeyPath.key(fromRequestURI: Array("/storage/".utf8) + bytes, limits: limits) else { return }
        try check(!key.isEmpty && key.count <= 512 && String(validating: key, as: UTF8.self) != nil, "an invalid key was accepted")
        let segments = key.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        try check(!segments.contains { $0.elementsEqual([0x2E]) || $0.elementsEqual([0x2E, 0x2E]) }, "a dot segment was accepted")
    }

    /// The reader says how much of the log is whole, never more than there is.
    private static func log(_ data: UnsafeRawBufferPointer) throws(Violation) {
        var records = 0
        let outcome = LogReader.read(data) { _ in records += 1 }
        try check(outcome.validBytes >= 0 && outcome.validBytes <= data.count, "valid bytes \(outcome.validBytes) of \(data.count)")
        if outcome.validBytes == 0 { try check(records == 0, "records read from an empty valid prefix") }
    }
}
