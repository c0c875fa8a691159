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
/// A log that cannot be written is fatal: acknowledging writes that cannot be made durable
/// would break the promise the log exists for. The process exits; systemd restarts it, and
/// recovery brings back everything that was acknowledged.
public final class AppendLog: ChangeRecorder, @unchecked Sendable {
    public let path: String
    public let policy: FsyncPolicy
    private let fd: Int32
    private let logger: Logger

    /// Guards `pending` and `appendedBytes` (taken inside the keyspace lock: keep it short).
    private let bufferLock = NIOLock()
    private var pending = ByteBuffer()
    private var appendedBytes: Int
    /// Serialises writes and syncs (taken without the keyspace lock).
    private let fileLock = NIOLock()
    private let written: ManagedAtomic<Int>
    private let synced: ManagedAtomic<Int>
    private let lastSyncUnixSeconds = ManagedAtomic<Int>(0)
    private let flusher: NIOLockedValueBox<Bool> = NIOLockedValueBox(false)
    private var flushThread: pthread_t?

    /// Opens (creating if needed) the log at `path`, whose first `validBytes` bytes hold whole
    /// records; anything after them (a torn tail) is cut off. A new log gets its header.
    public init(path: String, validBytes: Int, epoch: String, policy: FsyncPolicy, logger: Logger) throws {
        self.path = path
        self.policy = policy
        self.logger = logger
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
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
        let mustSync = sync || policy == .always
        let target = bufferLock.withLock { appendedBytes }
        if synced.load(ordering: .acquiring) >= target || (!mustSync && written.load(ordering: .acquiring) >= target) { return }
        try fileLock.withLock {
            let chunk = bufferLock.withLock { () -> ByteBuffer in
                let chunk = pending
                pending = ByteBuffer()
                return chunk
            }
            if chunk.readableBytes > 0 {
                try writeAll(chunk)
                written.wrappingIncrement(by: chunk.readableBytes, ordering: .releasing)
            }
            let end = written.load(ordering: .acquiring)
            if mustSync && synced.load(ordering: .acquiring) < end {
                guard fdatasync(fd) == 0 else { throw PersistenceFailure("cannot sync the log \(path): \(String(cString: strerror(errno)))") }
                synced.store(end, ordering: .releasing)
                lastSyncUnixSeconds.store(Int(time(nil)), ordering: .relaxed)
            }
        }
    }

    /// `commit`, or exit: called where a failure cannot be answered any other way.
    public func commitOrDie(sync: Bool = false) {
        do {
            try commit(sync: sync)
        } catch {
            logger.critical("\(error); exiting so that no write is acknowledged without being in the log")
            exit(1)
        }
    }

    private func writeAll(_ chunk: ByteBuffer) throws {
        try chunk.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PersistenceFailure("cannot write the log \(path): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }

    // MARK: - Background flushing

    /// Starts the thread that commits once a second (syncing unless the policy is `no`).
    public func startBackgroundFlush() {
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            let log = Unmanaged<AppendLog>.fromOpaque(raw!).takeRetainedValue()
            log.flushLoop()
            return nil
        }, box.toOpaque())
        if result == 0 { flushThread = thread } else { box.release() }
    }

    private func flushLoop() {
        while !flusher.withLockedValue({ $0 }) {
            usleep(100_000)
            let now = Int(time(nil))
            // Writes every 100 ms; syncs once a second (everysec), or whatever `always` left.
            commitOrDie(sync: policy != .no && now != lastSyncUnixSeconds.load(ordering: .relaxed))
        }
    }

    /// Stops the background thread and forces everything to disk (shutdown).
    public func stop() {
        flusher.withLockedValue { $0 = true }
        if let flushThread { pthread_join(flushThread, nil) }
        flushThread = nil
        commitOrDie(sync: policy != .no)
    }

    // MARK: - Figures for INFO

    public struct Figures: Sendable {
        public var sizeBytes: Int
        public var bufferedBytes: Int
        public var unsyncedBytes: Int
        public var lastSyncUnixSeconds: Int
    }

    public var figures: Figures {
        let appended = bufferLock.withLock { appendedBytes }
        let written = written.load(ordering: .relaxed), synced = synced.load(ordering: .relaxed)
        return Figures(sizeBytes: written, bufferedBytes: appended - written, unsyncedBytes: written - synced,
                       lastSyncUnixSeconds: lastSyncUnixSeconds.load(ordering: .relaxed))
    }
}

public struct PersistenceFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
