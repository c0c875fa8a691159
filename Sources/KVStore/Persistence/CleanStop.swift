#if canImport(Glibc)
import Glibc
#endif

/// Whether this start continues the data exactly where kv-stored's last clean stop left it, so
/// the epoch subscribers resume with can be kept.
///
/// Revisions continue from the log's last one, but only a clean stop proves the log holds every
/// revision a client may have seen: a crash may cut its tail (changes reach subscribers before
/// they are synced), `--repair-log` cuts at the damage, and an admin may put back an older copy
/// or edit it. Then those revisions are used again for other data, and a resume from before
/// (`KVSYNC … EPOCH`) must be a reset, not taken for the same history. So at a clean stop
/// kv-stored writes `kv-stored.clean` beside the log: the epoch and the log file's identity
/// (inode, size, modification time). A start keeps that epoch only if the log is that very file,
/// untouched since, and loaded whole; the marker is removed as the start reads it, so a crash
/// leaves none.
public struct CleanStop: Equatable, Sendable {
    public var epoch: String
    var inode: UInt64
    var size: Int64
    var modifiedNanoseconds: Int64

    static func markerPath(forLog log: String) -> String { log.hasSuffix(".aof") ? String(log.dropLast(4)) + ".clean" : log + ".clean" }

    /// The marker's text: one line, `epoch inode size mtime-ns`.
    var text: String { "\(epoch) \(inode) \(size) \(modifiedNanoseconds)\n" }

    static func parse(_ text: String) -> CleanStop? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 4, !fields[0].isEmpty, fields[0].count <= 64, let inode = UInt64(fields[1]), let size = Int64(fields[2]),
              let modified = Int64(fields[3]) else { return nil }
        return CleanStop(epoch: String(fields[0]), inode: inode, size: size, modifiedNanoseconds: modified)
    }

    /// The identity of the file at `path` now, with `epoch`; nil if it cannot be read.
    static func current(log path: String, epoch: String) -> CleanStop? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return CleanStop(epoch: epoch, inode: UInt64(info.st_ino), size: Int64(info.st_size),
                         modifiedNanoseconds: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
    }

    /// Reads and removes the marker of the log at `path`; the epoch to keep if the log is the file
    /// the marker describes, untouched, else nil (a new epoch is due).
    static func take(log path: String) -> String? {
        let marker = markerPath(forLog: path)
        defer { unlink(marker) }
        guard let text = try? LogRecovery.readFile(marker), let recorded = parse(String(decoding: text, as: UTF8.self)),
              let now = current(log: path, epoch: recorded.epoch), now == recorded
        else { return nil }
        return recorded.epoch
    }

    /// Writes the marker after the log's last sync at a clean stop.
    static func record(log path: String, epoch: String) throws {
        guard let now = current(log: path, epoch: epoch) else { throw PersistenceFailure("cannot stat the log \(path)") }
        try LogRecovery.writeFile(markerPath(forLog: path), Array(now.text.utf8))
    }
}
