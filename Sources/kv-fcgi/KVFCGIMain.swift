import ArgumentParser
import KVDaemon
import KVFCGI

/// kv-fcgi: the HTTP API of KvServer as a FastCGI responder (libfcgi) behind nginx.
@main
struct KVFCGIMain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-fcgi",
        abstract: "KvServer's HTTP API (/storage/:key) as a FastCGI responder behind nginx."
    )

    @Option(help: "Unix socket to listen on. Without it, an inherited socket is used (systemd LISTEN_FDS or spawn-fcgi's fd 0).")
    var socket: String?

    @OptionGroup var socketOptions: SocketOptions

    @Option(help: "kv-stored's unix socket.")
    var store = "/run/kvserver/kv-stored.sock"

    @Option(help: "Worker threads, each answering one request at a time with its own kv-stored connection.")
    var threads = 16

    @OptionGroup var limitOptions: LimitOptions

    @Option(help: "Longest wait for kv-stored on one request, in milliseconds.")
    var storeTimeoutMs = 5000

    @OptionGroup var loggingOptions: LoggingOptions

    func validate() throws {
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        guard storeTimeoutMs >= 1 else { throw ValidationError("--store-timeout-ms must be positive") }
    }

    func run() throws {
        let logger = loggingOptions.bootstrap(label: "kv-fcgi")
        var configuration = FCGIConfiguration(socketPath: socket, storeSocket: store)
        configuration.socketMode = socketOptions.mode
        configuration.socketGroup = socketOptions.socketGroup
        configuration.threads = threads
        configuration.limits = limitOptions.limits
        configuration.storeTimeoutMilliseconds = storeTimeoutMs
        try FCGIDaemon.run(configuration, logger: logger)
    }
}
