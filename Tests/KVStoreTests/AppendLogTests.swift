import Foundation
import KVCore
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import KVStore

#if canImport(Glibc)
import Glibc
#endif

private func bytes(_ records: [LogRecord]) -> [UInt8] {
    var buffer = ByteBuffer()
    for record in records { record.encode(into: &buffer) }
    return Array(buffer.readableBytesView)
}

/// A record of raw fields with a valid checksum (format 2), whatever the fields say.
private func checked(_ fields: [String]) -> [UInt8] {
    var record = Array("*\(fields.count + 1)\r\n".utf8)
    for field in fields { record += Array("$\(field.utf8.count)\r\n\(field)\r\n".utf8) }
    let crc = record.withUnsafeBytes { LogChecksum.crc32c($0) }
    let hex = String(crc, radix: 16)
    return record + Array("$8\r\n\(String(repeating: "0", count: 8 - hex.count) + hex)\r\n".utf8)
}

private func read(_ bytes: [UInt8]) -> (records: [LogRecord], outcome: LogReader.Outcome) {
    var records: [LogRecord] = []
    let outcome = bytes.withUnsafeBytes { LogReader.read($0) { records.append($0) } }
    return (records, outcome)
}

private func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
    var template = Array("/tmp/kvlog-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw PersistenceFailure("mkdtemp failed") }
    let path = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: path) }
    try body(path)
}

/// A keyspace recording into a new log at `<dir>/kv-stored.aof`, on a manual clock (copies of
/// `keyspace` record into the same log).
private struct RecordingKeyspace {
    let path: String
    let clock = ManualClock()
    let logs = RecordingLogHandler()
    let keyspace: Keyspace
    let log: AppendLog

    init(dir: String, epoch: String, policy: FsyncPolicy) throws {
        path = dir + "/kv-stored.aof"
        log = try AppendLog(path: path, validBytes: 0, epoch: epoch, policy: policy, logger: logs.logger, onFailure: unexpectedLogFailure)
        var keyspace = Keyspace(clock: clock)
        keyspace.recorder = log
        self.keyspace = keyspace
    }

    /// What a restart would load from the log: a new keyspace on the same clock.
    func loadAgain() throws -> (keyspace: Keyspace, report: LogRecovery.Report) {
        var loaded = Keyspace(clock: clock)
        let report = try LogRecovery.load(path: path, into: &loaded, repair: false, logger: logs.logger)
        return (loaded, report)
    }
}

private extension Keyspace {
    mutating func put(_ key: String, _ value: String, expiry: Expiry = .none) { _ = set(key, value, expiry: expiry) }

    mutating func ttl(_ key: String) -> Int64? {
        guard let entry = Array(key.utf8).withUnsafeBytes({ lookup($0) }) else { return nil }
        return remainingMilliseconds(of: entry)
    }
}

/// A keyspace read by a compaction's walk in a test: `between` runs on it before each piece,
/// as writes run between the pieces in kv-stored.
private final class WalkedKeyspace: @unchecked Sendable {
    var keyspace: Keyspace
    private(set) var pieces = 0
    private var walk = CompactionWalk(through: 0, keysPerPiece: 1)
    private var between: (inout Keyspace, Int) -> Void = { _, _ in }

    init(_ keyspace: Keyspace) { self.keyspace = keyspace }

    func snapshot(log: AppendLog, keysPerPiece: Int, between: @escaping (inout Keyspace, Int) -> Void) -> LogSnapshot {
        walk = CompactionWalk(through: keyspace.revision, keysPerPiece: keysPerPiece)
        self.between = between
        return LogSnapshot(revision: keyspace.revision, logOffset: log.appendedOffset) { [self] in
            self.between(&keyspace, pieces)
            pieces += 1
            return walk.next(in: keyspace)
        }
    }
}

/// xorshift64*: a seeded generator, so a failing interleaving can be replayed.
private struct Xorshift {
    private var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func below(_ bound: Int) -> Int {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return Int((state &* 0x2545_F491_4F6C_DD1D) >> 33) % bound
    }
}

