import Atomics
import KVCore
import KVSystem
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
/// whatever is left once a second, so expiries and idle periods reach the disk too, prepares
/// zero-filled space ahead of the log (`LogSpace`, for `always`), and starts compactions
/// (`LogCompactor`) when they are due.
///
/// The work is done by layers, one lock each, taken in one order by construction (see
/// LogWriter.swift): space → sync → file → buffer.
///
/// A log that cannot be written is fatal: acknowledging writes that cannot be made durable
/// would break the promise the log exists for. So the first failure of a write or a sync of
/// the live log puts it in a failed state (`LogFailure`), where every commit refuses (nothing
/// more is acknowledged), and calls `onFailure`: the daemon decides what then (kv-stored
/// exits; systemd restarts it, and recovery brings back everything that was acknowledged).
/// Failures of a compaction's own temporary file only end that compaction.
public final class AppendLog: ChangeRecorder, @unchecked Sendable {
    public let path: String
    public let policy: FsyncPolicy
    public let epoch: String
    private let failure: LogFailure
    /// The outermost layer; the others are reached through it.
    private let space: LogSpace
    private var syncer: LogSyncer { space.syncer }
    private var writer: LogWriter { space.syncer.writer }
    private var buffer: LogBuffer { space.syncer.writer.buffer }
    private let compactor: LogCompactor

    private let flusher: NIOLockedValueBox<Bool> = NIOLockedValueBox(false)
    private var flushThread: WorkerThread?

    public var compaction: CompactionPolicy { compactor.policy }
    /// Where a compaction gets the live keyspace; set by the owner (it takes the keyspace lock).
    public var snapshotSource: (@Sendable () -> LogSnapshot)?

    /// Opens (creating if needed) the log at `path`, whose first `validBytes` bytes hold whole
    /// records; anything after them (a torn tail) is cut off. A new log gets its header.
    /// `onFailure` is called once, at the first failure of the live log.
    public init(path: String, validBytes: Int, epoch: String, policy: FsyncPolicy, logger: Logger,
                compaction: CompactionPolicy = CompactionPolicy(), io: LogFileIO = LogFileIO(),
                onFailure: @escaping @Sendable (String) -> Void) throws {
        self.path = path
        self.policy = policy
        self.epoch = epoch
        failure = LogFailure(logger: logger, onFailure: onFailure)
        let buffer = LogBuffer(appended: validBytes)
        let writer = try LogWriter(path: path, validBytes: validBytes, buffer: buffer, failure: failure, io: io)
        space = LogSpace(syncer: LogSyncer(writer: writer), logger: logger)
        compactor = LogCompactor(policy: compaction, fsyncPolicy: policy, space: space, epoch: epoch, logger: logger, size: validBytes)
        if validBytes == 0 {
            buffer.append { LogEncoding.writeHeader(version: LogRecord.formatVersion, epoch: epoch, into: &$0) }
            try commit(sync: true)
        }
    }

    // MARK: - Appending (under the keyspace lock)

    public func record(_ kind: ChangeKind, entry: Entry, revision: UInt64, deadlineUnixMilliseconds: Int64?) {
        buffer.append { pending in
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
        }
    }

    public func recordPersist(key: UnsafeRawBufferPointer) {
        buffer.append { LogEncoding.writePersist(key: key, into: &$0) }
    }

    // MARK: - Committing

    /// Writes every record appended so far to the file, and with `always` (or `sync`) forces
    /// it to disk. Returns once that is done; cheap when another caller already did it.
    public func commit(sync: Bool = false) throws {
        if failure.hasFailed {
            throw PersistenceFailure("the log \(path) failed earlier (\(failure.message ?? "?")); no write is acknowledged after that")
        }
        let mustSync = sync || policy == .always
        let target = buffer.appendedBytes
        if writer.synced.load(ordering: .acquiring) >= target || (!mustSync && writer.written.load(ordering: .acquiring) >= target) { return }
        if mustSync {
            try syncer.sync(upTo: target)
        } else {
            try writer.writePending()
        }
    }

    /// `commit`, or the failure of the log: called where a failure cannot be answered any other way.
    public func commitOrDie(sync: Bool = false) {
        do {
            try commit(sync: sync)
        } catch {
            _ = failure.fail("\(error)")
        }
    }

    /// Whether the log has failed (it refuses every commit since).
    public var hasFailed: Bool { failure.hasFailed }

    // MARK: - Background flushing

    /// Starts the thread that commits once a second (syncing unless the policy is `no`).
    public func startBackgroundFlush() {
        // A plain thread: the work blocks in write and fsync and must not hold an event loop.
        flushThread = WorkerThread.start { [self] in flushLoop() }
    }

