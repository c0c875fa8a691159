import ArgumentParser
import KVClient
import KVCore
import KVDaemon
import KVMetrics
import KVWebSocket

/// kv-ws: the WebSocket API of KvServer (get/set/delete/subscribe) behind nginx's /ws.
@main
struct KVWSMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-ws",
        abstract: "KvServer's WebSocket API (/ws) with live subscriptions, behind nginx.",
        discussion: """
            kv-ws serves get, set, delete, subscribe and unsubscribe messages (docs/api.md) on
            WebSocket connections that nginx proxies from /ws. Subscribers see every change of
            their keys, from any client or by expiry; slow clients are conflated (newest value
            per key kept) and closed with 1008 past --client-output-limit.

            SIGNALS
              SIGTERM, SIGINT   stop accepting, close every WebSocket with 1001, exit 0.
              SIGHUP            read --access-file again; open connections present their
                                credentials again (revoked: closed with 4401).

            ENVIRONMENT
              NOTIFY_SOCKET   set by systemd (Type=notify): READY=1 is sent once the socket
                              accepts connections, STOPPING=1 at shutdown.
              KV_STORE_PASSWORD, KV_STORE_USER   the login for a Redis/Valkey store that
                              asks for one (kept out of the command line, docs/scaling.md).

            FILES
              /run/kvserver/kv-ws.sock       default socket
              /etc/kvserver/kvserver.env     settings read by kv-ws.service

            SEE ALSO
              kv-stored --help, kv-fcgi --help, docs/deploy.md
            """,
        version: KvServerVersion.current
    )

    @Option(help: "Unix socket to listen on (nginx proxies /ws to it).")
    var socket = "/run/kvserver/kv-ws.sock"

    @OptionGroup var socketOptions: SocketOptions

    @Option(help: ArgumentHelp(StoreAddress.optionHelp))
    var store = "/run/kvserver/kv-stored.sock"

    @Option(help: "Event-loop threads (default: half the CPU cores, at least 1).")
    var threads: Int?

    @OptionGroup var limitOptions: LimitOptions

    @Option(help: "A client's queued messages above this many bytes are conflated (newest change per key kept).")
    var clientConflateBytes = 1 << 20

    @Option(help: "A client whose queue stays above this many bytes after conflation is closed with 1008.")
    var clientOutputLimit = 64 << 20

    @Option(help: "Seconds between WebSocket pings (keeps idle subscribers alive through proxies).")
    var pingSeconds = 30

    @Option(help: "Keys and prefixes one connection may watch at once; a subscribe past it gets an error.")
    var maxSubscriptions = 10_000

    @Option(help: "Prefixes one connection may watch at once; a prefix subscribe past it gets an error.")
    var maxPrefixSubscriptions = 100

    @Option(help: "Bytes of one connection's messages read but not yet answered; past it, kv-ws stops reading from that client until they are.")
    var maxPendingBytes = 16 << 20

    @OptionGroup var originOptions: OriginOptions

    @OptionGroup var accessOptions: AccessOptions

    @OptionGroup var loggingOptions: LoggingOptions

    func validate() throws {
        do throws(KVError) { try StoreAddress.parse(store).check(credentials: StoreCredentials.fromEnvironment()) } catch {
            throw ValidationError("--store: \(error.message)")
        }
        guard clientConflateBytes >= 1, clientOutputLimit >= clientConflateBytes else {
            throw ValidationError("--client-output-limit must be at least --client-conflate-bytes")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard pingSeconds >= 1 else { throw ValidationError("--ping-seconds must be at least 1") }
        guard maxSubscriptions >= 1, maxPrefixSubscriptions >= 0, maxPendingBytes >= 1 else {
            throw ValidationError("--max-subscriptions and --max-pending-bytes must be at least 1, --max-prefix-subscriptions at least 0")
        }
    }

    func run() async throws {
        let logger = loggingOptions.bootstrap(label: "kv-ws")
        ProcessMetrics.bootstrap()
        var configuration = WSConfiguration(socketPath: socket, store: try StoreAddress.parse(store))
        configuration.socketMode = socketOptions.mode
        configuration.socketGroup = socketOptions.socketGroup
        configuration.limits = limitOptions.limits
        configuration.outputLimits = OutputLimits(conflateBytes: clientConflateBytes, maxBytes: clientOutputLimit)
        configuration.pingSeconds = pingSeconds
        configuration.maxSubscriptionsPerConnection = maxSubscriptions
        configuration.maxPrefixSubscriptionsPerConnection = maxPrefixSubscriptions
        configuration.maxPendingBytesPerConnection = maxPendingBytes
        configuration.origins = try originOptions.policy
        configuration.accessFile = accessOptions.path
        configuration.storeCredentials = StoreCredentials.fromEnvironment()
        if let threads { configuration.threads = threads }
        try await WSDaemon.run(configuration, logger: logger)
    }
}