@Suite("Append-only log: records, reader, recovery")
struct AppendLogTests {
    static let sample: [LogRecord] = [
        .header(version: LogRecord.formatVersion, epoch: "00c0ffee00c0ffee"),
        .set(key: Array("k".utf8), value: Array("\"v\"".utf8), revision: 1, deadlineUnixMilliseconds: nil),
        .set(key: Array("a\r\nb".utf8), value: Array("{\"x\":[1,2]}".utf8), revision: 2, deadlineUnixMilliseconds: 1_700_000_060_000),
        .set(key: [0, 255, 10], value: [], revision: 3, deadlineUnixMilliseconds: nil),
        .persist(key: Array("a\r\nb".utf8)),
        .delete(key: Array("k".utf8), revision: 4),
        .expired(key: [0, 255, 10], revision: 9),
        .revision(9),  // a compacted log's counter may equal its last entry's revision
    ]

    @Test("every record type reads back as written")
    func roundTrip() {
        let all = bytes(Self.sample)
        let (records, outcome) = read(all)
        #expect(outcome == .complete(length: all.count))
        #expect(records == Self.sample)
        // The zero-filled space the log grows into is not part of it.
        let padded = read(all + [UInt8](repeating: 0, count: 5000))
        #expect(padded.outcome == .complete(length: all.count) && padded.records == Self.sample)
    }

    @Test("records are checksummed: one changed byte anywhere in a record is found")
    func checksums() {
        // The standard check value of CRC-32C.
        #expect(Array("123456789".utf8).withUnsafeBytes { LogChecksum.crc32c($0) } == 0xE306_9283)
        let header = bytes([Self.sample[0]])
        let record = bytes([Self.sample[2]])
        let next = bytes([Self.sample[3]])
        for i in record.indices {
            var bad = record
            bad[i] ^= 0x01
            let outcome = read(header + bad + next).outcome
            guard case .damaged(let damage) = outcome else {
                Issue.record("flipping byte \(i) gave \(outcome)")
                continue
            }
            #expect(damage.offset == header.count, "byte \(i)")
        }
        var value = record
        let at = value.lastIndex(of: UInt8(ascii: "]"))!  // inside the value: framing still parses
        value[at] = UInt8(ascii: "[")
        #expect(read(header + value + next).outcome == .damaged(LogDamage(offset: header.count, reason: .badChecksum)))
    }

    @Test("what a crash leaves in zero-filled space (unwritten sectors between written ones) is a torn tail, not damage")
    func crashHoles() {
        let big = String(repeating: "x", count: 3000)
        let records: [LogRecord] = [Self.sample[0]] + (1...4).map {
            .set(key: Array("k\($0)".utf8), value: Array("\"\(big)\"".utf8), revision: UInt64($0), deadlineUnixMilliseconds: nil)
        }
        let whole = bytes(records)
        // A sector inside the fourth record stayed zero; the record after it reached the disk.
        let fourthStarts = bytes(Array(records[0...3])).count, fourthEnds = bytes(Array(records[0...4])).count
        let sector = (fourthStarts + 100 + 511) / 512 * 512
        #expect(sector + 512 < fourthEnds - 100)
        var holed = whole + bytes([.set(key: Array("k5".utf8), value: Array("5".utf8), revision: 5, deadlineUnixMilliseconds: nil)])
        for i in sector..<(sector + 512) { holed[i] = 0 }
        let (survivors, outcome) = read(holed + [UInt8](repeating: 0, count: 1000))
        #expect(outcome == .tornTail(validBytes: fourthStarts))
        #expect(survivors.count == 4 && survivors.last?.revision == 3)
        // The same bytes changed without a zero sector are damage.
        var flipped = whole
        flipped[sector] ^= 1
        #expect(read(flipped).outcome == .damaged(LogDamage(offset: fourthStarts, reason: .badChecksum)))
    }

    /// Issue 15: a damaged length that ran past the end of the log read as a torn tail, and
    /// recovery cut off every record after it without a word.
    @Test("a record whose length runs past a whole record after it is damage, not a torn tail")
    func damagedLength() {
        let header = bytes([Self.sample[0]])
        let record = bytes([Self.sample[2]])
        let rest = bytes(Array(Self.sample[3...]))
        let text = String(decoding: record, as: UTF8.self)
        let longer = Array(text.replacingOccurrences(of: "$11\r\n{", with: "$99999\r\n{").utf8)
        #expect(longer != record)
        let outcome = read(header + longer + rest).outcome
        guard case .damaged(let damage) = outcome else {
            Issue.record("a damaged length read as \(outcome)")
            return
        }
        #expect(damage.offset == header.count)
        // The same record at the very end of the log is what a crash leaves: a torn tail.
        #expect(read(header + longer).outcome == .tornTail(validBytes: header.count))
    }

