import Atomics
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Receives every change of a keyspace, in order, under the keyspace's lock.
public protocol ChangeRecorder: AnyObject, Sendable {
    func record(_ kind: ChangeKind, entry: Entry, revision: UInt64, deadlineUnixMilliseconds: Int64?)
    func recordPersist(key: UnsafeRawBufferPointer)
}

/// When the log is forced to disk (Redis's `appendfsync`).
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Before every reply to a write: an acknowledged write survives any crash.
    case always
    /// Once a second, in the background: a crash of the machine may lose the last second;
    /// a crash of kv-stored alone loses nothing acknowledged (the data is in the kernel).
    case everysec
    /// Never explicitly: the kernel writes when it likes (typically within 30 s).
    case no
}

/// kv-stored's append-only log file.
///
/// Records are appended to a memory buffer under the keyspace lock (`ChangeRecorder`), in
/// revision order. `commit()` writes that buffer to the file — and with `always` fsyncs it —
/// before a connection sends the replies of its writes; one commit serves every write buffered
/// so far (group commit). A background thread writes and (for `always` and `everysec`) syncs
/// whatever is left once a second, so expiries and idle periods reach the disk too.
///
/// With `appendfsync always`, the file grows into space zero-filled ahead of it
/// (`prepareSpace`, on the background thread): an fsync after writing into allocated, already-written blocks flushes the data
/// alone, with no file-size change for the filesystem journal to commit. Measured on this
/// machine's ext4, write + fdatasync of 2.6 KB took 97 µs that way against 170 µs appending
/// past the end, and under `appendfsync always` every acknowledged write waits for one.
/// PostgreSQL zero-fills its WAL segments for the same reason. The zeros past the last
/// record are not part of the log (`LogReader`).
///
/// A log that cannot be written is fatal: acknowledging writes that cannot be made durable
/// would break the promise the log exists for. Nor is a failed fsync ever retried: Linux may
/// mark the pages that failed to reach the disk clean, so a later fsync "succeeds" over lost
/// data (PostgreSQL's and Redis's reason to stop there too). So the first failure of a write
/// or a sync of the live log puts it in a failed state, where every commit refuses (nothing
/// more is acknowledged), and calls `onFailure`, which exits the process: systemd restarts it,
/// and recovery brings back everything that was acknowledged. Failures of a compaction's own
/// temporary file only end that compaction.
public final class AppendLog: ChangeRecorder, @unchecked Sendable {
    public let path: String
    public let policy: FsyncPolicy
    public let epoch: String
    /// The file; replaced by a compacted one under `fileLock`.
    private var fd: Int32
    private let logger: Logger

    /// Guards `pending` and `appendedBytes` (taken inside the keyspace lock: keep it short).
    private let bufferLock = NIOLock()
    private var pending = ByteBuffer()
    private var appendedBytes: Int
    /// Serialises writes (taken without the keyspace lock).
    private let fileLock = NIOLock()
    /// Serialises syncs, and keeps the file from being switched (compaction) under a sync.
    /// Order: `spaceLock`, then `syncLock`, then `fileLock`, then `bufferLock`.
    private let syncLock = NIOLock()
    /// Held while space is zero-filled ahead of the log (the file cannot be switched meanwhile).
    private let spaceLock = NIOLock()
    /// Where the zero-filled space ends (guarded by `fileLock`); writes past it append.
    private var preparedEnd: Int
    private let written: ManagedAtomic<Int>
    private let synced: ManagedAtomic<Int>
    private let lastSyncUnixSeconds = ManagedAtomic<Int>(0)
    private let flusher: NIOLockedValueBox<Bool> = NIOLockedValueBox(false)
    private var flushThread: pthread_t?
    /// The first failure of the live log, once there has been one: every commit refuses after it.
    private let failure = NIOLockedValueBox<String?>(nil)
    /// Whether `failure` is set: read by every commit and every reply flush, so an atomic load
    /// rather than the lock.
    private let failed = ManagedAtomic(false)
    /// Called once, at the first failure (the process exits by default).
    private let onFailure: @Sendable (String) -> Void
    /// The calls that write and sync the live log (a seam for tests that make them fail).
    let io: LogFileIO

    // Compaction state.
    public let compaction: CompactionPolicy
    /// Where a compaction gets the live keyspace; set by the owner (it takes the keyspace lock).
    public var snapshotSource: (@Sendable () -> LogSnapshot)?
    private let compacting = ManagedAtomic(false)
    private let sizeAfterCompaction: ManagedAtomic<Int>
    private let compactions = ManagedAtomic(0)
    private let lastCompactionMilliseconds = ManagedAtomic(0)
    private let lastCompactionFailed = ManagedAtomic(false)

