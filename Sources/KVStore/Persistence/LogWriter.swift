import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

// The live log in layers, one lock each, each owning the state its lock guards and a
// reference only to the layer below it: space (`LogSpace`) → sync (`LogSyncer`) → file
// (`LogWriter`) → buffer (`LogBuffer`). A layer calls down, never up, so the locks are always
// taken in that order; the compaction's switch, which needs them all, takes them through
// each layer's `switching`, which hands its body the layer below. `LogFailure` is beside them
// all: a leaf any layer may call.

/// Records appended under the keyspace lock, waiting to be written: the innermost lock (kept
/// short: it is taken inside the keyspace lock), which calls nothing while held.
final class LogBuffer: @unchecked Sendable {
    private let lock = NIOLock()
    private var pending = ByteBuffer()
    /// The log's length, counting what is still buffered.
    private var appended: Int

    init(appended: Int) { self.appended = appended }

    func append(_ write: (inout ByteBuffer) -> Void) {
        lock.withLock {
            let before = pending.writerIndex
            write(&pending)
            appended += pending.writerIndex - before
        }
    }

    /// Everything buffered, which leaves the buffer.
    func take() -> ByteBuffer {
        lock.withLock {
            defer { pending = ByteBuffer() }
            return pending
        }
    }

    var appendedBytes: Int { lock.withLock { appended } }

    /// Reads or changes the length under the lock: `positions` are read or set at the same
    /// instant (figures, and the switch to a compacted file).
    func withAppended<T>(_ body: (inout Int) -> T) -> T { lock.withLock { body(&appended) } }
}

/// The live log's failed state. The first failure of a write or a sync is kept, logged and
/// reported once through `onFailure` (the daemon exits: systemd restarts it and recovery
/// brings back everything acknowledged); every commit refuses from then on.
final class LogFailure: Sendable {
    private let first = NIOLockedValueBox<String?>(nil)
    /// Read by every commit and every reply flush: an atomic load rather than the lock.
    private let flag = ManagedAtomic(false)
    private let logger: Logger
    private let onFailure: @Sendable (String) -> Void

    init(logger: Logger, onFailure: @escaping @Sendable (String) -> Void) {
        self.logger = logger
        self.onFailure = onFailure
    }

    var hasFailed: Bool { flag.load(ordering: .acquiring) }
    var message: String? { first.withLockedValue { $0 } }

    /// Puts the log in its failed state and returns the error to throw. Called under the lock
    /// of the layer that failed, so no other commit gets through that layer in between.
    func fail(_ message: String) -> PersistenceFailure {
        let isFirst = first.withLockedValue { first -> Bool in
            guard first == nil else { return false }
            first = message
            return true
        }
        flag.store(true, ordering: .releasing)
        if isFirst {
            logger.critical("\(message); stopping so that no write is acknowledged without being in the log")
            onFailure(message)
        }
        return PersistenceFailure(message)
    }
}

/// The live log's file: writes what the buffer holds at the log's end, and knows how much is
/// written and synced, and how far space is zero-filled ahead.
final class LogWriter: @unchecked Sendable {
    let path: String
    let buffer: LogBuffer
    let failure: LogFailure
    /// The calls that write and sync the live log (a seam for tests that make them fail).
    let io: LogFileIO
    /// Bytes in the file, and bytes known to be on disk (set by the syncer).
    let written: ManagedAtomic<Int>
    let synced: ManagedAtomic<Int>

    private let lock = NIOLock()
    /// The file; replaced by a compacted one in `replaceFile`. Guarded by `lock`.
    private var fd: Int32
    /// Where the zero-filled space ends; writes past it append. Guarded by `lock`.
    private var preparedEnd: Int

