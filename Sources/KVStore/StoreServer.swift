import CMalloc
import KVCore
import KVDaemon
import KVSystem
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import RESP
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Everything kv-stored needs to know to serve.
public struct StoreServerConfiguration: Sendable {
    public var socketPath: String
    /// File mode of the socket; 0660 lets the owner and the socket group (nginx's front ends) in.
    public var socketMode: UInt32 = 0o660
    /// Group to give the socket, by name; nil keeps the process's group.
    public var socketGroup: String?
    public var limits = Limits()
    public var maxArguments = 1 << 20
    public var outboxLimits = OutputLimits()
    public var threads = StoreServerConfiguration.defaultThreads
    /// Recent changes kept for subscribers that resume (`KVSYNC … SINCE`).
    public var history = HistoryLimits()
    /// The most memory the data may use (`Keyspace.maxMemoryBytes`); nil: no limit.
    public var maxMemoryBytes: Int?

    /// The append-only log; nil keeps data in memory only (`--persistence none`).
    public var persistence: PersistenceConfiguration?

    /// Half the cores (at least one): the keyspace has one lock, so more loops mostly contend
    /// for it, and the front ends and nginx need cores too. Measured on 2 cores with the
    /// client on the same machine, 1 loop beat 2 on throughput and had a fifth of the p99
    /// (docs/BENCHMARKS.md); more loops pay off when many connections spread the parsing.
    public static let defaultThreads = max(1, System.coreCount / 2)

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// The decoder limits that follow from the key and value limits: a frame that cannot hold a
    /// valid key or value is refused from its header, before anything is allocated for it, and
    /// a command as a whole may be as long as the longest write (a key and a value at their
    /// limits, and 64 KiB for the rest): what one incomplete command can hold in memory.
    public var respLimits: RESPLimits {
        RESPLimits(maxBulkBytes: max(limits.maxKeyBytes, limits.maxValueBytes), maxElements: maxArguments,
                   maxCommandBytes: limits.maxKeyBytes + limits.maxValueBytes + (64 << 10))
    }
}

/// Where and how kv-stored keeps its data on disk.
public struct PersistenceConfiguration: Sendable {
    public var dataDirectory: String
    public var fsync: FsyncPolicy = .everysec
    /// Start even if the log is damaged, cutting it at the damage (a copy is kept).
    public var repair = false
    public var compaction = CompactionPolicy()
    /// Called once when the live log cannot be written or synced (`AppendLog`): every commit
    /// refuses from then on, and the daemon decides what else (kv-stored exits).
    public var onFailure: @Sendable (String) -> Void

    public init(dataDirectory: String, onFailure: @escaping @Sendable (String) -> Void) {
        self.dataDirectory = dataDirectory
        self.onFailure = onFailure
    }

    public var logPath: String { dataDirectory + "/kv-stored.aof" }
}

/// kv-stored as a service: binds its unix socket, serves until graceful shutdown, then stops
/// accepting, answers what it has read, closes every connection and removes the socket.
public final class StoreServer: Service, Sendable {
    public let configuration: StoreServerConfiguration
    private let logger: Logger
    private let clock: any StoreClock
    private let onReady: @Sendable () -> Void
    private let notifier: SystemdNotifier

    public init(
        configuration: StoreServerConfiguration,
        logger: Logger,
        clock: any StoreClock = SystemClock(),
        onReady: @escaping @Sendable () -> Void = {},
        notifier: SystemdNotifier = .fromEnvironment()
    ) {
        self.notifier = notifier
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        self.onReady = onReady
    }

