import ArgumentParser
import KVCore
import Logging

/// The socket options every daemon has (`--socket` itself differs: its default, and whether
/// kv-fcgi may inherit one instead).
public struct SocketOptions: ParsableArguments {
    @Option(help: "File mode of the socket, in octal.")
    public var socketMode = "0660"

    @Option(help: "Group to give the socket (nginx's group, e.g. www-data), so nginx can connect without the socket being world-writable.")
    public var socketGroup: String?

    public init() {}

    public var mode: UInt32 { UInt32(socketMode, radix: 8) ?? 0o660 }

    public func validate() throws {
        guard UInt32(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be an octal file mode such as 0660")
        }
    }
}

/// `--max-key-bytes` and `--max-value-bytes`, the limits nginx and all daemons agree on.
public struct LimitOptions: ParsableArguments {
    @Option(help: "Longest key, in bytes.")
    public var maxKeyBytes = Limits.defaultMaxKeyBytes

    @Option(help: "Longest value, in bytes.")
    public var maxValueBytes = Limits.defaultMaxValueBytes

    public init() {}

    public var limits: Limits { Limits(maxKeyBytes: maxKeyBytes, maxValueBytes: maxValueBytes) }

    public func validate() throws {
        guard (1...Limits.absoluteMaxBytes).contains(maxKeyBytes), (1...Limits.absoluteMaxBytes).contains(maxValueBytes) else {
            throw ValidationError("--max-key-bytes and --max-value-bytes must be between 1 and \(Limits.absoluteMaxBytes)")
        }
    }
}

/// `--log-level`, and the one logging bootstrap: swift-log to stderr (the journal under systemd).
public struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: Logger.Level = .info

    public init() {}

    /// Bootstraps logging once for the process and returns the daemon's logger. Under systemd
    /// (stderr is the journal's) lines carry their priority, so `journalctl -p` filters them.
    public func bootstrap(label: String) -> Logger {
        let level = logLevel
        let journal = JournalLogHandler.stderrIsJournal
        LoggingSystem.bootstrap { label in
            if journal {
                var handler = JournalLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `--allowed-origins`, the browser origins kv-fcgi and kv-ws accept (docs/security.md).
public struct OriginOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Browser origins allowed besides the site itself (scheme://host[:port], comma-separated or repeated; * for any).",
        discussion: "Requests without an Origin header (curl, servers, native clients) are always allowed."))
    public var allowedOrigins: [String] = []

    public init() {}

    public var policy: OriginPolicy {
        get throws(KVError) {
            try OriginPolicy(parsing: allowedOrigins.flatMap { $0.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) } }.filter { !$0.isEmpty })
        }
    }

    public func validate() throws {
        do throws(KVError) { _ = try policy } catch { throw ValidationError("--allowed-origins: \(error.message)") }
    }
}

/// `--access-file`, read by kv-fcgi and kv-ws (docs/access.md).
public struct AccessOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The access file: tokens, JWT keys and the key prefixes each may read, write, delete and subscribe to.",
        discussion: "Without it the service is open: every client may do everything. SIGHUP reads it again."))
    public var accessFile: String?

    public init() {}

    /// The file, or nil: an empty `--access-file ""` (the units' default) means none.
    public var path: String? { accessFile.flatMap { $0.isEmpty ? nil : $0 } }
}
