import CRC32C
import NIOCore
import RESP

/// One record of kv-stored's append-only log: a RESP array of bulk strings, so the log reads
/// with the RESP tools we already have (docs/persistence.md):
///
///     KVLOG <format version> <epoch>         first record of every log file
///     SET <key> <value> <revision>           a write without TTL
///     SET <key> <value> <revision> <unix ms> a write with an absolute deadline
///     DEL <key> <revision>                   a delete
///     EXPIRED <key> <revision>               an expiry
///     PERSIST <key>                          a TTL cleared (not a change: no revision)
///     REVISION <revision>                    the revision counter, after a compacted snapshot
///
/// Since format 2 every record ends with one more field, its checksum: the CRC-32C of the
/// record's bytes before that field, as 8 lowercase hex digits. Format 1 logs (no
/// checksums) are read and rewritten as format 2 at startup.
///
/// Revisions are decimal and strictly increasing through a log; deadlines are absolute, so
/// a record means the same thing whenever it is replayed.
public enum LogRecord: Equatable, Sendable {
    case header(version: Int, epoch: String)
    case set(key: [UInt8], value: [UInt8], revision: UInt64, deadlineUnixMilliseconds: Int64?)
    case delete(key: [UInt8], revision: UInt64)
    case expired(key: [UInt8], revision: UInt64)
    case persist(key: [UInt8])
    case revision(UInt64)

    /// The format this kv-stored writes.
    public static let formatVersion = 2
    /// The oldest format it reads (format 1 had no checksums).
    public static let oldestReadableVersion = 1

    /// The record's RESP bytes.
    public func encode(into out: inout ByteBuffer) {
        switch self {
        case .header(let version, let epoch):
            LogEncoding.writeHeader(version: version, epoch: epoch, into: &out)
        case .set(let key, let value, let revision, let deadline):
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in LogEncoding.writeSet(key: k, value: v, revision: revision, deadlineUnixMilliseconds: deadline, into: &out) }
            }
        case .delete(let key, let revision):
            key.withUnsafeBytes { LogEncoding.writeRemoval("DEL", key: $0, revision: revision, into: &out) }
        case .expired(let key, let revision):
            key.withUnsafeBytes { LogEncoding.writeRemoval("EXPIRED", key: $0, revision: revision, into: &out) }
        case .persist(let key):
            key.withUnsafeBytes { LogEncoding.writePersist(key: $0, into: &out) }
        case .revision(let revision):
            LogEncoding.writeRevision(revision, into: &out)
        }
    }

    /// Reads a record from a parsed RESP command whose last field is its checksum (format 2):
    /// `args.bytes` starts at the record's `*`.
    public static func decodeChecked(_ args: RESPArguments) -> Result<LogRecord, LogDamage.Reason> {
        guard args.count >= 2, let last = args.ranges.last else { return .failure(.badArity(args.count == 0 ? "?" : args.string(0), args.count)) }
        let stored = args[args.count - 1]
        // The checksum covers everything before its own field's `$8\r\n`.
        let covered = last.lowerBound - 4
        guard stored.count == 8, covered > 0, let expected = LogChecksum.parseHex(stored) else {
            return .failure(.badChecksum)
        }
        guard LogChecksum.crc32c(UnsafeRawBufferPointer(rebasing: args.bytes[0..<covered])) == expected else {
            return .failure(.badChecksum)
        }
        return decode(RESPArguments(bytes: args.bytes, ranges: Array(args.ranges.dropLast())))
    }

    /// Reads a record from a parsed RESP command; nil (with the reason) when it is not one.
    public static func decode(_ args: RESPArguments) -> Result<LogRecord, LogDamage.Reason> {
        func revision(_ i: Int) -> UInt64? { UInt64(args.string(i)).flatMap { $0 > 0 ? $0 : nil } }
        if args.matches(0, "SET") {
            guard args.count == 4 || args.count == 5 else { return .failure(.badArity("SET", args.count)) }
            guard let rev = revision(3) else { return .failure(.badNumber("revision", args.string(3))) }
            var deadline: Int64?
            if args.count == 5 {
                guard let at = args.integer(4) else { return .failure(.badNumber("deadline", args.string(4))) }
                deadline = at
            }
            return .success(.set(key: args.array(1), value: args.array(2), revision: rev, deadlineUnixMilliseconds: deadline))
        }
        if args.matches(0, "DEL") || args.matches(0, "EXPIRED") {
            let name = args.string(0)
            guard args.count == 3 else { return .failure(.badArity(name, args.count)) }
            guard let rev = revision(2) else { return .failure(.badNumber("revision", args.string(2))) }
            return .success(args.matches(0, "DEL") ? .delete(key: args.array(1), revision: rev) : .expired(key: args.array(1), revision: rev))
        }
        if args.matches(0, "PERSIST") {
            guard args.count == 2 else { return .failure(.badArity("PERSIST", args.count)) }
            return .success(.persist(key: args.array(1)))
        }
        if args.matches(0, "REVISION") {
            guard args.count == 2 else { return .failure(.badArity("REVISION", args.count)) }
            guard let rev = revision(1) else { return .failure(.badNumber("revision", args.string(1))) }
            return .success(.revision(rev))
        }
        if args.matches(0, "KVLOG") {
            guard args.count == 3, let version = Int(args.string(1)) else { return .failure(.badArity("KVLOG", args.count)) }
            return .success(.header(version: version, epoch: args.string(2)))
        }
        return .failure(.unknownRecord(String(args.string(0).prefix(32))))
    }

    var revision: UInt64? {
        switch self {
        case .set(_, _, let revision, _), .delete(_, let revision), .expired(_, let revision), .revision(let revision): revision
        case .header, .persist: nil
        }
    }
}

