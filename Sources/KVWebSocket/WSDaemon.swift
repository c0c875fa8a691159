import Atomics
import KVClient
import KVCore
import KVDaemon
import KVMetrics
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOWebSocket
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
    /// kv-stored's socket or a Redis/Valkey server.
    public var store: StoreAddress
    /// The login for a Redis store that asks for one (`StoreCredentials.fromEnvironment`).
    public var storeCredentials: StoreCredentials?
    /// Event loops. Half the cores by default: a session lives on one loop and every loop's
    /// requests share one kv-stored connection, so few loops batch well, and nginx and
    /// kv-stored need the other cores (on 2 cores, 1 loop measured 15% faster than 2).
    public var threads = max(1, System.coreCount / 2)
    public var limits = Limits()
    public var outputLimits = OutputLimits(conflateBytes: 1 << 20, maxBytes: 64 << 20)
    /// WebSocket ping interval; keeps idle subscribers alive through nginx's proxy_read_timeout.
    public var pingSeconds = 30
    /// Keys one connection may watch at once (docs/limits.md).
    public var maxSubscriptionsPerConnection = 10_000
    /// Bytes of one connection's messages read but not yet answered before reading pauses.
    public var maxPendingBytesPerConnection = 16 << 20
    /// Browser origins allowed to open a WebSocket (docs/security.md).
    public var origins = OriginPolicy()

    public init(socketPath: String, store: StoreAddress) {
        self.socketPath = socketPath
        self.store = store
    }

    /// Largest WebSocket message accepted: a value at the limit plus a key at the limit written
    /// with JSON escapes (up to 6 characters per byte) and the envelope.
    public var maxMessageBytes: Int { limits.maxValueBytes + limits.maxKeyBytes * 6 + (64 << 10) }
}

/// kv-ws's whole life: a WebSocket server on a unix socket behind nginx's `/ws`, sessions
/// talking to kv-stored, clean shutdown with 1001 on SIGTERM/SIGINT.
///
/// Built on swift-nio's own WebSocket codec (NIOWebSocket, the one hummingbird-websocket and
/// swift-websocket wrap) rather than on their async message streams: each message there costs
/// task switches between the event loop and Swift's cooperative pool, which profiling showed to
/// be a third of kv-ws's time. Here a session lives on its channel's event loop together with
/// that loop's kv-stored connection, so a request costs no thread hop at all.
public enum WSDaemon {
    public static func run(_ configuration: WSConfiguration, logger: Logger) async throws {
        try SocketFile.removeStale(at: configuration.socketPath)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let server = WSServer(configuration: configuration, group: group, logger: logger)
        do {
            let services = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await services.run()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
        logger.notice("kv-ws stopped")
    }
}

/// The listening socket and everything behind it, as a service: on graceful shutdown it stops
/// accepting, closes every WebSocket with 1001, and returns once they are all closed (a client
/// that does not answer its close is cut off after the close timeout).
struct WSServer: Service {
    let configuration: WSConfiguration
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    private static let nextSessionID = ManagedAtomic<Int>(0)

