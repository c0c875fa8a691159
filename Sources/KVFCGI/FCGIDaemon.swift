import FastCGI
import KVAccess
import KVClient
import KVCore
import KVDaemon
import KVHTTP
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// kv-fcgi's settings.
public struct FCGIConfiguration: Sendable {
    /// Where to listen; nil means an inherited socket (systemd `LISTEN_FDS` or spawn-fcgi's fd 0).
    public var socketPath: String?
    public var socketMode: UInt32 = 0o660
    public var socketGroup: String?
    public var backlog: Int32 = 1024
    /// kv-stored's socket, or a Redis/Valkey server.
    public var store: StoreAddress
    /// The login for a Redis store that asks for one (`StoreCredentials.fromEnvironment`).
    public var storeCredentials: StoreCredentials?
    public var threads = 16
    /// Threads taking requests at once (`FastCGIServer.activeThreads`).
    public var activeThreads = max(1, System.coreCount)
    public var limits = Limits()
    public var storeTimeoutMilliseconds = 5000
    /// Browser origins allowed (docs/security.md).
    public var origins = OriginPolicy()
    /// Who may do what (docs/access.md); nil leaves the service open.
    public var accessFile: String?

    public init(socketPath: String?, store: StoreAddress) {
        self.socketPath = socketPath
        self.store = store
    }
}

/// kv-fcgi's whole life: listen, serve with worker threads, stop cleanly on SIGTERM/SIGINT
/// (in-flight requests finish, the socket is removed), exit.
public enum FCGIDaemon {
    public static func run(_ configuration: FCGIConfiguration, logger: Logger) throws {
        TerminationSignals.block()
        FastCGIServer.initialise()
        let listenFD: Int32
        if let path = configuration.socketPath {
            listenFD = try SocketFile.listen(path: path, mode: configuration.socketMode, group: configuration.socketGroup, backlog: configuration.backlog)
        } else if let inherited = FastCGIServer.inheritedListener() {
            listenFD = inherited
        } else {
            throw FastCGIServer.SocketFailure("no --socket given and no inherited listening socket (LISTEN_FDS or fd 0)")
        }
        let access = try AccessControl.loadBlocking(path: configuration.accessFile)
        access.logStartup(logger)
        let refusals = RefusalLog(logger: logger)
        let api = StorageAPI(limits: configuration.limits, origins: configuration.origins)
        let reachability = StoreReachability()  // one worker reconnecting lets all the others retry
        let server = FastCGIServer(listenFD: listenFD, threads: configuration.threads, activeThreads: configuration.activeThreads, logger: logger) {
            StorageWorker(api: api, access: access, refusals: refusals, store: configuration.store, credentials: configuration.storeCredentials,
                          storeTimeoutMilliseconds: configuration.storeTimeoutMilliseconds, reachability: reachability, logger: logger)
        }
        try server.start()
        logger.notice("kv-fcgi ready", metadata: [
            "socket": "\(configuration.socketPath ?? "inherited fd \(listenFD)")", "threads": "\(configuration.threads)",
            "active_threads": "\(server.activeThreads)",
            "store": "\(configuration.store)",
        ])
        let notifier = SystemdNotifier.fromEnvironment()
        notifier.ready(status: "accepting FastCGI connections")
        if let interval = notifier.watchdogPingMicroseconds { startWatchdog(notifier, everyMicroseconds: interval) }
        var signal = TerminationSignals.wait()
        while signal == TerminationSignals.reload {
            // Requests in flight finish under the old rules, later ones get the new.
            access.reloadLoggedBlocking(logger)
            signal = TerminationSignals.wait()
        }
        logger.notice("shutting down: finishing requests in flight", metadata: ["signal": "\(TerminationSignals.name(signal))"])
        notifier.stopping(status: "finishing requests in flight")
        server.stop()
        if let path = configuration.socketPath { unlink(path) }
        logger.notice("kv-fcgi stopped")
    }

    /// WatchdogSec=: a thread that pings while the process runs (the workers block in libfcgi's
    /// accept, so they cannot ping themselves; a hung process stops the pings all the same).
    private static func startWatchdog(_ notifier: SystemdNotifier, everyMicroseconds interval: Int64) {
        final class Box { let notifier: SystemdNotifier; let interval: Int64; init(_ n: SystemdNotifier, _ i: Int64) { notifier = n; interval = i } }
        let box = Unmanaged.passRetained(Box(notifier, interval))
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            while true {
                box.notifier.watchdog()
                var pause = timespec(tv_sec: Int(box.interval / 1_000_000), tv_nsec: Int(box.interval % 1_000_000) * 1000)
                nanosleep(&pause, nil)
            }
        }, box.toOpaque())
        if started == 0 { pthread_detach(thread) } else { box.release() }
    }
}
