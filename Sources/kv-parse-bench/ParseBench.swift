import KVCore
import KVHTTP
import KVStore
import KVWebSocket
import NIOCore
import RESP

#if canImport(Glibc)
import Glibc
#endif

// kv-parse-bench: CPU time per megabyte of each parser a client (or a disk) feeds, on the
// shapes that make parsers slow (many members, deep nesting, many keys or arguments, input
// dripped a byte at a time, a damaged length), at growing sizes, each beside a benign input of
// the same size parsed in the same run. Linear parsers keep a flat cost per MB as the size
// grows, and a hostile shape stays within a small factor of the benign one. bench/parsers.sh
// runs it in release; docs/BENCHMARKS.md has the figures.

/// `value` with `digits` decimals (no Foundation here).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = scaled / Int(scale), fraction = abs(scaled % Int(scale))
    guard digits > 0 else { return String(whole) }
    let text = String(fraction)
    return "\(whole).\(String(repeating: "0", count: digits - text.count))\(text)"
}

/// Process CPU time in nanoseconds (user and system; the bench is single-threaded).
func cpuNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// One shape: builds an input of about `bytes` bytes, and parses it (returning something, so
/// the work cannot be optimised away).
struct Shape {
    var parser: String
    var name: String
    var make: (Int) -> [UInt8]
    var parse: ([UInt8]) -> Int
}

func repeated(_ unit: String, toFill bytes: Int, open: String = "", close: String = "", separator: String = "") -> [UInt8] {
    let count = max(1, (bytes - open.utf8.count - close.utf8.count) / (unit.utf8.count + separator.utf8.count))
    var out = Array(open.utf8)
    out.reserveCapacity(bytes + unit.utf8.count)
    for i in 0..<count {
        if i > 0 { out += separator.utf8 }
        out += unit.utf8
    }
    return out + Array(close.utf8)
}

let limits = Limits(maxKeyBytes: 64 << 20, maxValueBytes: 256 << 20)
let reader = JSONReader()

func json(_ bytes: [UInt8]) -> Int { (try? reader.read(bytes))?.root.range.count ?? -1 }