    /// Issue 15: a failed fsync while zero-filling space ahead of the log was ignored, so a later
    /// fsync could "succeed" over lost pages; a failed write during a compaction's switch dropped
    /// the records logged meanwhile and writes went on being acknowledged.
    @Test("after a failed write or sync of the live log, every commit refuses, even once the disk answers again, and the failure is reported once", arguments: ["commit sync", "zero-fill sync", "write", "compaction switch"])
    func failStop(step: String) throws {
        try withTemporaryDirectory { dir in
            let failing = NIOLockedValueBox(false)
            let reported = NIOLockedValueBox<[String]>([])
            let io = LogFileIO(
                write: { fd, bytes, offset in
                    if step == "write" || step == "compaction switch", failing.withLockedValue({ $0 }) { errno = EIO; return -1 }
                    return pwrite(fd, bytes.baseAddress, bytes.count, offset)
                },
                sync: { fd in
                    if step.hasSuffix("sync"), failing.withLockedValue({ $0 }) { errno = EIO; return -1 }
                    return fdatasync(fd)
                })
            let logs = RecordingLogHandler()
            let log = try AppendLog(path: dir + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .always, logger: logs.logger, io: io,
                                    onFailure: { message in reported.withLockedValue { $0.append(message) } })
            var keyspace = Keyspace(clock: ManualClock())
            keyspace.recorder = log
            keyspace.put("a", "1")
            try log.commit()
            keyspace.put("b", "2")
            failing.withLockedValue { $0 = true }
            switch step {
            case "zero-fill sync": log.prepareSpace()
            case "compaction switch":
                let snapshot = LogSnapshot(revision: keyspace.revision, logOffset: log.appendedOffset) { nil }
                #expect(throws: PersistenceFailure.self) { _ = try log.compact(snapshot) }
            default: #expect(throws: PersistenceFailure.self) { try log.commit() }
            }
            #expect(log.hasFailed, "\(step)")
            failing.withLockedValue { $0 = false }
            keyspace.put("c", "3")
            #expect(throws: PersistenceFailure.self) { try log.commit() }
            log.commitOrDie()
            #expect(reported.withLockedValue { $0.count } == 1, "\(reported.withLockedValue { $0 })")
        }
    }

    @Test("format 1 logs (no checksums) still read")
    func formatOne() {
        let v1 = Array("*3\r\n$5\r\nKVLOG\r\n$1\r\n1\r\n$1\r\ne\r\n*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$1\r\n7\r\n".utf8)
        let (records, outcome) = read(v1)
        #expect(outcome == .complete(length: v1.count))
        #expect(records == [.header(version: 1, epoch: "e"), .set(key: Array("k".utf8), value: Array("1".utf8), revision: 7, deadlineUnixMilliseconds: nil)])
    }

    @Test("a log cut at any byte offset reads as its whole records plus a torn tail")
    func tornTailsAtEveryOffset() {
        let all = bytes(Self.sample)
        var boundaries = [0]
        for i in Self.sample.indices { boundaries.append(bytes(Array(Self.sample[...i])).count) }
        for cut in 0...all.count {
            let (records, outcome) = read(Array(all[..<cut]))
            let whole = boundaries.lastIndex { $0 <= cut }!
            #expect(records == Array(Self.sample[..<whole]), "cut at \(cut)")
            if boundaries.contains(cut) {
                #expect(outcome == .complete(length: cut), "cut at \(cut)")
            } else {
                #expect(outcome == .tornTail(validBytes: boundaries[whole]), "cut at \(cut)")
            }
        }
    }

