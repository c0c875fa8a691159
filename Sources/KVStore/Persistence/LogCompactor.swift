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
    private let fsyncPolicy: FsyncPolicy
    private let space: LogSpace
    private let epoch: String
    private let logger: Logger

    private let running = ManagedAtomic(false)
    let sizeAfterLast: ManagedAtomic<Int>
    let count = ManagedAtomic(0)
    let lastMilliseconds = ManagedAtomic(0)
    let lastFailed = ManagedAtomic(false)
    /// The longest a piece of the last compaction's walk held up its loop, for the log and INFO.
    let lastLongestPieceMicroseconds = ManagedAtomic(0)
    /// How long the last switch held the log's locks (commits wait for them), for the log and INFO.
    let lastSwitchMicroseconds = ManagedAtomic(0)

    init(policy: CompactionPolicy, fsyncPolicy: FsyncPolicy, space: LogSpace, epoch: String, logger: Logger, size: Int) {
        self.policy = policy
        self.fsyncPolicy = fsyncPolicy
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
            // At the lowest CPU priority (SCHED_IDLE): at the event loops' priority, on a
            // machine whose cores were all busy, it took a loop's core for a scheduler slice at
            // a time (worst write 9–36 ms at 1M keys, bench/persistence.sh). It holds no lock a
            // loop waits for while it works: the walk's pieces run on the loop (CompactionWalk).
            WorkerThread.lowerCurrentToIdlePriority()
            let started = Self.monotonicMilliseconds()
            do {
                let size = try compact(snapshot())
                let ms = Self.monotonicMilliseconds() - started
                lastMilliseconds.store(ms, ordering: .relaxed)
                lastFailed.store(false, ordering: .relaxed)
                count.wrappingIncrement(ordering: .relaxed)
                logger.notice("compacted the log", metadata: [
                    "log": "\(space.syncer.writer.path)", "bytes": "\(size)", "ms": "\(ms)",
                    "longest_piece_us": "\(lastLongestPieceMicroseconds.load(ordering: .relaxed))",
                    "switch_us": "\(lastSwitchMicroseconds.load(ordering: .relaxed))",
                ])
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
        // Revision order, so the compacted log reads like any other: every entry is at or
        // before the snapshot's revision, every record copied after it is later.
        var entries: LogSnapshot.Piece = []
        while let piece = try snapshot.nextPiece() { entries.append(contentsOf: piece) }
        lastLongestPieceMicroseconds.store(Int(snapshot.longestPieceNanoseconds() / 1_000), ordering: .relaxed)
        entries.sort { $0.entry.revision < $1.entry.revision }
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
        //
        // With `always`, every acknowledged write must survive a crash of the machine: the copy
        // is synced before the rename, and the directory after it, before any commit goes on.
        // With `everysec` and `no`, both syncs come after the switch, outside the locks: they
        // are what held writes up for milliseconds (two journal commits), and those policies
        // may lose the last moments in a crash of the machine anyway. The old log stays whole
        // until the rename is on disk, so a crash still finds one log or the other.
        let syncInside = fsyncPolicy == .always
        // The syncs after the switch go through a duplicate of the file's descriptor: once
        // switched, `out` is the live log's, which a stop may close (and the number be reused).
        let syncHandle = dup(out)
        guard syncHandle >= 0 else { throw PersistenceFailure("cannot duplicate the descriptor of \(temporary): \(String(cString: strerror(errno)))") }
        defer { close(syncHandle) }
        let switchStarted = SystemClock().monotonicNanoseconds()
        let newSize = try space.switching { syncer in
            try syncer.switching { writer in
                try writer.replaceFile(with: out) { oldEnd, oldFile in
                    try Self.copy(from: oldFile, range: copied..<oldEnd, to: out, path: path)
                    if syncInside {
                        guard fdatasync(out) == 0 else { throw PersistenceFailure("cannot sync \(temporary): \(String(cString: strerror(errno)))") }
                    }
                    guard flock(out, LOCK_EX | LOCK_NB) == 0 else { throw PersistenceFailure("cannot lock \(temporary)") }
                    guard rename(temporary, path) == 0 else { throw PersistenceFailure("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
                    keep = true
                    if syncInside { try Self.syncDirectory(of: path, writer: writer) }
                    return Int(lseek(out, 0, SEEK_END))
                }
            }
        }
        lastSwitchMicroseconds.store(Int((SystemClock().monotonicNanoseconds() - switchStarted) / 1_000), ordering: .relaxed)
        if !syncInside {
            let writer = space.syncer.writer
            guard fdatasync(syncHandle) == 0 else {
                throw writer.failure.fail("cannot sync the compacted log \(path): \(String(cString: strerror(errno)))")
            }
            try Self.syncDirectory(of: path, writer: writer)
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

    /// Until the directory is synced, a crash may bring the old log back, without the writes
    /// acknowledged into the new one since the switch: a failure here is the live log's.
    private static func syncDirectory(of path: String, writer: LogWriter) throws {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let synced = dirFD >= 0 && fsync(dirFD) == 0
        if dirFD >= 0 { close(dirFD) }
        guard synced else { throw writer.failure.fail("cannot sync the directory of \(path) after switching to the compacted log") }
    }
}
