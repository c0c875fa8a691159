import KVSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Log lines for the systemd journal: each starts with its syslog priority (`<3>` error …
/// `<7>` debug), which journald reads off stderr (`SyslogLevelPrefix=`, on by default) and
/// strips, so `journalctl -p warning -u kv-stored` shows warnings and worse. Without the
/// prefix every line is stored at info. No timestamp: the journal keeps its own.
///
/// swift-log's StreamLogHandler has no way to put anything before its timestamp, hence this.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String) {
        self.label = label
    }

    /// Whether stderr is the journal's: systemd sets `JOURNAL_STREAM` for a unit whose output
    /// goes there (a process started by hand under it inherits a different stderr).
    public static var stderrIsJournal: Bool {
        guard let stream = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: stream).split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The syslog priority of a level (RFC 5424): what journalctl -p filters on.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// One line: `<priority>label: key=value … [source] message`.
    public static func line(label: String, level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata, source: String) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        // One record per line: a newline inside a message would start an unprefixed record.
        let text = "\(message)".replacingNewlines
        return "<\(priority(level))>\(label):\(fields.isEmpty ? "" : " " + fields.replacingNewlines) [\(source)] \(text)\n"
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let text = Self.line(label: label, level: event.level, message: event.message, metadata: merged, source: event.source)
        StandardError.write(text)  // one write per line: lines of concurrent threads never interleave
    }
}

extension String {
    fileprivate var replacingNewlines: String {
        guard contains(where: { $0 == "\n" || $0 == "\r" }) else { return self }
        return String(map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