    func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let resp = RESPLimits(maxBulkBytes: configuration.limits.maxValueBytes + 64)
        // One request connection per event loop: a session uses its own loop's, so requests
        // and replies never change threads, and a loop's requests share its writes.
        var requestConnections: [ObjectIdentifier: any FeedConnection & StoreRequests] = [:]
        for loop in group.makeIterator() {
            requestConnections[ObjectIdentifier(loop)] = Self.connection(to: configuration.store, configuration.storeCredentials, on: loop, limits: resp, logger: logger)
        }
        let connections = requestConnections
        let hub = SubscriptionHub(connection: { onEvent in
            Self.connection(to: configuration.store, configuration.storeCredentials, on: group.next(), limits: resp, logger: logger, changeFeed: true, onEvent: onEvent)
        }, logger: logger)
        let settings = WebSocketSessionHandler.Settings(
            limits: configuration.limits, pingInterval: .seconds(Int64(configuration.pingSeconds)),
            maxPendingBytes: configuration.maxPendingBytesPerConnection, maxSubscriptions: configuration.maxSubscriptionsPerConnection)
        let maxMessage = configuration.maxMessageBytes
        let quiesce = ServerQuiescingHelper(group: group)

        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxMessage,
            automaticErrorHandling: false,  // WebSocketSessionHandler answers protocol errors with a close frame (1009 for an oversize frame)
            shouldUpgrade: { channel, head in
                let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first
                // A browser on another site is refused here; NotWebSocketHandler answers it 403.
                let allowed = configuration.origins.allows(origin: head.headers.first(name: "Origin"), host: head.headers.first(name: "Host"))
                return channel.eventLoop.makeSucceededFuture(path == "/ws" && allowed ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    let id = Self.nextSessionID.wrappingIncrementThenLoad(ordering: .relaxed)
                    // nginx's $request_id for the upgrade: the session's log lines carry it.
                    var logger = logger
                    logger[metadataKey: "request.id"] = "\(head.headers.first(name: "X-Request-ID") ?? "-")"
                    let session = Session(id: id, eventLoop: channel.eventLoop, limits: configuration.outputLimits) { [logger] dropped in
                        logger.info("a client does not keep up; keeping only the newest change per key for it",
                                    metadata: ["connection.id": "\(id)", "kv.conflated": "\(dropped)"])
                    }
                    // Every loop of the group has its connection (a session must use its own loop's).
                    guard let requests = connections[ObjectIdentifier(channel.eventLoop)] else {
                        throw WSServerFailure("no kv-stored connection for this event loop")
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: maxMessage),
                        WebSocketSessionHandler(session: session, requests: requests, hub: hub, settings: settings, logger: logger),
                    ])
                }
            })

        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            // Upgraded: from now on frames, not HTTP, flow past where this handler sat.
                            context.pipeline.removeHandler(name: NotWebSocketHandler.name, promise: nil)
                        }))
                    try channel.pipeline.syncOperations.addHandler(
                        NotWebSocketHandler(origins: configuration.origins, logger: logger), name: NotWebSocketHandler.name)
                }
            }
        let path = configuration.socketPath
        let channel = try await SocketFile.bindServer(bootstrap, path: path, mode: configuration.socketMode, group: configuration.socketGroup)
        defer { unlink(path) }
        logger.notice("kv-ws ready", metadata: [
            "socket": "\(path)", "store": "\(configuration.store)", "threads": "\(configuration.threads)",
            "kv.max_message_bytes": "\(maxMessage)",
        ])
        let notifier = SystemdNotifier.fromEnvironment()
        notifier.ready(status: "accepting WebSocket connections on \(path)")
        // WatchdogSec=: pinged from each event loop in turn, so a stuck loop stops the pings.
        let watchdog = notifier.watchdogPingMicroseconds.map { interval in
            group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(interval)) { [notifier] _ in notifier.watchdog() }
        }
        defer { watchdog?.cancel() }

        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            logger.notice("shutting down: no new connections, closing websockets with 1001")
            notifier.stopping(status: "closing websockets")
            quiesce.initiateShutdown(promise: nil)
        }
        // Quiescing tells every connection to close (WebSockets with 1001); it completes once all have.
        let done = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: done)
        try? await done.futureResult.get()
        for connection in connections.values { await connection.close() }
        await hub.close()
    }

    /// A connection to the store on `loop`: kv-stored's or one Redis server's, or one to each
    /// master of a Redis Cluster.
    private static func connection(
        to store: StoreAddress, _ credentials: StoreCredentials?, on loop: any EventLoop, limits: RESPLimits, logger: Logger, changeFeed: Bool = false,
        onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void = { _ in }
    ) -> any FeedConnection & StoreRequests {
        if case .redisCluster(let seeds) = store {
            return ClusterStoreConnection(seeds: seeds, credentials: credentials, eventLoop: loop, limits: limits, logger: logger, changeFeed: changeFeed, onEvent: onEvent)
        }
        return StoreConnection(address: store, credentials: credentials, eventLoop: loop, limits: limits, logger: logger, changeFeed: changeFeed, onEvent: onEvent)
    }
}

struct WSServerFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Answers any request that is not a WebSocket upgrade of `/ws`: kv-ws serves nothing else.
final class NotWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "kv-ws-not-websocket"

    private let origins: OriginPolicy
    private let logger: Logger
    private var upgradeMissing = false
    private var originRefused: String?
    private var metricsRequested = false

    init(origins: OriginPolicy, logger: Logger) {
        self.origins = origins
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first
            upgradeMissing = path == "/ws"
            let origin = head.headers.first(name: "Origin")
            originRefused = path == "/ws" && !origins.allows(origin: origin, host: head.headers.first(name: "Host")) ? origin : nil
            // kv-ws's metrics (docs/operations.md); nginx lets only allowed addresses through.
            metricsRequested = path == "/metrics/kv-ws" && head.method == .GET
        case .body:
            break
        case .end:
            if metricsRequested {
                let body = ProcessMetrics.exposition()
                let headers = HTTPHeaders([("Content-Type", ProcessMetrics.contentType), ("Content-Length", "\(body.count)"), ("Connection", "close")])
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
                return
            }
            let (status, text): (HTTPResponseStatus, String)
            if let origin = originRefused {
                logger.info("refused a WebSocket from another site's page", metadata: ["http.origin": "\(origin.prefix(200))"])
                (status, text) = (.forbidden, "origin not allowed: this WebSocket accepts pages of its own site and of --allowed-origins\n")
            } else if upgradeMissing {
                (status, text) = (.upgradeRequired, "/ws speaks WebSocket only: send an Upgrade: websocket request\n")
            } else {
                (status, text) = (.notFound, "kv-ws serves WebSocket upgrades of /ws, and its metrics at /metrics/kv-ws\n")
            }
            var headers = HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", "\(text.utf8.count)"), ("Connection", "close")])
            if upgradeMissing && originRefused == nil { headers.add(name: "Upgrade", value: "websocket") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