    @Test("damage in the middle is reported with the offset of the bad record")
    func damage() throws {
        let header = bytes([Self.sample[0]])
        let good = bytes([Self.sample[1]])
        let cases: [([UInt8], LogDamage.Reason)] = [
            (checked(["SET", "k", "1"]), .badArity("SET", 3)),
            (checked(["DEL", "k", "x1"]), .badNumber("revision", "x1")),
            (checked(["FROB", "k"]), .unknownRecord("FROB")),
            (checked(["DEL", "k", "1"]), .revisionNotIncreasing(previous: 1, found: 1)),
            (Array("*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$1\r\n2\r\n".utf8), .badChecksum),  // format 1 record in a format 2 log
            (Array("SET k v 2\r\n".utf8), .malformed("a record starts with '*'")),
            (Array("*3\r\n$3\r\nDEL\r\n$1\r\nkXX$1\r\n2\r\n".utf8), .malformed("bulk string not followed by CRLF")),
        ]
        for (bad, reason) in cases {
            let (records, outcome) = read(header + good + bad + good)
            #expect(records.count == 2)
            #expect(outcome == .damaged(LogDamage(offset: header.count + good.count, reason: reason)), "\(String(decoding: bad, as: UTF8.self))")
        }
        #expect(read(good).outcome == .damaged(LogDamage(offset: 0, reason: .missingHeader)))
        #expect(read(bytes([.header(version: 7, epoch: "e")])).outcome == .damaged(LogDamage(offset: 0, reason: .unsupportedVersion(7))))
        #expect(read(header + header).outcome == .damaged(LogDamage(offset: header.count, reason: .malformed("a second KVLOG header"))))
    }

    @Test("recovery restores values, deadlines and the revision, drops what expired meanwhile, and records nothing")
    func restore() {
        let clock = ManualClock()
        var keyspace = Keyspace(clock: clock)
        let now = clock.unixMilliseconds()
        var report = LogRecovery.Report()
        let records: [LogRecord] = [
            .header(version: 1, epoch: "e1"),
            .set(key: Array("a".utf8), value: Array("1".utf8), revision: 5, deadlineUnixMilliseconds: now + 60_000),
            .set(key: Array("gone".utf8), value: Array("2".utf8), revision: 6, deadlineUnixMilliseconds: now - 1),
            .set(key: Array("b".utf8), value: Array("3".utf8), revision: 7, deadlineUnixMilliseconds: now + 1_000),
            .persist(key: Array("b".utf8)),
            .set(key: Array("c".utf8), value: Array("4".utf8), revision: 8, deadlineUnixMilliseconds: nil),
            .delete(key: Array("c".utf8), revision: 9),
        ]
        for record in records { LogRecovery.apply(record, to: &keyspace, report: &report) }
        #expect(keyspace.restoreDropExpired() == 1, "as the end of a load does")
        #expect(report.epoch == "e1" && report.formatVersion == 1)
        #expect(keyspace.revision == 9)
        #expect(keyspace.count == 2)
        #expect(keyspace.get("a") == "1" && keyspace.ttl("a") == 60_000)
        #expect(keyspace.get("b") == "3" && keyspace.ttl("b") == nil)
        #expect(keyspace.get("gone") == nil && keyspace.get("c") == nil)
        #expect(keyspace.stats.changes == 0, "restoring publishes nothing")
        keyspace.put("d", "5")
        #expect(keyspace.revision == 10, "revisions continue after the log's")
    }

    @Test("what a keyspace records, recovery loads back into another: values, TTLs, revision")
    func writeThenRecover() throws {
        try withTemporaryDirectory { dir in
            let recording = try RecordingKeyspace(dir: dir, epoch: "feedfacefeedface", policy: .always)
            let (clock, log) = (recording.clock, recording.log)
            var first = recording.keyspace
            first.put("k", "\"v\"")
            first.put("t", "1", expiry: .after(milliseconds: 30_000))
            first.put("p", "2", expiry: .after(milliseconds: 30_000))
            _ = Array("p".utf8).withUnsafeBytes { first.persist($0) }
            first.put("x", "3")
            first.delete("x")
            try log.commit()
            log.stop()

            clock.advance(milliseconds: 10_000)
            var (second, report) = try recording.loadAgain()
            #expect(report.epoch == "feedfacefeedface")
            #expect(report.records == 7)  // header + 4 sets + persist + delete
            #expect(second.revision == first.revision)
            #expect(second.get("k") == "\"v\"" && second.get("p") == "2" && second.ttl("p") == nil)
            #expect(second.get("t") == "1" && second.ttl("t") == 20_000, "the deadline is absolute: 10 s of the 30 s passed")
            #expect(second.get("x") == nil && second.count == 3)
            // The key order, built once at the end of the load, lists them and takes new keys.
            second.put("a", "0")
            let listed = [UInt8]().withUnsafeBytes { second.list(prefix: $0, after: nil, limit: 10, budget: 100) }
            #expect(listed.entries.map { String(decoding: $0.entry.keyBytes, as: UTF8.self) } == ["a", "k", "p", "t"])
        }
    }

