import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import KVClient
import KVCore
import KVDaemon
import Logging
import NIOCore
import NIOPosix
import RESP
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// kv-ws's settings.
public struct WSConfiguration: Sendable {
    public var socketPath: String
    public var socketMode: UInt32 = 0o660
    public var socketGroup: String?
    public var storeSocket: String
    public var limits = Limits()
    public var outputLimits = OutputLimits(conflateBytes: 1 << 20, maxBytes: 64 << 20)
    /// WebSocket ping interval; keeps idle subscribers alive through nginx's proxy_read_timeout.
    public var pingSeconds = 30

    public init(socketPath: String, storeSocket: String) {
        self.socketPath = socketPath
        self.storeSocket = storeSocket
    }
}

/// kv-ws's whole life: a WebSocket server (hummingbird-websocket) on a unix socket behind
/// nginx's `/ws`, sessions talking to kv-stored, clean shutdown with 1001 on SIGTERM/SIGINT.
public enum WSDaemon {
    public static func run(_ configuration: WSConfiguration, logger: Logger) async throws {
        try SocketFile.removeStale(at: configuration.socketPath)
        // Hummingbird binds the socket itself; this umask gives it its mode as it is created
        // (kv-ws creates no other files). Its group is set once the server runs, before "ready".
        umask(mode_t(~configuration.socketMode & 0o777))

        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let resp = RESPLimits(maxBulkBytes: configuration.limits.maxValueBytes + 64)
        let requests = StoreConnection(socketPath: configuration.storeSocket, eventLoop: group.next(), limits: resp, logger: logger)
        let hub = SubscriptionHub(connection: { onEvent in
            StoreConnection(socketPath: configuration.storeSocket, eventLoop: group.next(), limits: resp, logger: logger, onEvent: onEvent)
        }, logger: logger)
        let registry = SessionRegistry(logger: logger)
        let handler = SessionHandler(
            requests: requests, hub: hub, registry: registry, limits: configuration.limits,
            outputLimits: configuration.outputLimits, logger: logger)

        let maxMessage = SessionHandler.maxMessageBytes(for: configuration.limits)
        let webSocket = WebSocketServerConfiguration(
            maxFrameSize: maxMessage,
            autoPing: .enabled(timePeriod: .seconds(configuration.pingSeconds)),
            // How long a closing connection may wait for the client's close frame before it is
            // dropped: a client that stopped reading never sends one.
            closeTimeout: .seconds(3))
        let app = Application(
            router: Router(),
            server: .http1WebSocketUpgrade(configuration: .init(ws: webSocket)) { request, channel, _ in
                guard request.path?.split(separator: "?").first == "/ws" else { return .dontUpgrade }
                let session = handler.openSession(on: channel)
                return .upgrade([:]) { inbound, outbound, _ in
                    try await handler.run(session: session, inbound: inbound, outbound: outbound)
                }
            },
            configuration: .init(address: .unixDomainSocket(path: configuration.socketPath), serverName: "kv-ws"),
            onServerRunning: { _ in
                do {
                    try SocketFile.applyPermissions(path: configuration.socketPath, mode: configuration.socketMode, group: configuration.socketGroup)
                    logger.notice("kv-ws ready", metadata: [
                        "socket": "\(configuration.socketPath)", "store": "\(configuration.storeSocket)",
                        "kv.max_message_bytes": "\(maxMessage)",
                    ])
                } catch {
                    logger.critical("cannot set the socket's permissions: \(error)")
                    kill(getpid(), SIGTERM)
                }
            },
            eventLoopGroupProvider: .shared(group),
            logger: logger
        )
        let services = ServiceGroup(
            services: [app, registry],  // shut down in reverse: sessions close with 1001 first
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        try await services.run()
        await requests.close()
        unlink(configuration.socketPath)
        try await group.shutdownGracefully()
        logger.notice("kv-ws stopped")
    }
}