/// `{"value":{"k0":0,"k1":0,…}}`: member names differ, so every one is checked for duplicates.
func manyMembers(_ bytes: Int) -> [UInt8] {
    var out = Array(#"{"value":{"#.utf8)
    var i = 0
    while out.count < bytes {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        out += Array("\"k\(i)\":0".utf8)
        i += 1
    }
    return out + Array("}}".utf8)
}

/// A RESP command of many small arguments (`DEL k0 k1 …`).
func manyArguments(_ bytes: Int) -> [UInt8] {
    var body: [UInt8] = []
    var count = 0
    while body.count < bytes {
        let key = "k\(count)"
        body += Array("$\(key.utf8.count)\r\n\(key)\r\n".utf8)
        count += 1
    }
    return Array("*\(count + 1)\r\n$3\r\nDEL\r\n".utf8) + body
}

/// Parses `bytes` as kv-stored receives it when it arrives `piece` bytes at a time.
func commandInPieces(_ bytes: [UInt8], piece: Int) -> Int {
    let resp = RESPLimits(maxBulkBytes: 512 << 20, maxElements: 1 << 24)
    var arguments: [Range<Int>] = []
    var progress = RESPCommandParser.Progress()
    var fed = 0
    while fed < bytes.count {
        fed = min(bytes.count, fed + piece)
        let outcome = bytes.withUnsafeBytes { raw in
            try? RESPCommandParser.parse(UnsafeRawBufferPointer(rebasing: raw[0..<fed]), limits: resp, arguments: &arguments, progress: &progress)
        }
        if case .command? = outcome { return arguments.count }
        if outcome == nil { return -1 }
    }
    return -2
}

/// A log of `SET` records of `valueBytes` each; with `tornTail`, the second half is one record
/// whose length runs past the end, followed by lines shaped like record headers that never
/// complete: the reader looks at each for a whole record before calling it a torn tail.
func log(_ bytes: Int, valueBytes: Int, tornTail: Bool = false) -> [UInt8] {
    var buffer = ByteBuffer()
    LogRecord.header(version: LogRecord.formatVersion, epoch: "e").encode(into: &buffer)
    var revision: UInt64 = 1
    let value = [UInt8](repeating: UInt8(ascii: "v"), count: valueBytes)
    let recordsUntil = tornTail ? bytes / 2 : bytes
    while buffer.readableBytes < recordsUntil {
        LogRecord.set(key: Array("k\(revision)".utf8), value: value, revision: revision, deadlineUnixMilliseconds: nil).encode(into: &buffer)
        revision += 1
    }
    var out = Array(buffer.readableBytesView)
    if tornTail {
        out += Array("*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n".utf8)
        out += repeated("*4\r\n$999999\r\n", toFill: bytes - out.count, separator: "\n")
    }
    return out
}

func readLog(_ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes { raw in
        var records = 0
        let outcome = LogReader.read(raw) { _ in records += 1 }
        return records + outcome.validBytes
    }
}

let shapes: [Shape] = [
    Shape(parser: "JSON reader", name: "baseline: one long string", make: { repeated("x", toFill: $0, open: #"{"value":""#, close: #""}"#) }, parse: json),
    Shape(parser: "JSON reader", name: "many members (duplicate check)", make: manyMembers, parse: json),
    Shape(parser: "JSON reader", name: "nesting at the depth limit, repeated", make: { repeated(String(repeating: "[", count: 500) + String(repeating: "]", count: 500), toFill: $0, open: #"{"value":["#, close: "]}", separator: ",") }, parse: json),
    Shape(parser: "JSON reader", name: "many small numbers", make: { repeated("1", toFill: $0, open: #"{"value":["#, close: "]}", separator: ",") }, parse: json),
    Shape(parser: "JSON reader", name: "escapes and surrogate pairs", make: { repeated(#"\ud83d\ude00\n"#, toFill: $0, open: #"{"value":""#, close: #""}"#) }, parse: json),
    Shape(parser: "WebSocket message", name: "baseline: set of one long string", make: { repeated("x", toFill: $0, open: #"{"type":"set","payload":{"key":"k","value":""#, close: #""}}"#) }, parse: { bytes in
        (try? ClientRequest.parse(bytes, limits: limits).request.get()) == nil ? -1 : 1
    }),
    Shape(parser: "WebSocket message", name: "set of many members", make: { bytes in
        Array(#"{"type":"set","payload":{"key":"k","value":"#.utf8) + Array(manyMembers(bytes).dropFirst(9).dropLast(1)) + Array("}}".utf8)
    }, parse: { bytes in (try? ClientRequest.parse(bytes, limits: limits).request.get()) == nil ? -1 : 1 }),
    Shape(parser: "WebSocket message", name: "many unknown payload members", make: { bytes in
        var out = Array(#"{"type":"get","payload":{"key":"k""#.utf8)
        var i = 0
        while out.count < bytes { out += Array(",\"x\(i)\":0".utf8); i += 1 }
        return out + Array("}}".utf8)
    }, parse: { bytes in (try? ClientRequest.parse(bytes, limits: limits).request.get()) == nil ? -1 : 1 }),
    Shape(parser: "key path", name: "baseline: plain key", make: { repeated("k", toFill: $0, open: "/storage/") }, parse: { bytes in
        (try? StorageKeyPath.key(fromRequestURI: bytes, limits: limits))?.count ?? -1
    }),
    Shape(parser: "key path", name: "all percent-encoded, many segments", make: { repeated("%41%2F", toFill: $0, open: "/storage/") }, parse: { bytes in
        (try? StorageKeyPath.key(fromRequestURI: bytes, limits: limits))?.count ?? -1
    }),
    // A bulk string's bytes are never scanned (a SET of one large value costs next to nothing):
    // the baseline is the hostile command itself, arriving whole.
    Shape(parser: "kv-stored command", name: "baseline: many arguments, whole", make: manyArguments, parse: { commandInPieces($0, piece: $0.count) }),
    Shape(parser: "kv-stored command", name: "many arguments, 16 bytes a read", make: manyArguments, parse: { commandInPieces($0, piece: 16) }),
    Shape(parser: "kv-stored command", name: "inline command, 16 bytes a read", make: { repeated("k", toFill: min($0, 60 << 10), open: "GET ", close: "\r\n") }, parse: { commandInPieces($0, piece: 16) }),
    Shape(parser: "log reader", name: "baseline: 64 KiB records", make: { log($0, valueBytes: 64 << 10) }, parse: readLog),
    Shape(parser: "log reader", name: "small records", make: { log($0, valueBytes: 16) }, parse: readLog),
    Shape(parser: "log reader", name: "torn tail of record-like lines", make: { log($0, valueBytes: 16, tornTail: true) }, parse: readLog),
]

/// The TTL grammar takes at most 100 characters: its worst case is a fixed cost per call.
func ttlRow() {
    let worst = Array(repeating: "1.5s", count: 20).joined(separator: " ")  // 99 characters, 20 terms
    let simple = "1h"
    let calls = 200_000
    var sink = 0
    for (name, text) in [("baseline: \"1h\"", simple), ("20 terms, 99 characters (the longest accepted)", worst)] {
        let start = cpuNanoseconds()
        for _ in 0..<calls { sink &+= Int((try? TTL(durationString: text))?.milliseconds ?? -1) }
        let ns = Double(cpuNanoseconds() - start) / Double(calls)
        print("| TTL grammar | \(name) | \(fixed(ns, 0)) ns per call (\(text.utf8.count) B) | | | |")
    }
    if sink == 42 { print("") }
}

let sizes = (CommandLine.arguments.dropFirst().first.flatMap { Int($0) }).map { [$0] } ?? [1 << 20, 4 << 20, 16 << 20]
print("| parser | shape | " + sizes.map { "ms/MB at \($0 >> 20) MiB" }.joined(separator: " | ") + " | × baseline at the largest |")
print("| --- | --- | " + sizes.map { _ in "---:" }.joined(separator: " | ") + " | ---: |")
var baseline: [String: Double] = [:]
for shape in shapes {
    var cells: [String] = []
    var last = 0.0
    for size in sizes {
        let input = shape.make(size)
        // Best of three: the least disturbed by the rest of the machine.
        var best = Double.infinity
        for _ in 0..<3 {
            let start = cpuNanoseconds()
            let result = shape.parse(input)
            let ms = Double(cpuNanoseconds() - start) / 1e6
            if result < 0 { print("<!-- \(shape.parser) / \(shape.name): refused at \(size) bytes -->") }
            best = min(best, ms / (Double(input.count) / Double(1 << 20)))
        }
        cells.append(fixed(best, 2))
        last = best
    }
    if shape.name.hasPrefix("baseline") { baseline[shape.parser] = last }
    let ratio = baseline[shape.parser].map { fixed(last / $0, 1) + "×" } ?? ""
    print("| \(shape.parser) | \(shape.name) | " + cells.joined(separator: " | ") + " | \(ratio) |")
}
ttlRow()
