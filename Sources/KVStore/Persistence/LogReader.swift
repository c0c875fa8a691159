import RESP

/// Reads a log's bytes record by record.
///
/// What a crash can leave, and how it is told from damage: the log is only ever appended to,
/// into space kv-stored filled with zeros beforehand (`AppendLog`), so bytes past the last
/// write are zeros and are not part of the log. A crash can lose any part of what was written
/// after the last fsync: the tail may end inside a record (a *torn tail*), or hold whole
/// sectors still zero between records that did reach the disk. Nothing in that region was
/// acknowledged under `appendfsync always`; it is cut off. A record that fails to read where
/// no zero sector follows cannot come from a crash: that is damage.
public enum LogReader {
    public enum Outcome: Equatable, Sendable {
        /// Every record up to `length` was whole and valid; only zeros follow.
        case complete(length: Int)
        /// The bytes from `validBytes` on are what a crash left of unfinished writes.
        case tornTail(validBytes: Int)
        /// The record at `damage.offset` is not a valid record; `validBytes` equals that offset.
        case damaged(LogDamage)

        /// The length of the log that holds only whole, valid records.
        public var validBytes: Int {
            switch self {
            case .complete(let length): length
            case .tornTail(let valid): valid
            case .damaged(let damage): damage.offset
            }
        }
    }

    /// Records hold at most a key and a value at kv-stored's absolute limits, in at most 8 fields.
    static let recordLimits = RESPLimits(maxBulkBytes: Int(UInt32.max), maxElements: 8)

    /// The sector size a crash can leave unwritten as a unit (the smallest in use).
    static let sectorBytes = 512

    /// Parses `bytes`, calling `body` with each record in order, until the end, a torn tail or
    /// damage. The first record must be the `KVLOG` header; its version says whether records
    /// carry checksums.
    public static func read(_ bytes: UnsafeRawBufferPointer, _ body: (LogRecord) throws -> Void) rethrows -> Outcome {
        // Every record ends in "\r\n", so trailing zeros are never part of one.
        var end = bytes.count
        while end > 0 && bytes[end - 1] == 0 { end -= 1 }
        let log = UnsafeRawBufferPointer(rebasing: bytes[0..<end])
        /// Damage at `offset`, unless a crash explains it (see the type's comment).
        func failure(_ offset: Int, _ reason: LogDamage.Reason) -> Outcome {
            hasZeroSector(bytes, from: offset, to: end) ? .tornTail(validBytes: offset) : .damaged(LogDamage(offset: offset, reason: reason))
        }
        var offset = 0
        var ranges: [Range<Int>] = []
        var lastRevision: UInt64 = 0
        var checksummed = true
        while offset < end {
            let rest = UnsafeRawBufferPointer(rebasing: log[offset...])
            guard rest[0] == UInt8(ascii: "*") else { return failure(offset, .malformed("a record starts with '*'")) }
            let outcome: RESPCommandParser.Outcome
            do throws(RESPProtocolError) {
                outcome = try RESPCommandParser.parse(rest, limits: recordLimits, arguments: &ranges)
            } catch {
                return failure(offset, .malformed(error.message))
            }
            switch outcome {
            case .incomplete:
                // A record running past the end is what a crash leaves of the last write, unless
                // a whole record follows it: then its length was damaged, and cutting the log
                // there would silently drop every record after it.
                if !hasZeroSector(bytes, from: offset, to: end), let next = nextRecord(in: log, after: offset, checksummed: checksummed) {
                    return .damaged(LogDamage(offset: offset, reason: .malformed("the record's length runs past a whole record at offset \(next)")))
                }
                return .tornTail(validBytes: offset)
            case .nothing:
                return failure(offset, .malformed("empty record"))
            case .command(let consumed):
                let args = RESPArguments(bytes: rest, ranges: ranges)
                if offset == 0 {
                    // Format 1 headers have three fields and no checksum.
                    checksummed = !(args.count == 3 && args.matches(0, "KVLOG") && args.string(1) == "1")
                }
                let record: LogRecord
                switch checksummed ? LogRecord.decodeChecked(args) : LogRecord.decode(args) {
                case .success(let decoded): record = decoded
                case .failure(let reason): return failure(offset, reason)
                }
                if offset == 0 {
                    guard case .header(let version, _) = record else { return .damaged(LogDamage(offset: 0, reason: .missingHeader)) }
                    guard (LogRecord.oldestReadableVersion...LogRecord.formatVersion).contains(version), checksummed == (version >= 2) else {
                        return .damaged(LogDamage(offset: 0, reason: .unsupportedVersion(version)))
                    }
                } else if case .header = record {
                    return failure(offset, .malformed("a second KVLOG header"))
                }
                if let revision = record.revision {
                    // A snapshot's REVISION may repeat its last entry's revision; changes must exceed it.
                    let increases = if case .revision = record { revision >= lastRevision } else { revision > lastRevision }
                    guard increases else {
                        return failure(offset, .revisionNotIncreasing(previous: lastRevision, found: revision))
                    }
                    lastRevision = revision
                }
                try body(record)
                offset += consumed
            }
        }
        return .complete(length: end)
    }

    /// The offset of the first whole, valid record that starts after `offset` (at a `*` that
    /// follows a line end), if any. Each attempt reads only record headers until one is whole
    /// (bulk contents are skipped by their lengths, at most 8 fields); only whole ones have
    /// their checksum computed, and at most `maxVerified` of them (values may hold text shaped
    /// like records), so the search stays linear in the log's size.
    static func nextRecord(in log: UnsafeRawBufferPointer, after offset: Int, checksummed: Bool, maxVerified: Int = 64) -> Int? {
        var ranges: [Range<Int>] = []
        var candidate = offset + 1
        var verified = 0
        while candidate < log.count, verified < maxVerified {
            guard let star = log[candidate...].firstIndex(of: UInt8(ascii: "*")) else { return nil }
            candidate = star + 1
            guard log[star - 1] == 0x0A else { continue }
            let rest = UnsafeRawBufferPointer(rebasing: log[star...])
            guard case .command? = try? RESPCommandParser.parse(rest, limits: recordLimits, arguments: &ranges) else { continue }
            verified += 1
            let args = RESPArguments(bytes: rest, ranges: ranges)
            if case .success = checksummed ? LogRecord.decodeChecked(args) : LogRecord.decode(args) { return star }
        }
        return nil
    }

    /// Whether a whole, aligned sector of zeros lies in `bytes[from..<to]`: the mark of a write a
    /// crash left unfinished in space that was zero-filled before.
    static func hasZeroSector(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int) -> Bool {
        var sector = (from + sectorBytes - 1) / sectorBytes * sectorBytes
        while sector + sectorBytes <= to {
            if UnsafeRawBufferPointer(rebasing: bytes[sector..<(sector + sectorBytes)]).allSatisfy({ $0 == 0 }) { return true }
            sector += sectorBytes
        }
        return false
    }
}