/// Writes records straight from the keyspace's bytes, each with one reservation of the buffer:
/// this runs under the keyspace lock for every write, and one raw write per record (instead of
/// a ByteBuffer call per field) measured several times cheaper.
enum LogEncoding {
    static func writeHeader(version: Int, epoch: String, into out: inout ByteBuffer) {
        let versionText = Array(String(version).utf8), epochText = Array(epoch.utf8)
        versionText.withUnsafeBytes { v in
            epochText.withUnsafeBytes { e in writeArray([name("KVLOG"), v, e], into: &out) }
        }
    }

    static func writeSet(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, revision: UInt64,
                         deadlineUnixMilliseconds: Int64?, into out: inout ByteBuffer) {
        withDecimal(revision) { rev in
            if let deadline = deadlineUnixMilliseconds {
                withDecimal(UInt64(max(0, deadline))) { at in writeArray([name("SET"), key, value, rev, at], into: &out) }
            } else {
                writeArray([name("SET"), key, value, rev], into: &out)
            }
        }
    }

    static func writeRemoval(_ record: StaticString, key: UnsafeRawBufferPointer, revision: UInt64, into out: inout ByteBuffer) {
        withDecimal(revision) { rev in writeArray([name(record), key, rev], into: &out) }
    }

    static func writeRevision(_ revision: UInt64, into out: inout ByteBuffer) {
        withDecimal(revision) { rev in writeArray([name("REVISION"), rev], into: &out) }
    }

    static func writePersist(key: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        writeArray([name("PERSIST"), key], into: &out)
    }

    private static func name(_ text: StaticString) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
    }

    /// `value`'s decimal digits, on the stack.
    private static func withDecimal<T>(_ value: UInt64, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var v = value, n = 0
            repeat {
                digits[19 - n] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                n += 1
            } while v > 0
            return body(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(digits)[(20 - n)...]))
        }
    }

    private static func digitCount(_ value: Int) -> Int {
        var v = value, n = 1
        while v >= 10 { v /= 10; n += 1 }
        return n
    }

    /// One RESP array of bulk strings and their checksum, written with a single reservation.
    private static func writeArray(_ fields: [UnsafeRawBufferPointer], into out: inout ByteBuffer) {
        var length = 1 + digitCount(fields.count + 1) + 2 + LogChecksum.fieldBytes
        for field in fields { length += 1 + digitCount(field.count) + 2 + field.count + 2 }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var at = 0
            func put(_ byte: UInt8) { raw[at] = byte; at += 1 }
            func putDecimal(_ value: Int) {
                let n = digitCount(value)
                var v = value
                for i in stride(from: n - 1, through: 0, by: -1) {
                    raw[at + i] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                at += n
            }
            put(UInt8(ascii: "*")); putDecimal(fields.count + 1); put(13); put(10)
            for field in fields {
                put(UInt8(ascii: "$")); putDecimal(field.count); put(13); put(10)
                if let base = field.baseAddress, let target = raw.baseAddress, field.count > 0 {
                    (target + at).copyMemory(from: base, byteCount: field.count)
                    at += field.count
                }
                put(13); put(10)
            }
            let crc = LogChecksum.crc32c(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(raw)[0..<at]))
            for byte in "$8\r\n".utf8 { put(byte) }
            for shift in stride(from: 28, through: 0, by: -4) { put(LogChecksum.hexDigits[Int((crc >> UInt32(shift)) & 0xF)]) }
            put(13); put(10)
            return at
        }
    }
}

/// Where and why a log stopped making sense.
public struct LogDamage: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed(String)
        case unknownRecord(String)
        case badArity(String, Int)
        case badNumber(String, String)
        case revisionNotIncreasing(previous: UInt64, found: UInt64)
        case missingHeader
        case unsupportedVersion(Int)
        case badChecksum

        public var description: String {
            switch self {
            case .malformed(let detail): "not a RESP array of bulk strings (\(detail))"
            case .unknownRecord(let name): "unknown record \"\(name)\""
            case .badArity(let name, let count): "\(name) record with \(count) fields"
            case .badNumber(let field, let text): "\(field) \"\(text.prefix(32))\" is not a valid number"
            case .revisionNotIncreasing(let previous, let found): "revision \(found) after \(previous): revisions must increase"
            case .missingHeader: "the log does not start with a KVLOG header"
            case .unsupportedVersion(let version): "log format version \(version) is not supported (this kv-stored reads versions \(LogRecord.oldestReadableVersion) to \(LogRecord.formatVersion))"
            case .badChecksum: "the record's checksum does not match its bytes"
            }
        }
    }

    /// Byte offset of the first record that could not be read.
    public var offset: Int
    public var reason: Reason

    public var description: String { "damaged log at byte offset \(offset): \(reason)" }
}

/// The checksum of a log record: CRC-32C (as ext4, iSCSI and LevelDB use), hardware-assisted.
enum LogChecksum {
    /// `$8\r\n` + 8 hex digits + `\r\n`.
    static let fieldBytes = 14
    static let hexDigits = Array("0123456789abcdef".utf8)

    static func crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return kv_crc32c(0, base, bytes.count)
    }

    static func parseHex(_ text: UnsafeRawBufferPointer) -> UInt32? {
        var value: UInt32 = 0
        for byte in text {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
