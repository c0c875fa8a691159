import RESP

/// Reads a log's bytes record by record. A log is appended to and never rewritten in place, so
/// a crash can only leave an incomplete last record (a *torn tail*, a prefix of what was being
/// written); anything else that does not parse is damage.
public enum LogReader {
    public enum Outcome: Equatable, Sendable {
        /// Every byte belonged to a whole record.
        case complete
        /// The bytes from `validBytes` on are the start of a record that was never finished.
        case tornTail(validBytes: Int)
        /// The record at `damage.offset` is not a valid record; `validBytes` equals that offset.
        case damaged(LogDamage)

        /// The length of the log that holds only whole, valid records.
        public var validBytes: Int? {
            switch self {
            case .complete: nil
            case .tornTail(let valid): valid
            case .damaged(let damage): damage.offset
            }
        }
    }

    /// Parses `bytes`, calling `body` with each record in order, until the end, a torn tail or
    /// damage. The first record must be the `KVLOG` header.
    public static func read(_ bytes: UnsafeRawBufferPointer, _ body: (LogRecord) throws -> Void) rethrows -> Outcome {
        // Records hold at most a key and a value at kv-stored's absolute limits.
        let limits = RESPLimits(maxBulkBytes: Int(UInt32.max), maxElements: 8)
        var offset = 0
        var ranges: [Range<Int>] = []
        var lastRevision: UInt64 = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            guard rest[0] == UInt8(ascii: "*") else {
                return .damaged(LogDamage(offset: offset, reason: .malformed("a record starts with '*'")))
            }
            let outcome: RESPCommandParser.Outcome
            do throws(RESPProtocolError) {
                outcome = try RESPCommandParser.parse(rest, limits: limits, arguments: &ranges)
            } catch {
                return .damaged(LogDamage(offset: offset, reason: .malformed(error.message)))
            }
            switch outcome {
            case .incomplete:
                return .tornTail(validBytes: offset)
            case .nothing:
                return .damaged(LogDamage(offset: offset, reason: .malformed("empty record")))
            case .command(let consumed):
                let record: LogRecord
                switch LogRecord.decode(RESPArguments(bytes: rest, ranges: ranges)) {
                case .success(let decoded): record = decoded
                case .failure(let reason): return .damaged(LogDamage(offset: offset, reason: reason))
                }
                if offset == 0 {
                    guard case .header(let version, _) = record else { return .damaged(LogDamage(offset: 0, reason: .missingHeader)) }
                    guard version == LogRecord.formatVersion else { return .damaged(LogDamage(offset: 0, reason: .unsupportedVersion(version))) }
                } else if case .header = record {
                    return .damaged(LogDamage(offset: offset, reason: .malformed("a second KVLOG header")))
                }
                if let revision = record.revision {
                    // A snapshot's REVISION may repeat its last entry's revision; changes must exceed it.
                    let increases = if case .revision = record { revision >= lastRevision } else { revision > lastRevision }
                    guard increases else {
                        return .damaged(LogDamage(offset: offset, reason: .revisionNotIncreasing(previous: lastRevision, found: revision)))
                    }
                    lastRevision = revision
                }
                try body(record)
                offset += consumed
            }
        }
        return .complete
    }
}
