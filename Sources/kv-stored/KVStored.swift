import ArgumentParser
import KVCore
import KVDaemon
import KVMetrics
import KVStore
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// kv-stored: the storage process. Owns the data, the TTLs and the change feed, and speaks a
/// subset of RESP on a unix socket (docs/protocol.md), so `redis-cli -s PATH` works against it.
@main
struct KVStored: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-stored",
        abstract: "KvServer's storage daemon: keys, values, TTLs and change feed on a unix socket (RESP).",
        discussion: """
            kv-stored owns KvServer's data: it stores JSON values by key, expires keys at their
            deadline (active expiry) and publishes every change on a change feed. It speaks a
            subset of RESP2/RESP3 (docs/protocol.md), so redis-cli works against it:
              redis-cli -s /run/kvserver/kv-stored.sock info
            Every change is appended to <data-dir>/kv-stored.aof before it is acknowledged
            (docs/persistence.md) and the log is loaded at start; --persistence none keeps data
            in memory only.

            SIGNALS
              SIGTERM, SIGINT   stop accepting, close clients, remove the socket, exit 0.

            ENVIRONMENT
              NOTIFY_SOCKET   set by systemd (Type=notify): READY=1 is sent once the socket
                              accepts connections, STOPPING=1 at shutdown.

            FILES
              /run/kvserver/kv-stored.sock   default socket
              /var/lib/kvserver/kv-stored.aof  the append-only log (--data-dir)
              /etc/kvserver/kvserver.env     settings read by kv-stored.service

            SEE ALSO
              kv-fcgi --help, kv-ws --help, docs/deploy.md
            """,
        version: KvServerVersion.current
    )

    @Option(help: "Path of the unix socket to listen on.")
    var socket = "/run/kvserver/kv-stored.sock"

    @OptionGroup var socketOptions: SocketOptions
    @OptionGroup var limitOptions: LimitOptions

    @Option(help: "Event-loop threads serving connections (default: half the CPU cores, at least 1).")
    var threads = StoreServerConfiguration.defaultThreads

    @Option(help: "A subscriber's queued changes above this many bytes are conflated (newest per key kept).")
    var subscriberConflateBytes = OutputLimits().conflateBytes

    @Option(help: "A subscriber whose queue stays above this many bytes after conflation is disconnected.")
    var subscriberOutputLimit = OutputLimits().maxBytes

    @Option(help: "aof: keep every change in an append-only log in --data-dir and load it at start; none: memory only (a cache).")
    var persistence: PersistenceMode = .aof

    @Option(help: "Directory of the append-only log (kv-stored.aof).")
    var dataDir = "/var/lib/kvserver"

    @Option(help: "When the log is forced to disk: always (before each write is acknowledged), everysec (once a second), no (left to the kernel).")
    var appendfsync: FsyncPolicy = .everysec

    @Option(help: "Compact the log once it has grown to this many times its size after the last compaction (0: never).")
    var compactFactor = 2.0

    @Option(help: "Never compact a log smaller than this many bytes.")
    var compactMinBytes = 64 << 20

    @Flag(help: "Start even if the log is damaged: cut it at the first bad record (losing what follows; a copy is kept).")
    var repairLog = false

    @Option(help: "Recent changes kept for subscribers that resume after a disconnection (KVSYNC … SINCE); 0 keeps none.")
    var historyChanges = HistoryLimits().maxChanges

    @Option(help: "Most bytes (keys and values) of recent changes kept for resuming subscribers.")
    var historyBytes = HistoryLimits().maxBytes

    @Option(help: ArgumentHelp(
        "The most memory the data may use (keys, values, index, resume history), in bytes or with a k/m/g suffix; 0: no limit.",
        discussion: "Past it, writes get OOM (HTTP 507, a WebSocket error); reads and deletes still work, and nothing stored is evicted."))
    var maxMemory = "0"

    @OptionGroup var loggingOptions: LoggingOptions

    func validate() throws {
        guard socket.utf8.count < 108 else { throw ValidationError("--socket path is longer than a unix socket path may be (107 bytes)") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard ByteSize.parse(maxMemory) != nil else { throw ValidationError("--max-memory must be a number of bytes, optionally with k, m or g (e.g. 4g)") }
        guard subscriberConflateBytes >= 1, subscriberOutputLimit >= subscriberConflateBytes else {
            throw ValidationError("--subscriber-output-limit must be at least --subscriber-conflate-bytes")
        }
        guard compactFactor == 0 || compactFactor > 1 else { throw ValidationError("--compact-factor must be 0 (never) or more than 1") }
        guard compactMinBytes >= 0 else { throw ValidationError("--compact-min-bytes must not be negative") }
        guard historyChanges >= 0, historyBytes >= 0 else { throw ValidationError("--history-changes and --history-bytes must not be negative") }
    }

    func run() async throws {
        let logger = loggingOptions.bootstrap(label: "kv-stored")
        ProcessMetrics.bootstrap()
        var configuration = StoreServerConfiguration(socketPath: socket)
        configuration.socketMode = socketOptions.mode
        configuration.socketGroup = socketOptions.socketGroup
        configuration.limits = limitOptions.limits
        configuration.threads = threads
        configuration.outboxLimits = OutputLimits(conflateBytes: subscriberConflateBytes, maxBytes: subscriberOutputLimit)
        configuration.history = HistoryLimits(maxChanges: historyChanges, maxBytes: historyBytes)
        let memory = ByteSize.parse(maxMemory) ?? 0
        configuration.maxMemoryBytes = memory > 0 ? memory : nil

        if persistence == .aof {
            // A log that cannot be written ends the process: systemd restarts it, and recovery
            // brings back everything acknowledged (the log already refuses every later commit).
            var persistence = PersistenceConfiguration(dataDirectory: dataDir) { _ in Glibc.exit(1) }
            persistence.fsync = appendfsync
            persistence.repair = repairLog
            persistence.compaction = CompactionPolicy(factor: compactFactor, minBytes: compactMinBytes)
            configuration.persistence = persistence
        }
        let server = StoreServer(configuration: configuration, logger: logger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

enum PersistenceMode: String, ExpressibleByArgument, CaseIterable {
    case aof, none
}

extension FsyncPolicy: ExpressibleByArgument {}
