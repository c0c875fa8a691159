import Atomics
import KVSystem
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Rewrites the live log as the keyspace stands (Redis's `BGREWRITEAOF`) while writes go on:
/// a snapshot goes to a temporary file, what was logged meanwhile is copied after it, and the
/// switch takes every lock of the log only for the last copy and the rename. Failures of the
/// temporary file end the compaction alone; failures of the live log are the log's.
final class LogCompactor: @unchecked Sendable {
    let policy: CompactionPolicy
    private let space: LogSpace
    private let epoch: String
    private let logger: Logger

    private let running = ManagedAtomic(false)
    let sizeAfterLast: ManagedAtomic<Int>
    let count = ManagedAtomic(0)
    let lastMilliseconds = ManagedAtomic(0)
    let lastFailed = ManagedAtomic(false)

    init(policy: CompactionPolicy, space: LogSpace, epoch: String, logger: Logger, size: Int) {
        self.policy = policy
        self.space = space
        self.epoch = epoch
        self.logger = logger
        sizeAfterLast = ManagedAtomic(size)
    }

    var isRunning: Bool { running.load(ordering: .acquiring) }

    /// Whether the log has grown enough since the last compaction for another.
    func isDue(size: Int) -> Bool { policy.isDue(size: size, sizeAfterLast: sizeAfterLast.load(ordering: .relaxed)) }

    /// Starts compacting on a thread of its own unless one is running.
    func start(_ snapshot: @escaping @Sendable () -> LogSnapshot) -> Bool {
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return false }
        // A plain thread: the work blocks in write and fsync and must not hold an event loop.
        _ = WorkerThread.start { [self] in
            let started = Self.monotonicMilliseconds()
            do {
                let size = try compact(snapshot())
                let ms = Self.monotonicMilliseconds() - started
                lastMilliseconds.store(ms, ordering: .relaxed)
                lastFailed.store(false, ordering: .relaxed)
                count.wrappingIncrement(ordering: .relaxed)
                logger.notice("compacted the log", metadata: ["log": "\(space.syncer.writer.path)", "bytes": "\(size)", "ms": "\(ms)"])
            } catch {
                lastFailed.store(true, ordering: .relaxed)
                logger.error("log compaction failed; the current log stays in use", metadata: ["error": "\(error)"])
            }
            running.store(false, ordering: .releasing)
        }
        return true
    }

    /// Writes `snapshot` to a temporary file, appends what was logged since, and renames it over
    /// the log: temp file, fsync, rename, fsync of the directory, so a crash at any point
    /// leaves either the old log or the new one, whole. Returns the new log's size.
    func compact(_ snapshot: LogSnapshot) throws -> Int {
        let writer = space.syncer.writer
        let path = writer.path
        let temporary = path + ".compacting"
        let out = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw PersistenceFailure("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var keep = false
        defer {
            if !keep {
                close(out)
                unlink(temporary)
            }
        }
        // Revision order, so the compacted log reads like any other.
        let entries = snapshot.entries.sorted { $0.entry.revision < $1.entry.revision }
        var chunk = ByteBuffer()
        chunk.reserveCapacity(1 << 20)
        LogEncoding.writeHeader(version: LogRecord.formatVersion, epoch: epoch, into: &chunk)
        for (entry, deadline) in entries {
            entry.withKey { key in
                entry.withValue { value in
                    LogEncoding.writeSet(key: key, value: value, revision: entry.revision, deadlineUnixMilliseconds: deadline, into: &chunk)
                }
            }
            if chunk.readableBytes >= 1 << 20 {
                try LogWriter.writeAll(chunk, to: out, path: temporary)
                chunk.clear()
            }
        }
        LogEncoding.writeRevision(snapshot.revision, into: &chunk)
        try LogWriter.writeAll(chunk, to: out, path: temporary)

        // Catch up with what was logged meanwhile, without holding anyone up: the old log is
        // only ever appended to, and what `written` counts is in it. Measured: copying it all
        // under the locks (megabytes after a second of heavy writes) stalled writes for 150 ms.
        var copied = snapshot.logOffset
        let source = open(path, O_RDONLY | O_CLOEXEC)
        guard source >= 0 else { throw PersistenceFailure("cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(source) }
        for _ in 0..<8 {
            let end = writer.written.load(ordering: .acquiring)
            if end - copied < 256 << 10 { break }
            try Self.copy(from: source, range: copied..<end, to: out, path: path)
            copied = end
        }
        guard fdatasync(out) == 0 else { throw PersistenceFailure("cannot sync \(temporary): \(String(cString: strerror(errno)))") }

        // The switch: bring the old log up to date, copy the little it gained since, and rename.
        // Appends go on into the buffer meanwhile; only commits wait for these locks.
        let newSize = try space.switching { syncer in
            try syncer.switching { writer in
                try writer.replaceFile(with: out) { oldEnd, oldFile in
                    try Self.copy(from: oldFile, range: copied..<oldEnd, to: out, path: path)
                    guard fdatasync(out) == 0 else { throw PersistenceFailure("cannot sync \(temporary): \(String(cString: strerror(errno)))") }
                    guard flock(out, LOCK_EX | LOCK_NB) == 0 else { throw PersistenceFailure("cannot lock \(temporary)") }
                    guard rename(temporary, path) == 0 else { throw PersistenceFailure("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
                    keep = true
                    // Until the directory is synced, a crash may bring the old log back, without
                    // the writes acknowledged into the new one from now on: the live log's failure.
                    guard Self.syncDirectory(of: path) else {
                        throw writer.failure.fail("cannot sync the directory of \(path) after switching to the compacted log")
                    }
                    return Int(lseek(out, 0, SEEK_END))
                }
            }
        }
        sizeAfterLast.store(newSize, ordering: .relaxed)
        return newSize
    }

    private static func copy(from source: Int32, range: Range<Int>, to destination: Int32, path: String) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let n = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, min($0.count, range.upperBound - offset), off_t(offset)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PersistenceFailure("cannot read \(path) at \(offset): \(String(cString: strerror(errno)))") }
            do {
                try buffer.withUnsafeBytes { try LogWriter.writeAll(UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: destination, path: path) }
            } catch {
                throw PersistenceFailure("cannot write the compacted log: \(error)")
            }
            offset += n
        }
    }

    private static func monotonicMilliseconds() -> Int { Int(SystemClock().monotonicNanoseconds() / 1_000_000) }

    private static func syncDirectory(of path: String) -> Bool {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { return false }
        defer { close(dirFD) }
        return fsync(dirFD) == 0
    }
}
