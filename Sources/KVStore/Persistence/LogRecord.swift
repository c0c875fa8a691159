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
/// Revisions are decimal and strictly increasing through a log; deadlines are absolute, so
/// a record means the same thing whenever it is replayed.
public enum LogRecord: Equatable, Sendable {
    case header(version: Int, epoch: String)
    case set(key: [UInt8], value: [UInt8], revision: UInt64, deadlineUnixMilliseconds: Int64?)
    case delete(key: [UInt8], revision: UInt64)
    case expired(key: [UInt8], revision: UInt64)
    case persist(key: [UInt8])
    case revision(UInt64)

    public static let formatVersion = 1

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
        out.writeRESPArrayHeader(count: 3)
        out.writeRESPBulkString("KVLOG")
        out.writeRESPBulkString(String(version))
        out.writeRESPBulkString(epoch)
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

    /// One RESP array of bulk strings, written with a single reservation.
    private static func writeArray(_ fields: [UnsafeRawBufferPointer], into out: inout ByteBuffer) {
        var length = 1 + digitCount(fields.count) + 2
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
            put(UInt8(ascii: "*")); putDecimal(fields.count); put(13); put(10)
            for field in fields {
                put(UInt8(ascii: "$")); putDecimal(field.count); put(13); put(10)
                if let base = field.baseAddress, field.count > 0 {
                    (raw.baseAddress! + at).copyMemory(from: base, byteCount: field.count)
                    at += field.count
                }
                put(13); put(10)
            }
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

        public var description: String {
            switch self {
            case .malformed(let detail): "not a RESP array of bulk strings (\(detail))"
            case .unknownRecord(let name): "unknown record \"\(name)\""
            case .badArity(let name, let count): "\(name) record with \(count) fields"
            case .badNumber(let field, let text): "\(field) \"\(text.prefix(32))\" is not a valid number"
            case .revisionNotIncreasing(let previous, let found): "revision \(found) after \(previous): revisions must increase"
            case .missingHeader: "the log does not start with a KVLOG header"
            case .unsupportedVersion(let version): "log format version \(version) is not supported (this kv-stored reads version \(LogRecord.formatVersion))"
            }
        }
    }

    /// Byte offset of the first record that could not be read.
    public var offset: Int
    public var reason: Reason

    public var description: String { "damaged log at byte offset \(offset): \(reason)" }
}
