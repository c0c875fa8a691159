import Atomics
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Forces the live log to disk, one sync at a time, under its own lock rather than the file's:
/// a sync (milliseconds on a real disk) must not hold up the writes of other connections
/// (everysec's background sync, notably). The file cannot be switched under a sync.
///
/// A failed fsync is never retried: Linux may mark the pages that failed to reach the disk
/// clean, so a later fsync "succeeds" over lost data (PostgreSQL's and Redis's reason to stop
/// there too). It is the log's failure (`LogFailure`).
final class LogSyncer: @unchecked Sendable {
    let writer: LogWriter
    let lastSyncUnixSeconds = ManagedAtomic<Int>(0)
    private let lock = NIOLock()

    init(writer: LogWriter) { self.writer = writer }

    /// Writes and syncs the log up to at least `target` bytes; cheap when another caller's
    /// sync already covered them.
    func sync(upTo target: Int) throws {
        try lock.withLock {
            guard writer.synced.load(ordering: .acquiring) < target else { return }
            let (end, file) = try writer.writePending()
            guard writer.io.sync(file) == 0 else {
                throw writer.failure.fail("cannot sync the log \(writer.path): \(String(cString: strerror(errno)))")
            }
            writer.synced.store(end, ordering: .releasing)
            lastSyncUnixSeconds.store(Int(time(nil)), ordering: .relaxed)
        }
    }

    /// With the sync lock held (no sync runs meanwhile): `body` gets the file layer.
    func switching<T>(_ body: (LogWriter) throws -> T) rethrows -> T {
        try lock.withLock { try body(writer) }
    }
}
