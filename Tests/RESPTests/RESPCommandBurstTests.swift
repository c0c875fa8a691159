import KVTestSupport
import Testing
@testable import RESP

private let limits = RESPLimits(maxBulkBytes: 1 << 20, maxElements: 1000, maxLineBytes: 1024, maxDepth: 8)

/// What a reader of a command stream sees: each command's arguments, a skipped blank, or the
/// protocol error that ends the stream.
private enum Seen: Equatable {
    case command([[UInt8]])
    case nothing
    case error(String)
}

/// Commands of every shape the parser takes: arrays of 1–12 bulks (CRLF inside them too),
/// inline commands, blank lines, `*0` and a null array; with `broken`, junk at the end.
private func stream(_ rng: inout SplitMix64, commands: Int, broken: Bool) -> [UInt8] {
    var bytes: [UInt8] = []
    for _ in 0..<commands {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: bytes += Array("GET  some-key\r\n".utf8)
        case 1: bytes += Array("\r\n".utf8)
        case 2: bytes += Array("*0\r\n".utf8)
        case 3: bytes += Array("*-1\r\n".utf8)
        default:
            let count = Int.random(in: 1...12, using: &rng)
            bytes += Array("*\(count)\r\n".utf8)
            for _ in 0..<count {
                let argument = (0..<Int.random(in: 0...40, using: &rng)).map { _ in [UInt8(ascii: "a"), 0x0D, 0x0A, 0][Int.random(in: 0..<4, using: &rng)] }
                bytes += Array("$\(argument.count)\r\n".utf8) + argument + [0x0D, 0x0A]
            }
        }
    }
    if broken { bytes += Array("*2\r\n$3\r\nGET\r\n#nope\r\n".utf8) }
    return bytes
}

/// Reads `bytes` as they arrive in `chunks`, the way kv-stored's connection handler does: after
/// each arrival, every whole command is taken, through bursts of up to `burst` commands when
/// `burst` is not nil (a burst lives for one arrival), or through the parser alone.
private func read(_ bytes: [UInt8], chunks: [Int], burst capacity: Int?) -> [Seen] {
    var seen: [Seen] = []
    var buffer: [UInt8] = []
    var start = 0
    var progress = RESPCommandParser.Progress()
    var arguments: [Range<Int>] = []
    var burst = RESPCommandBurst()
    var offset = 0
    for size in chunks {
        buffer += bytes[offset..<min(offset + size, bytes.count)]
        offset = min(offset + size, bytes.count)
        defer { burst.clear() }
        while start < buffer.count {
            let outcome: Result<RESPCommandParser.Outcome, RESPProtocolError> = buffer[start...].withUnsafeBytes { raw in
                if let capacity, burst.count == 0, progress == RESPCommandParser.Progress() {
                    burst.fill(raw, limits: limits, capacity: capacity)
                }
                if let consumed = burst.take(into: &arguments) { return .success(.command(consumed: consumed)) }
                do throws(RESPProtocolError) {
                    return .success(try RESPCommandParser.parse(raw, limits: limits, arguments: &arguments, progress: &progress))
                } catch {
                    return .failure(error)
                }
            }
            switch outcome {
            case .success(.command(let consumed)):
                seen.append(.command(arguments.map { Array(buffer[start + $0.lowerBound..<start + $0.upperBound]) }))
                start += consumed
            case .success(.nothing(let consumed)):
                seen.append(.nothing)
                start += consumed
            case .success(.incomplete):
                break
            case .failure(let error):
                seen.append(.error(error.message))
                return seen
            }
            if case .success(.incomplete) = outcome { break }
        }
    }
    return seen
}

@Suite("RESP command bursts")
struct RESPCommandBurstTests {
    @Test("commands taken from bursts are the parser's own, in order, whatever the reads' sizes and the burst's capacity, errors included")
    func sameAsParser() {
        var rng = SplitMix64(seed: 22)
        for round in 0..<200 {
            let bytes = stream(&rng, commands: Int.random(in: 1...60, using: &rng), broken: round % 3 == 0)
            var chunks: [Int] = []
            var total = 0
            while total < bytes.count {
                let size = round % 4 == 0 ? bytes.count : Int.random(in: 1...200, using: &rng)
                chunks.append(size)
                total += size
            }
            let plain = read(bytes, chunks: chunks, burst: nil)
            let bursts = read(bytes, chunks: chunks, burst: Int.random(in: 1...16, using: &rng))
            #expect(bursts == plain, "round \(round)")
            #expect(plain.last.map { if case .error = $0 { true } else { false } } == (round % 3 == 0), "round \(round): the junk ends it")
        }
    }

    @Test("a burst stops at an incomplete command, a blank line, an error and a command of many arguments, and at its capacity")
    func stops() {
        func count(_ text: String, capacity: Int = 16) -> Int {
            var burst = RESPCommandBurst()
            Array(text.utf8).withUnsafeBytes { burst.fill($0, limits: limits, capacity: capacity) }
            return burst.count
        }
        let get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        #expect(count(get + get + "*2\r\n$3\r\nGET\r\n$1\r\n") == 2)
        #expect(count(get + "\r\n" + get) == 1)
        #expect(count(get + "*1\r\n#\r\n" + get) == 1)
        let many = "*9\r\n" + String(repeating: "$1\r\nk\r\n", count: 9)
        #expect(count(get + many + get) == 1)
        #expect(count(many + get) == 0, "the caller parses a large command on its own")
        #expect(count(String(repeating: get, count: 20), capacity: 16) == 16)
        #expect(count("GET k\r\n" + get) == 2, "inline commands join too")
    }
}
