import ArgumentParser
import KVCore
import KVFCGI
import Logging

/// kv-fcgi: the HTTP API of KvServer as a FastCGI responder (libfcgi) behind nginx.
@main
struct KVFCGIMain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-fcgi",
        abstract: "KvServer's HTTP API (/storage/:key) as a FastCGI responder behind nginx."
    )

    @Option(help: "Unix socket to listen on. Without it, an inherited socket is used (systemd LISTEN_FDS or spawn-fcgi's fd 0).")
    var socket: String?

    @Option(help: "File mode of the socket, in octal.")
    var socketMode = "0660"

    @Option(help: "Group to give the socket (nginx's group, e.g. www-data).")
    var socketGroup: String?

    @Option(help: "kv-stored's unix socket.")
    var store = "/run/kvserver/kv-stored.sock"

    @Option(help: "Worker threads, each answering one request at a time with its own kv-stored connection.")
    var threads = 16

    @Option(help: "Longest key, in bytes (after percent-decoding).")
    var maxKeyBytes = Limits.defaultMaxKeyBytes

    @Option(help: "Longest value, in bytes.")
    var maxValueBytes = Limits.defaultMaxValueBytes

    @Option(help: "Longest wait for kv-stored on one request, in milliseconds.")
    var storeTimeoutMs = 5000

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard UInt32(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be an octal file mode such as 0660")
        }
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        guard (1...Limits.absoluteMaxBytes).contains(maxKeyBytes), (1...Limits.absoluteMaxBytes).contains(maxValueBytes) else {
            throw ValidationError("--max-key-bytes and --max-value-bytes must be between 1 and \(Limits.absoluteMaxBytes)")
        }
        guard storeTimeoutMs >= 1 else { throw ValidationError("--store-timeout-ms must be positive") }
    }

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var configuration = FCGIConfiguration(socketPath: socket, storeSocket: store)
        configuration.socketMode = UInt32(socketMode, radix: 8) ?? 0o660
        configuration.socketGroup = socketGroup
        configuration.threads = threads
        configuration.limits = Limits(maxKeyBytes: maxKeyBytes, maxValueBytes: maxValueBytes)
        configuration.storeTimeoutMilliseconds = storeTimeoutMs
        try FCGIDaemon.run(configuration, logger: Logger(label: "kv-fcgi"))
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