    public func run() async throws {
        // Checked before any thread starts, so a refusal is just an error message and exit 1.
        try SocketFile.removeStale(at: configuration.socketPath)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let store = Store(clock: clock, timerLoop: group.next(), history: configuration.history)
        store.withKeyspace { $0.maxMemoryBytes = configuration.maxMemoryBytes }
        var log: AppendLog?
        // Memory-only data is new at every start, and so is its epoch.
        var epoch = LogRecovery.newEpoch()
        do {
            var recovery: LogRecovery.Report?
            if let persistence = configuration.persistence {
                (log, recovery, epoch) = try openLog(persistence, store: store)
            }
            try await serve(group: group, store: store, log: log, recovery: recovery, epoch: epoch)
        } catch {
            store.stop()
            log?.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        store.stop()
        log?.stop()  // after the last connection: everything acknowledged is on disk
        if let log, !log.hasFailed {
            // The next start may keep this epoch if it finds the log exactly as it is now (CleanStop).
            do { try CleanStop.record(log: log.path, epoch: epoch) } catch {
                logger.warning("cannot mark the clean stop; the next start begins a new epoch", metadata: ["error": "\(error)"])
            }
        }
        try await group.shutdownGracefully()
        logger.notice("kv-stored stopped")
    }

    /// Loads the log into the keyspace (before the socket exists: no client sees a half-loaded
    /// keyspace), then records every later change in it.
    private func openLog(_ persistence: PersistenceConfiguration, store: Store) throws -> (AppendLog, LogRecovery.Report, epoch: String) {
        if mkdir(persistence.dataDirectory, 0o750) != 0 && errno != EEXIST {
            throw PersistenceFailure("cannot create the data directory \(persistence.dataDirectory): \(String(cString: strerror(errno)))")
        }
        let path = persistence.logPath
        // Read before anything touches the log (opening it below truncates it to its records).
        let cleanStopEpoch = CleanStop.take(log: path)
        let report = try store.withKeyspace { keyspace in
            try LogRecovery.load(path: path, into: &keyspace, repair: persistence.repair, logger: logger)
        }
        #if canImport(CMalloc)
        // The restore's scratch (the key order's sort of every key) is freed by now, but glibc
        // keeps freed memory at the top of its heap for reuse: hand it back to the system.
        malloc_trim(0)
        #endif
        let epoch: String
        if let kept = cleanStopEpoch, report.discardedBytes == 0 {
            epoch = kept
        } else {
            epoch = LogRecovery.newEpoch()
            if report.records > 0 {
                logger.notice("a new data epoch: the last stop was not a clean one, or the log changed since (resuming subscribers get a reset)",
                              metadata: ["log": "\(path)", "epoch": "\(epoch)"])
            }
        }
        unlink(path + ".compacting")  // a compaction interrupted by a crash; the log itself is whole
        let log = try AppendLog(path: path, validBytes: report.validBytes, epoch: epoch, policy: persistence.fsync,
                                logger: logger, compaction: persistence.compaction, onFailure: persistence.onFailure)
        store.withKeyspace { $0.recorder = log }
        log.snapshotSource = { [weak log] in
            store.compactionSnapshot { log?.appendedOffset ?? 0 }
        }
        if report.formatVersion < LogRecord.formatVersion, let snapshot = log.snapshotSource {
            // Before anyone connects: the rewritten log is entirely in the current format.
            let size = try log.compact(snapshot())
            logger.notice("rewrote the log in the current format", metadata: [
                "log": "\(path)", "from_version": "\(report.formatVersion)", "to_version": "\(LogRecord.formatVersion)", "bytes": "\(size)",
            ])
        }
        log.startBackgroundFlush()
        logger.notice("persistence on", metadata: ["log": "\(path)", "appendfsync": "\(persistence.fsync.rawValue)"])
        return (log, report, epoch)
    }

    /// Binds, serves until graceful shutdown, then quiesces. Everything that needs the event
    /// loops (the quiescing helper among them) is gone when this returns.
    private func serve(group: MultiThreadedEventLoopGroup, store: Store, log: AppendLog?, recovery: LogRecovery.Report?, epoch: String) async throws {
        let statistics = ServerStatistics(now: clock.monotonicNanoseconds())
        let metrics = StoreMetrics()
        metrics.observe(store)
        let processor = CommandProcessor(
            store: store, limits: configuration.limits, statistics: statistics, socketPath: configuration.socketPath,
            log: log, recovery: recovery, epoch: epoch, metrics: metrics)
        let quiesce = ServerQuiescingHelper(group: group)
        let commitBatches = CommitBatches(log: log, loops: Array(group.makeIterator()))
        let configuration = self.configuration
        let logger = self.logger
        let path = configuration.socketPath

        // The umask gives the socket its mode as it is created; its group follows right after,
        // before "ready" is logged (and, under systemd, before READY=1).
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        StoreConnectionHandler(
                            processor: processor, limits: configuration.respLimits,
                            outboxLimits: configuration.outboxLimits, logger: logger,
                            commitBatch: commitBatches.batch(for: channel.eventLoop)))
                }
            }
        let channel = try await SocketFile.bindServer(bootstrap, path: path, mode: configuration.socketMode, group: configuration.socketGroup)
        defer { unlink(path) }
        logger.notice("kv-stored ready", metadata: [
            "socket": "\(path)", "threads": "\(configuration.threads)",
            "kv.max_key_bytes": "\(configuration.limits.maxKeyBytes)",
            "kv.max_value_bytes": "\(configuration.limits.maxValueBytes)",
        ])
        onReady()
        notifier.ready(status: "accepting connections on \(path)")
        // WatchdogSec=: pinged from an event loop after taking the keyspace lock, so a stuck
        // loop or a lock never released stops the pings and systemd restarts kv-stored.
        let watchdog = notifier.watchdogPingMicroseconds.map { interval in
            group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(interval)) { [notifier] _ in
                store.withKeyspace { _ in }
                notifier.watchdog()
            }
        }
        defer { watchdog?.cancel() }

        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            logger.notice("shutting down: no new connections, closing clients")
            self.notifier.stopping(status: "closing clients")
            quiesce.initiateShutdown(promise: nil)
        }
        // Every child has closed once the quiescing helper is done with the server channel.
        let done = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: done)
        try? await done.futureResult.get()
    }
}
