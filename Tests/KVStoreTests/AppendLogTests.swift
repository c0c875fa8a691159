import Foundation
import KVCore
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
        log = try AppendLog(path: path, validBytes: 0, epoch: epoch, policy: policy, logger: logs.logger)
        var keyspace = Keyspace(clock: clock)
        keyspace.recorder = log
        self.keyspace = keyspace
    }
}

private extension Keyspace {
    mutating func put(_ key: String, _ value: String, expiry: Expiry = .none) { _ = set(key, value, expiry: expiry) }

    mutating func ttl(_ key: String) -> Int64? {
        guard let entry = Array(key.utf8).withUnsafeBytes({ lookup($0) }) else { return nil }
        return remainingMilliseconds(of: entry)
    }
}

@Suite("Append-only log: records, reader, recovery")
struct AppendLogTests {
    static let sample: [LogRecord] = [
        .header(version: 1, epoch: "00c0ffee00c0ffee"),
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
        let (records, outcome) = read(bytes(Self.sample))
        #expect(outcome == .complete)
        #expect(records == Self.sample)
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
                #expect(outcome == .complete, "cut at \(cut)")
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
            (Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n".utf8), .badArity("SET", 3)),
            (Array("*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$2\r\nx1\r\n".utf8), .badNumber("revision", "x1")),
            (Array("*2\r\n$4\r\nFROB\r\n$1\r\nk\r\n".utf8), .unknownRecord("FROB")),
            (Array("*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$1\r\n1\r\n".utf8), .revisionNotIncreasing(previous: 1, found: 1)),
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
        var epoch = ""
        let records: [LogRecord] = [
            .header(version: 1, epoch: "e1"),
            .set(key: Array("a".utf8), value: Array("1".utf8), revision: 5, deadlineUnixMilliseconds: now + 60_000),
            .set(key: Array("gone".utf8), value: Array("2".utf8), revision: 6, deadlineUnixMilliseconds: now - 1),
            .set(key: Array("b".utf8), value: Array("3".utf8), revision: 7, deadlineUnixMilliseconds: now + 1_000),
            .persist(key: Array("b".utf8)),
            .set(key: Array("c".utf8), value: Array("4".utf8), revision: 8, deadlineUnixMilliseconds: nil),
            .delete(key: Array("c".utf8), revision: 9),
        ]
        for record in records { LogRecovery.apply(record, to: &keyspace, epoch: &epoch) }
        #expect(epoch == "e1")
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
            let (path, clock, logs, log) = (recording.path, recording.clock, recording.logs, recording.log)
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
            var second = Keyspace(clock: clock)
            let report = try LogRecovery.load(path: path, into: &second, repair: false, logger: logs.logger)
            #expect(report.epoch == "feedfacefeedface")
            #expect(report.records == 7)  // header + 4 sets + persist + delete
            #expect(second.revision == first.revision)
            #expect(second.get("k") == "\"v\"" && second.get("p") == "2" && second.ttl("p") == nil)
            #expect(second.get("t") == "1" && second.ttl("t") == 20_000, "the deadline is absolute: 10 s of the 30 s passed")
            #expect(second.get("x") == nil && second.count == 3)
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
            #expect(logs.logged.contains { $0.level == .warning && $0.message.contains("middle of a record") })
            // The log continues from the last whole record.
            let log = try AppendLog(path: path, validBytes: torn.validBytes, epoch: torn.epoch, policy: .always, logger: logs.logger)
            log.stop()
            #expect(try LogRecovery.readFile(path) == good)

            let damaged = good + Array("*2\r\n$4\r\nFROB\r\n$1\r\nk\r\n".utf8) + bytes([Self.sample[3]])
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
            let (path, clock, logs, log) = (recording.path, recording.clock, recording.logs, recording.log)
            var keyspace = recording.keyspace
            for round in 0..<50 {
                for i in 0..<20 { keyspace.put("k\(i)", "\"round \(round)\"", expiry: i % 4 == 0 ? .after(milliseconds: 60_000) : .none) }
            }
            for i in 0..<5 { keyspace.delete("k\(i)") }
            try log.commit()
            let before = log.figures.sizeBytes
            let (entries, revision) = keyspace.liveSnapshot()
            let snapshot = LogSnapshot(entries: entries, revision: revision, logOffset: log.appendedOffset)
            // Changes made while the snapshot is being written must survive the switch.
            keyspace.put("k19", "\"after the snapshot\"")
            keyspace.delete("k18")
            _ = Array("k12".utf8).withUnsafeBytes { keyspace.persist($0) }
            keyspace.put("new", "1", expiry: .after(milliseconds: 5_000))
            let size = try log.compact(snapshot)
            keyspace.put("k17", "\"after the switch\"")
            try log.commit()
            log.stop()
            #expect(size < before / 10, "compacted \(before) bytes into \(size)")

            var loaded = Keyspace(clock: clock)
            let report = try LogRecovery.load(path: path, into: &loaded, repair: false, logger: logs.logger)
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
            let first = try AppendLog(path: dir + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .no, logger: logs.logger)
            #expect(throws: PersistenceFailure.self) {
                _ = try AppendLog(path: dir + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .no, logger: logs.logger)
            }
            first.stop()
        }
    }
}
