import ArgumentParser
import KVCore
import KVStore
import Logging
import ServiceLifecycle

/// kv-stored: the storage process. Owns the data, the TTLs and the change feed, and speaks a
/// subset of RESP on a unix socket (docs/protocol.md), so `redis-cli -s PATH` works against it.
@main
struct KVStored: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-stored",
        abstract: "KvServer's storage daemon: keys, values, TTLs and change feed on a unix socket (RESP)."
    )

    @Option(help: "Path of the unix socket to listen on.")
    var socket = "/run/kvserver/kv-stored.sock"

    @Option(help: "File mode of the socket, in octal.")
    var socketMode = "0660"

    @Option(help: "Group to give the socket (e.g. the group nginx's front ends run in).")
    var socketGroup: String?

    @Option(help: "Longest key, in bytes.")
    var maxKeyBytes = Limits.defaultMaxKeyBytes

    @Option(help: "Longest value, in bytes.")
    var maxValueBytes = Limits.defaultMaxValueBytes

    @Option(help: "Event-loop threads serving connections.")
    var threads = StoreServerConfiguration.defaultThreads

    @Option(help: "A subscriber's queued changes above this many bytes are conflated (newest per key kept).")
    var subscriberConflateBytes = OutputLimits().conflateBytes

    @Option(help: "A subscriber whose queue stays above this many bytes after conflation is disconnected.")
    var subscriberOutputLimit = OutputLimits().maxBytes

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard UInt32(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be an octal file mode such as 0660")
        }
        guard socket.utf8.count < 108 else { throw ValidationError("--socket path is longer than a unix socket path may be (107 bytes)") }
        guard (1...Limits.absoluteMaxBytes).contains(maxKeyBytes), (1...Limits.absoluteMaxBytes).contains(maxValueBytes) else {
            throw ValidationError("--max-key-bytes and --max-value-bytes must be between 1 and \(Limits.absoluteMaxBytes)")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard subscriberConflateBytes >= 1, subscriberOutputLimit >= subscriberConflateBytes else {
            throw ValidationError("--subscriber-output-limit must be at least --subscriber-conflate-bytes")
        }
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "kv-stored")

        var configuration = StoreServerConfiguration(socketPath: socket)
        configuration.socketMode = UInt32(socketMode, radix: 8) ?? 0o660
        configuration.socketGroup = socketGroup
        configuration.limits = Limits(maxKeyBytes: maxKeyBytes, maxValueBytes: maxValueBytes)
        configuration.threads = threads
        configuration.outboxLimits = OutputLimits(conflateBytes: subscriberConflateBytes, maxBytes: subscriberOutputLimit)

        let server = StoreServer(configuration: configuration, logger: logger)
        let group = ServiceGroup(
            services: [server],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        try await group.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
