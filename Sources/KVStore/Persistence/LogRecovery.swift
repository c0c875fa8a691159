import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Startup: reads the append-only log back into the keyspace.
///
/// * A torn final record (kv-stored died while writing it) is cut off with a warning: it was
///   never acknowledged.
/// * Anything else that does not read stops startup with the offset and the reason, unless
///   `repair` is set: then a copy of the log is kept and the log is cut at the damage.
/// * Keys whose deadline passed while kv-stored was down are dropped without events; the
///   revision counter continues from the last revision in the log.
public enum LogRecovery {
    public struct Report: Sendable, Equatable {
        public var records = 0
        /// Bytes of whole, valid records: the log continues from here.
        public var validBytes = 0
        /// Bytes cut off: a torn tail, or (with repair) everything from the damage on.
        public var discardedBytes = 0
        /// The data's identity (the log header's), new when the log is new.
        public var epoch = ""
        /// The log's format; an older one than `LogRecord.formatVersion` is rewritten at startup.
        public var formatVersion = LogRecord.formatVersion
        public var milliseconds = 0
    }

    public static func load(path: String, into keyspace: inout Keyspace, repair: Bool, logger: Logger) throws -> Report {
        let started = keyspace.clock.monotonicNanoseconds()
        var report = Report()
        guard let bytes = try readFile(path) else {
            report.epoch = newEpoch()
            logger.notice("no log yet: starting with an empty keyspace", metadata: ["log": "\(path)"])
            return report
        }
        keyspace.beginRestore()
        let outcome = bytes.withUnsafeBytes { raw in
            LogReader.read(raw) { record in
                report.records += 1
                apply(record, to: &keyspace, report: &report)
            }
        }
        report.validBytes = outcome.validBytes
        switch outcome {
        case .complete:
            break  // what follows is the zero-filled space the log grows into
        case .tornTail(let valid):
            report.discardedBytes = bytes.count - valid
            logger.warning("the log ends in a write a crash interrupted (never acknowledged); cutting it off",
                           metadata: ["log": "\(path)", "offset": "\(valid)", "bytes": "\(bytes.count - valid)"])
        case .damaged(let damage):
            guard repair else {
                throw PersistenceFailure("""
                    \(path): \(damage). Nothing was loaded past that point and kv-stored did not start. \
                    To start anyway, losing every record from offset \(damage.offset) on (\(bytes.count - damage.offset) bytes), \
                    run kv-stored once with --repair-log; a copy of the damaged log is kept next to it.
                    """)
            }
            report.discardedBytes = bytes.count - damage.offset
            let copy = path + ".damaged-\(time(nil))"
            try writeFile(copy, bytes)
            logger.warning("repairing the log: cutting it at the damage; a copy of the damaged log was kept",
                           metadata: ["log": "\(path)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                                      "bytes_dropped": "\(bytes.count - damage.offset)", "copy": "\(copy)"])
        }
        keyspace.endRestore()
        if report.epoch.isEmpty { report.epoch = newEpoch() }
        report.milliseconds = Int((keyspace.clock.monotonicNanoseconds() - started) / 1_000_000)
        logger.notice("loaded the log", metadata: [
            "log": "\(path)", "records": "\(report.records)", "keys": "\(keyspace.count)",
            "revision": "\(keyspace.revision)", "ms": "\(report.milliseconds)",
        ])
        return report
    }

    static func apply(_ record: LogRecord, to keyspace: inout Keyspace, report: inout Report) {
        switch record {
        case .header(let version, let epoch):
            report.epoch = epoch
            report.formatVersion = version
        case .set(let key, let value, let revision, let deadline):
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in keyspace.restoreSet(k, value: v, revision: revision, deadlineUnixMilliseconds: deadline) }
            }
        case .delete(let key, let revision), .expired(let key, let revision):
            key.withUnsafeBytes { keyspace.restoreRemove($0, revision: revision) }
        case .persist(let key):
            key.withUnsafeBytes { keyspace.restorePersist($0) }
        case .revision(let revision):
            keyspace.restoreRevision(revision)
        }
    }

    /// A fresh identity for new data: 16 random hex digits.
    public static func newEpoch() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The file's bytes, or nil when it does not exist.
    static func readFile(_ path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw PersistenceFailure("cannot open the log \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw PersistenceFailure("cannot stat the log \(path): \(String(cString: strerror(errno)))") }
        let size = Int(info.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var offset = 0
        try bytes.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }  // an empty log
            while offset < size {
                let n = read(fd, base + offset, size - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw PersistenceFailure("cannot read the log \(path): \(n == 0 ? "it shrank while being read" : String(cString: strerror(errno)))") }
                offset += n
            }
        }
        return bytes
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PersistenceFailure("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }  // nothing to write
            var offset = 0
            while offset < raw.count {
                let n = write(fd, base + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw PersistenceFailure("cannot write \(path): \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
        guard fsync(fd) == 0 else { throw PersistenceFailure("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }
}