    /// Opens (creating if needed) the log at `path`, whose first `validBytes` bytes hold whole
    /// records; anything after them (a torn tail) is cut off. A new log gets its header.
    public init(path: String, validBytes: Int, epoch: String, policy: FsyncPolicy, logger: Logger,
                compaction: CompactionPolicy = CompactionPolicy(), io: LogFileIO = LogFileIO(),
                onFailure: @escaping @Sendable (String) -> Void = { _ in exit(1) }) throws {
        self.io = io
        self.onFailure = onFailure
        self.path = path
        self.policy = policy
        self.epoch = epoch
        self.logger = logger
        self.compaction = compaction
        self.sizeAfterCompaction = ManagedAtomic(validBytes)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)  // read back by compaction
        guard fd >= 0 else { throw PersistenceFailure("cannot open the log \(path): \(String(cString: strerror(errno)))") }
        // One kv-stored per data directory: a second one would interleave records.
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            throw PersistenceFailure("the log \(path) is locked by another process (is another kv-stored using this data directory?)")
        }
        guard ftruncate(fd, off_t(validBytes)) == 0, lseek(fd, off_t(validBytes), SEEK_SET) >= 0 else {
            Glibc.close(fd)
            throw PersistenceFailure("cannot truncate the log \(path) to \(validBytes) bytes: \(String(cString: strerror(errno)))")
        }
        appendedBytes = validBytes
        preparedEnd = validBytes
        written = ManagedAtomic(validBytes)
        synced = ManagedAtomic(validBytes)
        if validBytes == 0 {
            LogEncoding.writeHeader(version: LogRecord.formatVersion, epoch: epoch, into: &pending)
            appendedBytes = pending.readableBytes
            try commit(sync: true)
        }
    }

    deinit { Glibc.close(fd) }

    // MARK: - Appending (under the keyspace lock)

    public func record(_ kind: ChangeKind, entry: Entry, revision: UInt64, deadlineUnixMilliseconds: Int64?) {
        bufferLock.withLock {
            let before = pending.writerIndex
            entry.withKey { key in
                switch kind {
                case .set:
                    entry.withValue { value in
                        LogEncoding.writeSet(key: key, value: value, revision: revision, deadlineUnixMilliseconds: deadlineUnixMilliseconds, into: &pending)
                    }
                case .deleted: LogEncoding.writeRemoval("DEL", key: key, revision: revision, into: &pending)
                case .expired: LogEncoding.writeRemoval("EXPIRED", key: key, revision: revision, into: &pending)
                }
            }
            appendedBytes += pending.writerIndex - before
        }
    }

    public func recordPersist(key: UnsafeRawBufferPointer) {
        bufferLock.withLock {
            let before = pending.writerIndex
            LogEncoding.writePersist(key: key, into: &pending)
            appendedBytes += pending.writerIndex - before
        }
    }

    // MARK: - Committing

    /// Writes every record appended so far to the file, and with `always` (or `sync`) forces
    /// it to disk. Returns once that is done; cheap when another caller already did it.
    public func commit(sync: Bool = false) throws {
        if failed.load(ordering: .acquiring) {
            let earlier = failure.withLockedValue { $0 } ?? "?"
            throw PersistenceFailure("the log \(path) failed earlier (\(earlier)); no write is acknowledged after that")
        }
        let mustSync = sync || policy == .always
        let target = bufferLock.withLock { appendedBytes }
        if synced.load(ordering: .acquiring) >= target || (!mustSync && written.load(ordering: .acquiring) >= target) { return }
        guard mustSync else {
            try writePending()
            return
        }
        // fsync under its own lock, not the file lock: a sync (milliseconds on a real disk) must
        // not hold up the writes of other connections (everysec's background sync, notably).
        try syncLock.withLock {
            guard synced.load(ordering: .acquiring) < target else { return }  // another caller's sync covered us
            let (end, file) = try writePending()
            guard io.sync(file) == 0 else { throw fail("cannot sync the log \(path): \(String(cString: strerror(errno)))") }
            synced.store(end, ordering: .releasing)
            lastSyncUnixSeconds.store(Int(time(nil)), ordering: .relaxed)
        }
    }

    /// Hands every buffered record to the kernel; returns the log's length then, and its file.
    @discardableResult
    private func writePending() throws -> (end: Int, file: Int32) {
        try fileLock.withLock { try writePendingHoldingFileLock() }
    }

    private func writePendingHoldingFileLock() throws -> (end: Int, file: Int32) {
        let chunk = bufferLock.withLock { () -> ByteBuffer in
            let chunk = pending
            pending = ByteBuffer()
            return chunk
        }
        if chunk.readableBytes > 0 {
            do {
                try Self.writeAll(chunk, to: fd, at: written.load(ordering: .acquiring), path: path, io: io)
            } catch {
                // The chunk has left the buffer: the log now lacks records that were made.
                throw fail("\(error)")
            }
            written.wrappingIncrement(by: chunk.readableBytes, ordering: .releasing)
        }
        return (written.load(ordering: .acquiring), fd)
    }

    /// `commit`, or the failure of the log: called where a failure cannot be answered any other way.
    public func commitOrDie(sync: Bool = false) {
        do {
            try commit(sync: sync)
        } catch {
            _ = fail("\(error)")
        }
    }

    /// Puts the log in its failed state (the first failure is kept and reported once) and
    /// returns the error to throw.
    private func fail(_ message: String) -> PersistenceFailure {
        let first = failure.withLockedValue { failure -> Bool in
            guard failure == nil else { return false }
            failure = message
            return true
        }
        failed.store(true, ordering: .releasing)
        if first {
            logger.critical("\(message); stopping so that no write is acknowledged without being in the log")
            onFailure(message)
        }
        return PersistenceFailure(message)
    }

    /// Whether the log has failed (it refuses every commit since).
    public var hasFailed: Bool { failed.load(ordering: .acquiring) }

    /// Writes `chunk` at `position` (the end of the log), or at the file's offset when nil.
    private static func writeAll(_ chunk: ByteBuffer, to fd: Int32, at position: Int? = nil, path: String, io: LogFileIO = LogFileIO()) throws {
        try chunk.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = if let position {
                    io.write(fd, UnsafeRawBufferPointer(rebasing: raw[offset...]), off_t(position + offset))
                } else {
                    write(fd, raw.baseAddress! + offset, raw.count - offset)
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PersistenceFailure("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }

    // MARK: - Background flushing

    /// Starts the thread that commits once a second (syncing unless the policy is `no`).
    public func startBackgroundFlush() {
        flushThread = Self.spawn { [self] in flushLoop() }
    }

    /// A plain thread (the work blocks in write and fsync; it must not hold an event loop).
    @discardableResult
    private static func spawn(_ body: @escaping () -> Void) -> pthread_t? {
        final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
        let box = Unmanaged.passRetained(Box(body))
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        guard result == 0 else {
            box.release()
            return nil
        }
        return thread
    }

    private func flushLoop() {
        while !flusher.withLockedValue({ $0 }) {
            usleep(100_000)
            let now = Int(time(nil))
            // Writes every 100 ms; syncs once a second (everysec), or whatever `always` left.
            commitOrDie(sync: policy != .no && now != lastSyncUnixSeconds.load(ordering: .relaxed))
            // Only `always` waits for fsyncs; for the others zero-filling would only double
            // the bytes written (measured: everysec -P 16 lost 8% with it).
            if policy == .always { prepareSpace() }
            if compaction.isDue(size: written.load(ordering: .relaxed), sizeAfterLast: sizeAfterCompaction.load(ordering: .relaxed)) {
                _ = startCompaction()
            }
        }
    }

    // MARK: - Zero-filled space ahead of the log

    /// How far ahead of the log's end space is zero-filled, and in what steps (each written
    /// under the file lock, which commits wait for: small enough to cost them little).
    static let spaceAhead = 16 << 20
    static let spaceStep = 1 << 20

    /// With `appendfsync always`: zero-fills the next `spaceAhead` bytes once less than half of that is left, then syncs
    /// them, so the blocks are allocated and written before the log reaches them. A log that
    /// outruns this (sustained writes over ~80 MB/s) appends past the end meanwhile: correct,
    /// only its fsyncs cost more.
    func prepareSpace() {
        spaceLock.withLock {
            let (start, end, file) = fileLock.withLock { () -> (Int, Int, Int32) in
                let logEnd = written.load(ordering: .acquiring)
                let from = max(preparedEnd, logEnd)
                return (from, logEnd + Self.spaceAhead, fd)
            }
            guard end - start >= Self.spaceAhead / 2 else { return }
            let zeros = ByteBuffer(repeating: 0, count: Self.spaceStep)
            var step = start
            do {
                while step < end {
                    try fileLock.withLock {
                        // Never over records: the log may have grown into this step meanwhile.
                        let from = max(step, written.load(ordering: .acquiring))
                        let to = min(end, step + Self.spaceStep)
                        if from < to {
                            var slice = zeros
                            slice.moveWriterIndex(to: to - from)
                            try Self.writeAll(slice, to: file, at: from, path: path, io: io)
                        }
                        preparedEnd = max(preparedEnd, to)
                    }
                    step += Self.spaceStep
                }
            } catch {
                // Not fatal: no record was written, and the log appends past the end instead.
                logger.warning("cannot zero-fill space ahead of the log", metadata: ["log": "\(path)", "error": "\(error)"])
                return
            }
            // This sync covers the log's own pages too: if it fails, records may be lost
            // although a later sync would say all is well. Never carried on from.
            if io.sync(file) != 0 { _ = fail("cannot sync the log \(path): \(String(cString: strerror(errno)))") }
        }
    }

    /// Stops the background thread and forces everything to disk (shutdown).
    public func stop() {
        while compacting.load(ordering: .acquiring) { usleep(10_000) }  // a compaction in flight finishes first
        flusher.withLockedValue { $0 = true }
        if let flushThread { pthread_join(flushThread, nil) }
        flushThread = nil
        commitOrDie(sync: policy != .no)
    }

    // MARK: - Compaction

    /// The log's length so far, for a snapshot taken under the keyspace lock (appends happen
    /// under that lock too, so the two agree).
    public var appendedOffset: Int { bufferLock.withLock { appendedBytes } }

    /// Starts compacting in the background unless one is running (or no snapshot source is set).
    /// Writes keep flowing: only the final switch waits for a copy of what they appended meanwhile.
    @discardableResult
    public func startCompaction() -> Bool {
        guard let snapshotSource, compacting.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        Self.spawn { [self] in
            let started = Self.monotonicMilliseconds()
            do {
                let size = try compact(snapshotSource())
                let ms = Self.monotonicMilliseconds() - started
                lastCompactionMilliseconds.store(ms, ordering: .relaxed)
                lastCompactionFailed.store(false, ordering: .relaxed)
                compactions.wrappingIncrement(ordering: .relaxed)
                logger.notice("compacted the log", metadata: ["log": "\(path)", "bytes": "\(size)", "ms": "\(ms)"])
            } catch {
                lastCompactionFailed.store(true, ordering: .relaxed)
                logger.error("log compaction failed; the current log stays in use", metadata: ["error": "\(error)"])
            }
            compacting.store(false, ordering: .releasing)
        }
        return true
    }

    /// Writes `snapshot` to a temporary file, appends what was logged since, and renames it over
    /// the log: temp file, fsync, rename, fsync of the directory, so a crash at any point
    /// leaves either the old log or the new one, whole. Returns the new log's size.
    func compact(_ snapshot: LogSnapshot) throws -> Int {
        let temporary = path + ".compacting"
        let out = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw PersistenceFailure("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var keep = false
        defer {
            if !keep {
                Glibc.close(out)
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
                try Self.writeAll(chunk, to: out, path: temporary)
                chunk.clear()
            }
        }
        LogEncoding.writeRevision(snapshot.revision, into: &chunk)
        try Self.writeAll(chunk, to: out, path: temporary)

        // Catch up with what was logged meanwhile, without holding anyone up: the old log is
        // only ever appended to, and what `written` counts is in it. Measured: copying it all
        // under the locks (megabytes after a second of heavy writes) stalled writes for 150 ms.
        var copied = snapshot.logOffset
        for _ in 0..<8 {
            let end = written.load(ordering: .acquiring)
            if end - copied < 256 << 10 { break }
            try Self.copy(from: fd, range: copied..<end, to: out, path: path)
            copied = end
        }
        guard fdatasync(out) == 0 else { throw PersistenceFailure("cannot sync \(temporary): \(String(cString: strerror(errno)))") }

        // The switch: bring the old log up to date, copy the little it gained since, and rename.
        // Appends go on into the buffer meanwhile; only commits wait for these locks.
        return try spaceLock.withLock { try syncLock.withLock { try fileLock.withLock {
            // A failure here is the live log's (`fail`), not the compaction's.
            let oldEnd = try writePendingHoldingFileLock().end
            try Self.copy(from: fd, range: copied..<oldEnd, to: out, path: path)
            guard fdatasync(out) == 0 else { throw PersistenceFailure("cannot sync \(temporary): \(String(cString: strerror(errno)))") }
            guard flock(out, LOCK_EX | LOCK_NB) == 0 else { throw PersistenceFailure("cannot lock \(temporary)") }
            guard rename(temporary, path) == 0 else { throw PersistenceFailure("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
            keep = true
            // Until the directory is synced, a crash may bring the old log back, without the
            // writes acknowledged into the new one from now on.
            guard Self.syncDirectory(of: path) else { throw fail("cannot sync the directory of \(path) after switching to the compacted log") }
            let newSize = Int(lseek(out, 0, SEEK_END))
            Glibc.close(fd)
            fd = out
            // Offsets count from the start of the new file from now on.
            bufferLock.withLock {
                appendedBytes -= oldEnd - newSize
                written.store(newSize, ordering: .releasing)
                synced.store(newSize, ordering: .releasing)
            }
            preparedEnd = newSize
            sizeAfterCompaction.store(newSize, ordering: .relaxed)
            return newSize
        } } }
    }

    private static func copy(from source: Int32, range: Range<Int>, to destination: Int32, path: String) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let n = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, min($0.count, range.upperBound - offset), off_t(offset)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PersistenceFailure("cannot read \(path) at \(offset): \(String(cString: strerror(errno)))") }
            try buffer.withUnsafeBytes { raw in
                var done = 0
                while done < n {
                    let w = write(destination, raw.baseAddress! + done, n - done)
                    if w < 0 && errno == EINTR { continue }
                    guard w > 0 else { throw PersistenceFailure("cannot write the compacted log: \(String(cString: strerror(errno)))") }
                    done += w
                }
            }
            offset += n
        }
    }

    private static func syncDirectory(of path: String) -> Bool {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { return false }
        defer { Glibc.close(dirFD) }
        return fsync(dirFD) == 0
    }

    static func monotonicMilliseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }

    // MARK: - Figures for INFO

    public struct Figures: Sendable {
        public var sizeBytes: Int
        public var bufferedBytes: Int
        public var unsyncedBytes: Int
        public var lastSyncUnixSeconds: Int
        public var sizeAfterCompaction: Int
        public var compacting: Bool
        public var compactions: Int
        public var lastCompactionMilliseconds: Int
        public var lastCompactionFailed: Bool
    }

    public var figures: Figures {
        let (appended, written, synced) = bufferLock.withLock {
            (appendedBytes, self.written.load(ordering: .relaxed), self.synced.load(ordering: .relaxed))
        }
        return Figures(sizeBytes: written, bufferedBytes: appended - written, unsyncedBytes: written - synced,
                       lastSyncUnixSeconds: lastSyncUnixSeconds.load(ordering: .relaxed),
                       sizeAfterCompaction: sizeAfterCompaction.load(ordering: .relaxed),
                       compacting: compacting.load(ordering: .relaxed), compactions: compactions.load(ordering: .relaxed),
                       lastCompactionMilliseconds: lastCompactionMilliseconds.load(ordering: .relaxed),
                       lastCompactionFailed: lastCompactionFailed.load(ordering: .relaxed))
    }
}

/// When the log is compacted: once it has grown to `factor` times its size after the last
/// compaction (its size at start, at first), and is at least `minBytes` (Redis's
/// `auto-aof-rewrite-percentage` and `auto-aof-rewrite-min-size`).
public struct CompactionPolicy: Sendable {
    public var factor: Double = 2
    public var minBytes = 64 << 20

    public init(factor: Double = 2, minBytes: Int = 64 << 20) {
        self.factor = factor
        self.minBytes = minBytes
    }

    /// A factor of 0 turns automatic compaction off.
    func isDue(size: Int, sizeAfterLast: Int) -> Bool {
        factor > 0 && size >= minBytes && Double(size) >= factor * Double(max(sizeAfterLast, 1))
    }
}

/// The live keyspace at one instant, and where the log stood then.
public struct LogSnapshot: @unchecked Sendable {
    public var entries: [(entry: Entry, deadlineUnixMilliseconds: Int64?)]
    public var revision: UInt64
    /// The log's length (appended bytes) at the instant of the snapshot: every record after it
    /// is a change the snapshot does not hold.
    public var logOffset: Int

    public init(entries: [(entry: Entry, deadlineUnixMilliseconds: Int64?)], revision: UInt64, logOffset: Int) {
        self.entries = entries
        self.revision = revision
        self.logOffset = logOffset
    }
}

public struct PersistenceFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The calls that write and sync the live log: the system's, or a test's that fails on demand.
public struct LogFileIO: Sendable {
    public var write: @Sendable (Int32, UnsafeRawBufferPointer, off_t) -> Int
    public var sync: @Sendable (Int32) -> Int32

    public init(
        write: @escaping @Sendable (Int32, UnsafeRawBufferPointer, off_t) -> Int = { fd, bytes, offset in pwrite(fd, bytes.baseAddress, bytes.count, offset) },
        sync: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) }
    ) {
        self.write = write
        self.sync = sync
    }
}