    @Test("a torn tail in the file is cut off with a warning; damage stops recovery unless repair is asked for")
    func recoveryOfBadFiles() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/kv-stored.aof"
            let good = bytes(Array(Self.sample[0...2]))
            let logs = RecordingLogHandler()

            try LogRecovery.writeFile(path, good + Array("*4\r\n$3\r\nSET\r\n$1\r".utf8))
            var keyspace = Keyspace(clock: ManualClock())
            let torn = try LogRecovery.load(path: path, into: &keyspace, repair: false, logger: logs.logger)
            #expect(torn.validBytes == good.count && torn.discardedBytes == "*4\r\n$3\r\nSET\r\n$1\r".utf8.count)
            #expect(logs.logged.contains { $0.level == .warning && $0.message.contains("a crash interrupted") })
            // The log continues from the last whole record.
            let log = try AppendLog(path: path, validBytes: torn.validBytes, epoch: torn.epoch, policy: .always, logger: logs.logger, onFailure: unexpectedLogFailure)
            log.stop()
            #expect(try LogRecovery.readFile(path) == good)

            let damaged = good + checked(["FROB", "k"]) + bytes([Self.sample[3]])
            try LogRecovery.writeFile(path, damaged)
            var refused = Keyspace(clock: ManualClock())
            #expect(throws: PersistenceFailure.self) { try LogRecovery.load(path: path, into: &refused, repair: false, logger: logs.logger) }
            do {
                _ = try LogRecovery.load(path: path, into: &refused, repair: false, logger: logs.logger)
            } catch {
                #expect("\(error)".contains("byte offset \(good.count)") && "\(error)".contains("--repair-log"), "\(error)")
            }
            var repaired = Keyspace(clock: ManualClock())
            let report = try LogRecovery.load(path: path, into: &repaired, repair: true, logger: logs.logger)
            #expect(report.validBytes == good.count && repaired.count == 2)
            let copies = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("kv-stored.aof.damaged-") }
            #expect(copies.count == 1)
            #expect(try copies.first.flatMap { try LogRecovery.readFile(dir + "/" + $0) } == damaged)
        }
    }

    @Test("compaction keeps the live keyspace and every change made after the snapshot; the log shrinks and loads back the same")
    func compaction() throws {
        try withTemporaryDirectory { dir in
            let recording = try RecordingKeyspace(dir: dir, epoch: "cafe", policy: .no)
            let log = recording.log
            var keyspace = recording.keyspace
            for round in 0..<50 {
                for i in 0..<20 { keyspace.put("k\(i)", "\"round \(round)\"", expiry: i % 4 == 0 ? .after(milliseconds: 60_000) : .none) }
            }
            for i in 0..<5 { keyspace.delete("k\(i)") }
            try log.commit()
            let before = log.figures.sizeBytes
            let walked = WalkedKeyspace(keyspace)
            let snapshot = walked.snapshot(log: log, keysPerPiece: 1024) { keyspace, piece in
                guard piece == 0 else { return }
                // Changes made after the snapshot's instant, before the walk reads the keys, must survive the switch.
                keyspace.put("k19", "\"after the snapshot\"")
                keyspace.delete("k18")
                _ = Array("k12".utf8).withUnsafeBytes { keyspace.persist($0) }
                keyspace.put("new", "1", expiry: .after(milliseconds: 5_000))
            }
            let size = try log.compact(snapshot)
            keyspace = walked.keyspace
            keyspace.put("k17", "\"after the switch\"")
            try log.commit()
            log.stop()
            #expect(size < before / 10, "compacted \(before) bytes into \(size)")

            var (loaded, report) = try recording.loadAgain()
            #expect(report.epoch == "cafe" && report.discardedBytes == 0)
            #expect(loaded.revision == keyspace.revision)
            #expect(loaded.count == keyspace.count)
            for i in 0..<20 {
                #expect(loaded.get("k\(i)") == keyspace.get("k\(i)") && loaded.ttl("k\(i)") == keyspace.ttl("k\(i)"), "k\(i)")
            }
            #expect(loaded.get("k19") == "\"after the snapshot\"" && loaded.get("k17") == "\"after the switch\"")
            #expect(loaded.get("k18") == nil && loaded.ttl("k12") == nil && loaded.get("new") == "1" && loaded.ttl("new") == 5_000)
        }
    }

    @Test("a compaction walking the keyspace in small pieces, with every kind of change landing between them, loads back exactly the live keyspace")
    func compactionInPieces() throws {
        for seed in UInt64(1)...8 {
            try withTemporaryDirectory { dir in
                let recording = try RecordingKeyspace(dir: dir, epoch: "f00d", policy: .no)
                let (clock, log) = (recording.clock, recording.log)
                var random = Xorshift(seed: seed)
                func key(_ random: inout Xorshift) -> String { "k\(random.below(400))" }  // some before the walk's cursor, some after
                func expiry(_ random: inout Xorshift) -> Expiry {
                    switch random.below(4) {
                    case 0: return .after(milliseconds: Int64(20 + random.below(200)))  // expires during the walk
                    case 1: return .after(milliseconds: 600_000)
                    default: return .none
                    }
                }
                var keyspace = recording.keyspace
                for i in 0..<300 { keyspace.put("k\(i)", "\"start \(i)\"", expiry: expiry(&random)) }
                var changes = 0
                let walked = WalkedKeyspace(keyspace)
                let snapshot = walked.snapshot(log: log, keysPerPiece: 7) { keyspace, piece in
                    for _ in 0..<random.below(5) {
                        changes += 1
                        switch random.below(5) {
                        case 0, 1: keyspace.put(key(&random), "\"piece \(piece)\"", expiry: expiry(&random))
                        case 2: keyspace.delete(key(&random))
                        case 3: _ = keyspace.persist(key(&random))
                        default:
                            clock.advance(milliseconds: Int64(random.below(15)))
                            _ = keyspace.expireDue()
                        }
                    }
                }
                _ = try log.compact(snapshot)
                keyspace = walked.keyspace
                keyspace.put("k1", "\"after the switch\"")
                try log.commit()
                log.stop()
                #expect(changes > 50 && walked.pieces > 30, "the walk must be interleaved with changes: \(changes) in \(walked.pieces) pieces")

                var (loaded, report) = try recording.loadAgain()
                #expect(report.discardedBytes == 0 && loaded.revision == keyspace.revision, "seed \(seed)")
                let (got, want) = (Self.contents(of: &loaded), Self.contents(of: &keyspace))
                let wrong = Set(got.keys).union(want.keys).filter { got[$0] != want[$0] }.sorted()
                #expect(wrong.isEmpty, "seed \(seed): \(wrong.map { "\($0): loaded \(got[$0] ?? "nothing"), kept \(want[$0] ?? "nothing")" })")
            }
        }
    }

    @Test("a walk that cannot read a piece (kv-stored stopping) ends the compaction; the log stays as it was")
    func compactionWalkFails() throws {
        try withTemporaryDirectory { dir in
            let recording = try RecordingKeyspace(dir: dir, epoch: "dead", policy: .no)
            let (path, log) = (recording.path, recording.log)
            var keyspace = recording.keyspace
            for i in 0..<100 { keyspace.put("k\(i)", "\(i)") }
            try log.commit()
            let before = try LogRecovery.readFile(path)
            let pieces = NIOLockedValueBox(0)
            let snapshot = LogSnapshot(revision: keyspace.revision, logOffset: log.appendedOffset) { [keyspace] in
                let piece = pieces.withLockedValue { $0 += 1; return $0 }
                guard piece == 1 else { throw PersistenceFailure("the event loop is gone") }
                return keyspace.compactionPiece(after: nil, through: keyspace.revision, keys: 10).entries
            }
            #expect(throws: PersistenceFailure.self) { _ = try log.compact(snapshot) }
            log.stop()
            #expect(try LogRecovery.readFile(path) == before)
            #expect(!FileManager.default.fileExists(atPath: path + ".compacting"))
            let loaded = try recording.loadAgain().keyspace
            #expect(loaded.count == 100)
        }
    }

    @Test("a key set with a TTL and then persisted survives a restart after its first deadline; one left to expire does not")
    func persistAfterDeadlinePassed() throws {
        try withTemporaryDirectory { dir in
            let recording = try RecordingKeyspace(dir: dir, epoch: "beef", policy: .no)
            let (clock, log) = (recording.clock, recording.log)
            var keyspace = recording.keyspace
            keyspace.put("kept", "1", expiry: .after(milliseconds: 100))
            keyspace.put("gone", "2", expiry: .after(milliseconds: 100))
            let persisted = keyspace.persist("kept")
            #expect(persisted)
            try log.commit()
            log.stop()
            clock.advance(milliseconds: 1_000)  // both first deadlines pass while kv-stored is down

            var loaded = try recording.loadAgain().keyspace
            let kept = loaded.get("kept"), keptTTL = loaded.ttl("kept"), gone = loaded.get("gone")
            #expect(kept == "1" && keptTTL == nil)
            #expect(gone == nil && loaded.count == 1 && loaded.expiringCount == 0)
            #expect(loaded.revision == 2)
        }
    }

    /// Every live key with its value, revision and milliseconds left.
    static func contents(of keyspace: inout Keyspace) -> [String: String] {
        var contents: [String: String] = [:]
        keyspace.forEachLive { entry in
            let key = String(decoding: entry.keyBytes, as: UTF8.self)
            contents[key] = "\(String(decoding: entry.valueBytes, as: UTF8.self)) @\(entry.revision) ttl \(keyspace.remainingMilliseconds(of: entry).map(String.init) ?? "none")"
        }
        return contents
    }

    @Test("the log grows into zero-filled space ahead of it, and loads back whole from it")
    func spaceAhead() throws {
        try withTemporaryDirectory { dir in
            let recording = try RecordingKeyspace(dir: dir, epoch: "ab", policy: .always)
            let (path, logs, log) = (recording.path, recording.logs, recording.log)
            var keyspace = recording.keyspace
            for i in 0..<100 { keyspace.put("k\(i)", "\(i)") }
            try log.commit()
            log.prepareSpace()
            let size = try #require(try LogRecovery.readFile(path)).count
            #expect(size >= log.figures.sizeBytes + LogSpace.ahead / 2, "file \(size), log \(log.figures.sizeBytes)")
            for i in 100..<200 { keyspace.put("k\(i)", "\(i)") }
            try log.commit()
            #expect(try LogRecovery.readFile(path)?.count == size, "written into the space, not past it")
            log.stop()
            let (loaded, report) = try recording.loadAgain()
            #expect(report.discardedBytes == 0 && report.validBytes == log.figures.sizeBytes)
            #expect(loaded.count == 200 && loaded.revision == 200)
            #expect(!logs.logged.contains { $0.level >= .warning })
        }
    }

    @Test("automatic compaction is due once the log has grown by the factor and reached the minimum size")
    func compactionPolicy() {
        let policy = CompactionPolicy(factor: 2, minBytes: 1000)
        #expect(!policy.isDue(size: 999, sizeAfterLast: 10))
        #expect(policy.isDue(size: 1000, sizeAfterLast: 500))
        #expect(!policy.isDue(size: 1500, sizeAfterLast: 1000))
        #expect(policy.isDue(size: 2000, sizeAfterLast: 1000))
        #expect(!CompactionPolicy(factor: 0, minBytes: 0).isDue(size: 1 << 30, sizeAfterLast: 1))
    }

    @Test("a second AppendLog on the same file is refused (one kv-stored per data directory)")
    func exclusive() throws {
        try withTemporaryDirectory { dir in
            let logs = RecordingLogHandler()
            let first = try AppendLog(path: dir + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .no, logger: logs.logger, onFailure: unexpectedLogFailure)
            #expect(throws: PersistenceFailure.self) {
                _ = try AppendLog(path: dir + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .no, logger: logs.logger, onFailure: unexpectedLogFailure)
            }
            first.stop()
        }
    }
}

@Suite("Clean-stop marker")
struct CleanStopTests {
    @Test("the epoch is kept only for the very log a clean stop left: a missing, stale or edited log, or a second start, gets none")
    func keepsOnlyUntouched() throws {
        try withTemporaryDirectory { dir in
            let log = dir + "/kv-stored.aof"
            try LogRecovery.writeFile(log, Array("records".utf8))
            #expect(CleanStop.take(log: log) == nil, "no marker: not a clean stop")
            try CleanStop.record(log: log, epoch: "feedfacefeedface")
            #expect(CleanStop.take(log: log) == "feedfacefeedface")
            #expect(CleanStop.take(log: log) == nil, "the marker is used once: a crash after this start leaves none")

            try CleanStop.record(log: log, epoch: "e1")
            try LogRecovery.writeFile(log, Array("other records".utf8))  // an older copy put back, say
            #expect(CleanStop.take(log: log) == nil)

            try CleanStop.record(log: log, epoch: "e2")
            try LogRecovery.writeFile(CleanStop.markerPath(forLog: log), Array("junk".utf8))
            #expect(CleanStop.take(log: log) == nil)
        }
    }
}
