import ArgumentParser
import KVClient
import KVCore
import KVDaemon
import KVFCGI
import KVMetrics

/// kv-fcgi: the HTTP API of KvServer as a FastCGI responder (libfcgi) behind nginx.
@main
struct KVFCGIMain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-fcgi",
        abstract: "KvServer's HTTP API (/storage/:key) as a FastCGI responder behind nginx.",
        discussion: """
            kv-fcgi answers GET, POST and DELETE on /storage/:key (docs/api.md) for nginx's
            fastcgi_pass, with worker threads that each hold a kv-stored connection. While
            kv-stored is unreachable, requests get 503 and kv-fcgi keeps retrying.

            SOCKETS
              --socket PATH, or a listening socket inherited from systemd (kv-fcgi.socket,
              LISTEN_FDS) or from spawn-fcgi (fd 0).

            SIGNALS
              SIGTERM, SIGINT   stop accepting, finish requests in flight, exit 0.
              SIGHUP            read --access-file again (a file with an error is refused,
                                with its line logged, and the old rules stay).

            ENVIRONMENT
              NOTIFY_SOCKET   set by systemd (Type=notify): READY=1 is sent once the socket
                              accepts connections, STOPPING=1 at shutdown.
              KV_STORE_PASSWORD, KV_STORE_USER   the login for a Redis/Valkey store that
                              asks for one (kept out of the command line, docs/scaling.md).
              LISTEN_FDS, LISTEN_PID   an inherited listening socket (socket activation).

            FILES
              /run/kvserver/kv-fcgi.sock     socket of kv-fcgi.socket
              /etc/kvserver/kvserver.env     settings read by kv-fcgi.service
              /etc/kvserver/access.json      the access file, when KV_ACCESS_FILE names it

            SEE ALSO
              kv-stored --help, kv-ws --help, docs/deploy.md
            """,
        version: KvServerVersion.current
    )

    @Option(help: "Unix socket to listen on. Without it, an inherited socket is used (systemd LISTEN_FDS or spawn-fcgi's fd 0).")
    var socket: String?

    @OptionGroup var socketOptions: SocketOptions

    @Option(help: ArgumentHelp(StoreAddress.optionHelp))
    var store = "/run/kvserver/kv-stored.sock"

    @Option(help: "Worker threads, each with its own kv-stored connection.")
    var threads = 16

    @Option(help: ArgumentHelp(
        "Worker threads taking requests at once (default: the number of cores, at most --threads).",
        discussion: "Each takes every request ready at that moment and sends their store calls in one round trip; the other threads stand by for a worker busy moving a large value."))
    var activeThreads: Int?

    @OptionGroup var limitOptions: LimitOptions

    @Option(help: "Longest wait for kv-stored on one request, in milliseconds.")
    var storeTimeoutMs = 5000

    @OptionGroup var originOptions: OriginOptions

    @OptionGroup var accessOptions: AccessOptions

    @OptionGroup var loggingOptions: LoggingOptions

    func validate() throws {
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        if let activeThreads, !(1...threads).contains(activeThreads) { throw ValidationError("--active-threads must be between 1 and --threads (\(threads))") }
        guard storeTimeoutMs >= 1 else { throw ValidationError("--store-timeout-ms must be positive") }
        do throws(KVError) { try StoreAddress.parse(store).check(credentials: StoreCredentials.fromEnvironment()) } catch {
            throw ValidationError("--store: \(error.message)")
        }
    }

    func run() throws {
        let logger = loggingOptions.bootstrap(label: "kv-fcgi")
        ProcessMetrics.bootstrap()
        var configuration = FCGIConfiguration(socketPath: socket, store: try StoreAddress.parse(store))
        configuration.socketMode = socketOptions.mode
        configuration.socketGroup = socketOptions.socketGroup
        configuration.threads = threads
        configuration.activeThreads = min(activeThreads ?? configuration.activeThreads, threads)
        configuration.limits = limitOptions.limits
        configuration.storeTimeoutMilliseconds = storeTimeoutMs
        configuration.storeCredentials = StoreCredentials.fromEnvironment()
        configuration.origins = try originOptions.policy
        configuration.accessFile = accessOptions.path
        try FCGIDaemon.run(configuration, logger: logger)
    }
}
