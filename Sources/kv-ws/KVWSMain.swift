import ArgumentParser
import KVCore
import KVWebSocket
import Logging

/// kv-ws: the WebSocket API of KvServer (get/set/delete/subscribe) behind nginx's /ws.
@main
struct KVWSMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-ws",
        abstract: "KvServer's WebSocket API (/ws) with live subscriptions, behind nginx."
    )

    @Option(help: "Unix socket to listen on (nginx proxies /ws to it).")
    var socket = "/run/kvserver/kv-ws.sock"

    @Option(help: "File mode of the socket, in octal.")
    var socketMode = "0660"

    @Option(help: "Group to give the socket (nginx's group, e.g. www-data).")
    var socketGroup: String?

    @Option(help: "kv-stored's unix socket.")
    var store = "/run/kvserver/kv-stored.sock"

    @Option(help: "Longest key, in bytes.")
    var maxKeyBytes = Limits.defaultMaxKeyBytes

    @Option(help: "Longest value, in bytes.")
    var maxValueBytes = Limits.defaultMaxValueBytes

    @Option(help: "A client's queued messages above this many bytes are conflated (newest change per key kept).")
    var clientConflateBytes = 1 << 20

    @Option(help: "A client whose queue stays above this many bytes after conflation is closed with 1008.")
    var clientOutputLimit = 64 << 20

    @Option(help: "Seconds between WebSocket pings (keeps idle subscribers alive through proxies).")
    var pingSeconds = 30

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard UInt32(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be an octal file mode such as 0660")
        }
        guard (1...Limits.absoluteMaxBytes).contains(maxKeyBytes), (1...Limits.absoluteMaxBytes).contains(maxValueBytes) else {
            throw ValidationError("--max-key-bytes and --max-value-bytes must be between 1 and \(Limits.absoluteMaxBytes)")
        }
        guard clientConflateBytes >= 1, clientOutputLimit >= clientConflateBytes else {
            throw ValidationError("--client-output-limit must be at least --client-conflate-bytes")
        }
        guard pingSeconds >= 1 else { throw ValidationError("--ping-seconds must be at least 1") }
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var configuration = WSConfiguration(socketPath: socket, storeSocket: store)
        configuration.socketMode = UInt32(socketMode, radix: 8) ?? 0o660
        configuration.socketGroup = socketGroup
        configuration.limits = Limits(maxKeyBytes: maxKeyBytes, maxValueBytes: maxValueBytes)
        configuration.outputLimits = OutputLimits(conflateBytes: clientConflateBytes, maxBytes: clientOutputLimit)
        configuration.pingSeconds = pingSeconds
        try await WSDaemon.run(configuration, logger: Logger(label: "kv-ws"))
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