    private func flushLoop() {
        while !flusher.withLockedValue({ $0 }) {
            usleep(100_000)
            let now = Int(time(nil))
            // Writes every 100 ms; syncs once a second (everysec), or whatever `always` left.
            commitOrDie(sync: policy != .no && now != syncer.lastSyncUnixSeconds.load(ordering: .relaxed))
            // Only `always` waits for fsyncs; for the others zero-filling would only double
            // the bytes written (measured: everysec -P 16 lost 8% with it).
            if policy == .always { space.prepare() }
            if compactor.isDue(size: writer.written.load(ordering: .relaxed)) { _ = startCompaction() }
        }
    }

    /// Zero-fills space ahead of the log now (the background thread does it for `always`).
    func prepareSpace() { space.prepare() }

    /// Stops the background thread and forces everything to disk (shutdown).
    public func stop() {
        while compactor.isRunning { usleep(10_000) }  // a compaction in flight finishes first
        flusher.withLockedValue { $0 = true }
        flushThread?.join()
        flushThread = nil
        commitOrDie(sync: policy != .no)
    }

    // MARK: - Compaction

    /// The log's length so far, for a snapshot taken under the keyspace lock (appends happen
    /// under that lock too, so the two agree).
    public var appendedOffset: Int { buffer.appendedBytes }

    /// Starts compacting in the background unless one is running (or no snapshot source is set).
    /// Writes keep flowing: only the final switch waits for a copy of what they appended meanwhile.
    @discardableResult
    public func startCompaction() -> Bool {
        guard let snapshotSource else { return false }
        return compactor.start(snapshotSource)
    }

    /// Compacts now, on this thread (at startup, to rewrite an old format). Returns the new size.
    public func compact(_ snapshot: LogSnapshot) throws -> Int { try compactor.compact(snapshot) }

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
        /// The last compaction's longest hold-ups of writes: a piece of the walk (on the loop
        /// that read it) and the switch.
        public var lastCompactionLongestPieceMicroseconds: Int
        public var lastCompactionSwitchMicroseconds: Int
        public var lastCompactionFailed: Bool
    }

    public var figures: Figures {
        let (appended, written, synced) = buffer.withAppended { appended in
            (appended, writer.written.load(ordering: .relaxed), writer.synced.load(ordering: .relaxed))
        }
        return Figures(sizeBytes: written, bufferedBytes: appended - written, unsyncedBytes: written - synced,
                       lastSyncUnixSeconds: syncer.lastSyncUnixSeconds.load(ordering: .relaxed),
                       sizeAfterCompaction: compactor.sizeAfterLast.load(ordering: .relaxed),
                       compacting: compactor.isRunning, compactions: compactor.count.load(ordering: .relaxed),
                       lastCompactionMilliseconds: compactor.lastMilliseconds.load(ordering: .relaxed),
                       lastCompactionLongestPieceMicroseconds: compactor.lastLongestPieceMicroseconds.load(ordering: .relaxed),
                       lastCompactionSwitchMicroseconds: compactor.lastSwitchMicroseconds.load(ordering: .relaxed),
                       lastCompactionFailed: compactor.lastFailed.load(ordering: .relaxed))
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
/// What a compaction writes: the keyspace as it stood at one instant, read a piece at a time.
public struct LogSnapshot: Sendable {
    public typealias Piece = [(entry: Entry, deadlineUnixMilliseconds: Int64?)]
    /// The revision at that instant.
    public var revision: UInt64
    /// The log's length (appended bytes) at the same instant: every record after it is a
    /// change made since, which the compacted log replays after the snapshot.
    public var logOffset: Int
    /// The next piece of the live entries written at or before `revision`, nil when all have
    /// been read. Called on the compaction's thread; each call takes the keyspace lock briefly,
    /// so writes go on between pieces. Throws when a piece cannot be read (kv-stored is
    /// stopping): a walk cut short must end the compaction, never pass for a whole snapshot.
    public var nextPiece: @Sendable () throws -> Piece?
    /// The longest any piece so far held up the loop that read it, in nanoseconds.
    public var longestPieceNanoseconds: @Sendable () -> Int64

    public init(revision: UInt64, logOffset: Int, nextPiece: @escaping @Sendable () throws -> Piece?,
                longestPieceNanoseconds: @escaping @Sendable () -> Int64 = { 0 }) {
        self.revision = revision
        self.logOffset = logOffset
        self.nextPiece = nextPiece
        self.longestPieceNanoseconds = longestPieceNanoseconds
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