    /// Opens (creating if needed) the log at `path`, whose first `validBytes` bytes hold whole
    /// records; anything after them (a torn tail) is cut off.
    init(path: String, validBytes: Int, buffer: LogBuffer, failure: LogFailure, io: LogFileIO) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)  // read back by compaction
        guard fd >= 0 else { throw PersistenceFailure("cannot open the log \(path): \(String(cString: strerror(errno)))") }
        // One kv-stored per data directory: a second one would interleave records.
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw PersistenceFailure("the log \(path) is locked by another process (is another kv-stored using this data directory?)")
        }
        guard ftruncate(fd, off_t(validBytes)) == 0, lseek(fd, off_t(validBytes), SEEK_SET) >= 0 else {
            close(fd)
            throw PersistenceFailure("cannot truncate the log \(path) to \(validBytes) bytes: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.path = path
        self.buffer = buffer
        self.failure = failure
        self.io = io
        preparedEnd = validBytes
        written = ManagedAtomic(validBytes)
        synced = ManagedAtomic(validBytes)
    }

    deinit { close(fd) }

    /// Hands every buffered record to the kernel; returns the log's length then, and its file.
    @discardableResult
    func writePending() throws -> (end: Int, file: Int32) {
        try lock.withLock { try writePendingLocked() }
    }

    private func writePendingLocked() throws -> (end: Int, file: Int32) {
        // A commit that waited here while another failed must not write after the lost records.
        if failure.hasFailed { throw PersistenceFailure("the log \(path) failed earlier (\(failure.message ?? "?"))") }
        let chunk = buffer.take()
        if chunk.readableBytes > 0 {
            do {
                try Self.writeAll(chunk, to: fd, at: written.load(ordering: .acquiring), path: path, io: io)
            } catch {
                // The chunk has left the buffer: the log now lacks records that were made.
                throw failure.fail("\(error)")
            }
            written.wrappingIncrement(by: chunk.readableBytes, ordering: .releasing)
        }
        return (written.load(ordering: .acquiring), fd)
    }

    // MARK: - Zero-filled space (driven by `LogSpace`)

    /// Where zero-filling would start and end to have `ahead` bytes ready past the log's end, and in which file.
    func spaceToPrepare(ahead: Int) -> (start: Int, end: Int, file: Int32) {
        lock.withLock {
            let logEnd = written.load(ordering: .acquiring)
            return (max(preparedEnd, logEnd), logEnd + ahead, fd)
        }
    }

    /// Zero-fills `range` of `file`, never over records (the log may have grown into it meanwhile).
    func zeroFill(_ range: Range<Int>, of file: Int32, zeros: ByteBuffer) throws {
        try lock.withLock {
            let from = max(range.lowerBound, written.load(ordering: .acquiring))
            if from < range.upperBound {
                var slice = zeros
                slice.moveWriterIndex(to: range.upperBound - from)
                try Self.writeAll(slice, to: file, at: from, path: path, io: io)
            }
            preparedEnd = max(preparedEnd, range.upperBound)
        }
    }

    // MARK: - The compaction's switch

    /// With the file lock held: brings the file up to date, lets `prepare` finish the
    /// compacted file `replacement` from the old one (given its length and descriptor) and
    /// put it in place (returning its size), then writes to it from now on. Offsets count
    /// from the start of the new file.
    func replaceFile(with replacement: Int32, prepare: (_ oldEnd: Int, _ oldFile: Int32) throws -> Int) throws -> Int {
        try lock.withLock {
            let oldEnd = try writePendingLocked().end
            let newSize = try prepare(oldEnd, fd)
            close(fd)
            fd = replacement
            buffer.withAppended { appended in
                appended -= oldEnd - newSize
                written.store(newSize, ordering: .releasing)
                synced.store(newSize, ordering: .releasing)
            }
            preparedEnd = newSize
            return newSize
        }
    }

    /// Writes `chunk` at `position` (the end of the log), or at the file's offset when nil.
    static func writeAll(_ chunk: ByteBuffer, to fd: Int32, at position: Int? = nil, path: String, io: LogFileIO = LogFileIO()) throws {
        try chunk.withUnsafeReadableBytes { try writeAll($0, to: fd, at: position, path: path, io: io) }
    }

    static func writeAll(_ raw: UnsafeRawBufferPointer, to fd: Int32, at position: Int? = nil, path: String, io: LogFileIO = LogFileIO()) throws {
        guard let base = raw.baseAddress else { return }
        var offset = 0
        while offset < raw.count {
            let n = if let position {
                io.write(fd, UnsafeRawBufferPointer(rebasing: raw[offset...]), off_t(position + offset))
            } else {
                write(fd, base + offset, raw.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw PersistenceFailure("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }
}
