import Atomics
import KVAccess
import KVClient
import KVCore
import KVDaemon
import KVMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import RESP
import ServiceLifecycle
import UnixSignals

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
    /// Keys and prefixes one connection may watch at once (docs/limits.md).
    public var maxSubscriptionsPerConnection = 10_000
    /// Prefixes one connection may watch at once (docs/limits.md).
    public var maxPrefixSubscriptionsPerConnection = 100
    /// Bytes of one connection's messages read but not yet answered before reading pauses.
    public var maxPendingBytesPerConnection = 16 << 20
    /// Browser origins allowed to open a WebSocket (docs/security.md).
    public var origins = OriginPolicy()
    /// Who may do what (docs/access.md); nil leaves the service open.
    public var accessFile: String?

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
/// that loop's kv-stored connection, so a request costs no thread hop at all. NIOWebSocket
/// decodes what clients send; kv-ws frames what it sends itself (`ServerFrame`), once per
/// change however many sessions it goes to.
public enum WSDaemon {
    public static func run(_ configuration: WSConfiguration, logger: Logger) async throws {
        try SocketFile.removeStale(at: configuration.socketPath)
        let access = try await AccessControl.load(path: configuration.accessFile)
        access.logStartup(logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let sessions = LiveSessions()
        let server = WSServer(configuration: configuration, group: group, access: access, sessions: sessions, logger: logger)
        let reloader = AccessReloader(access: access, sessions: sessions, logger: logger)
        do {
            let services = ServiceGroup(
                configuration: .init(services: [.init(service: server), .init(service: reloader)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await services.run()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
        logger.notice("kv-ws stopped")
    }
}

/// The open sessions, so a reload can have each look at its credentials again.
final class LiveSessions: Sendable {
    private let sessions = NIOLockedValueBox<[Int: Session]>([:])

    func add(_ session: Session) { sessions.withLockedValue { $0[session.id] = session } }
    func remove(_ id: Int) { sessions.withLockedValue { _ = $0.removeValue(forKey: id) } }
    var all: [Session] { sessions.withLockedValue { Array($0.values) } }
}

/// SIGHUP (`systemctl reload kv-ws`): reads the access file again; if it reads, every open
/// connection presents its credentials again under the new rules (revoked ones are closed).
/// A file with an error changes nothing, and the log names its line.
struct AccessReloader: Service {
    let access: AccessControl
    let sessions: LiveSessions
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            guard await access.reloadLogged(logger) else { continue }
            let open = sessions.all
            logger.info("rechecking the credentials of open connections", metadata: ["kv.connections": "\(open.count)"])
            for session in open { session.reauthorize() }
        }
    }
}

/// The listening socket and everything behind it, as a service: on graceful shutdown it stops
/// accepting, closes every WebSocket with 1001, and returns once they are all closed (a client
/// that does not answer its close is cut off after the close timeout).
struct WSServer: Service {
    let configuration: WSConfiguration
    let group: MultiThreadedEventLoopGroup
    let access: AccessControl
    let sessions: LiveSessions
    let logger: Logger
    private static let nextSessionID = ManagedAtomic<Int>(0)

    func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let resp = RESPLimits(maxBulkBytes: configuration.limits.maxValueBytes + 64)
        // One request connection per event loop: a session uses its own loop's, so requests
        // and replies never change threads, and a loop's requests share its writes.
        var requestConnections: [ObjectIdentifier: any EventLoopStore & StoreRequests] = [:]
        for loop in group.makeIterator() {
            requestConnections[ObjectIdentifier(loop)] = Self.connection(to: configuration.store, configuration.storeCredentials, on: loop, limits: resp, logger: logger)
        }
        let connections = requestConnections
        let hub = SubscriptionHub(connection: { onEvent in
            Self.connection(to: configuration.store, configuration.storeCredentials, on: group.next(), limits: resp, logger: logger, changeFeed: true, onEvent: onEvent)
        }, logger: logger)
        let settings = WebSocketSessionHandler.Settings(
            limits: configuration.limits, pingInterval: .seconds(Int64(configuration.pingSeconds)),
            maxPendingBytes: configuration.maxPendingBytesPerConnection, maxSubscriptions: configuration.maxSubscriptionsPerConnection,
            maxPrefixSubscriptions: configuration.maxPrefixSubscriptionsPerConnection)
        let maxMessage = configuration.maxMessageBytes
        let quiesce = ServerQuiescingHelper(group: group)
        let access = self.access
        let sessions = self.sessions
        let refusals = RefusalLog(logger: logger)

        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxMessage,
            automaticErrorHandling: false,  // WebSocketSessionHandler answers protocol errors with a close frame (1009 for an oversize frame)
            shouldUpgrade: { channel, head in
                let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first
                // A browser on another site is refused here; NotWebSocketHandler answers it 403.
                let allowed = configuration.origins.allows(origin: head.headers.first(name: "Origin"), host: head.headers.first(name: "Host"))
                guard path == "/ws", allowed else { return channel.eventLoop.makeSucceededFuture(nil) }
                // Credentials from the Authorization header or a `kv.bearer.<token>` protocol
                // offer (browsers cannot set headers on a WebSocket), checked before the 101.
                let offer = UpgradeCredentials(head.headers)
                let checked: EventLoopFuture<Authentication>
                if let known = access.policy.authenticateCached(offer.credential, now: access.now()) {
                    // Static tokens, no token, a JWT seen before: decided within this read,
                    // as the upgrade always was.
                    checked = channel.eventLoop.makeSucceededFuture(known)
                } else {
                    checked = access.authenticate(offer.credential, on: channel.eventLoop)
                }
                return checked.flatMapThrowing { authentication -> HTTPHeaders? in
                    let operations = channel.pipeline.syncOperations
                    switch authentication {
                    case .refused(let reason) where offer.credential != .none:
                        WSMetrics.refused(operation: "connect", status: 401)
                        refusals.refused(status: 401, operation: "connect", identity: "invalid-token", key: "-", reason: reason,
                                         requestID: head.headers.first(name: "X-Request-ID") ?? "-")
                        try operations.handler(type: NotWebSocketHandler.self).unauthorized = reason
                        return nil
                    case .refused:
                        // No credentials and no anonymous access: the client may still send `auth`.
                        try operations.addHandler(UpgradeAccess(credential: .none, identity: nil))
                    case .identity(let identity):
                        try operations.addHandler(UpgradeAccess(credential: offer.credential, identity: identity))
                    }
                    var headers = HTTPHeaders()
                    if let chosen = offer.chosenProtocol { headers.add(name: "Sec-WebSocket-Protocol", value: chosen) }
                    return headers
                }
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
                    let operations = channel.pipeline.syncOperations
                    let upgradeAccess = try operations.handler(type: UpgradeAccess.self)
                    _ = operations.removeHandler(upgradeAccess)
                    let sessionAccess = WebSocketSessionHandler.Access(
                        control: access, refusals: refusals, credential: upgradeAccess.credential, identity: upgradeAccess.identity)
                    try operations.addHandler(FrameOutlet(), position: .first)
                    try operations.addHandlers([
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: maxMessage),
                        WebSocketSessionHandler(session: session, requests: requests, hub: hub, settings: settings, access: sessionAccess, logger: logger),
                    ])
                    sessions.add(session)
                    channel.closeFuture.whenComplete { _ in sessions.remove(id) }
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
    ) -> any EventLoopStore & StoreRequests {
        if case .redisCluster(let seeds) = store {
            return ClusterStoreConnection(seeds: seeds, credentials: credentials, eventLoop: loop, limits: limits, logger: logger, changeFeed: changeFeed, onEvent: onEvent)
        }
        return StoreConnection(address: store, credentials: credentials, eventLoop: loop, limits: limits, logger: logger, changeFeed: changeFeed, onEvent: onEvent)
    }
}

/// What an upgrade request presents: its credential, and the subprotocol to answer with.
struct UpgradeCredentials {
    static let bearerProtocolPrefix = "kv.bearer."
    /// The protocol a client offers beside its `kv.bearer.` one, and which kv-ws picks.
    static let apiProtocol = "kv.v1"

    var credential: Credential = .none
    var chosenProtocol: String?

    init(_ headers: HTTPHeaders) {
        let offered = headers[canonicalForm: "Sec-WebSocket-Protocol"].map { String($0) }
        let bearerOffer = offered.first { $0.hasPrefix(Self.bearerProtocolPrefix) }
        if let authorization = headers.first(name: "Authorization") {
            credential = Credential.fromAuthorization(authorization)
        } else if let bearerOffer {
            credential = Credential.token(String(bearerOffer.dropFirst(Self.bearerProtocolPrefix.count)))
        }
        // The answer must be one of the offers (or a browser fails the connection); the token
        // is echoed only when the client offered nothing else.
        chosenProtocol = offered.contains(Self.apiProtocol) ? Self.apiProtocol : bearerOffer
    }
}

/// Carries the identity checked at the upgrade to the session handler set up after it.
final class UpgradeAccess: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let credential: Credential
    let identity: Identity?

    init(credential: Credential, identity: Identity?) {
        self.credential = credential
        self.identity = identity
    }
}

extension AccessControl {
    /// `authenticate` as a future on `loop`: checking a token may wait for its issuer's keys
    /// (a JWKS fetch), which must not hold up the loop. Completed on `loop`, never at once, so
    /// its callbacks do not run inside the caller's.
    func authenticate(_ credential: Credential, on loop: any EventLoop) -> EventLoopFuture<Authentication> {
        let promise = loop.makePromise(of: Authentication.self)
        promise.completeWithTask { await self.authenticate(credential) }
        return promise.futureResult
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
    /// Set by the upgrade check when the credentials presented were refused (answered 401).
    var unauthorized: String?

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
            var challenge: String?
            if let origin = originRefused {
                logger.info("refused a WebSocket from another site's page", metadata: ["http.origin": "\(origin.prefix(200))"])
                (status, text) = (.forbidden, "origin not allowed: this WebSocket accepts pages of its own site and of --allowed-origins\n")
            } else if let reason = unauthorized {
                (status, text) = (.unauthorized, "unauthorized: \(reason)\n")
                challenge = #"Bearer realm="kvserver", error="invalid_token""#
            } else if upgradeMissing {
                (status, text) = (.upgradeRequired, "/ws speaks WebSocket only: send an Upgrade: websocket request\n")
            } else {
                (status, text) = (.notFound, "kv-ws serves WebSocket upgrades of /ws, and its metrics at /metrics/kv-ws\n")
            }
            var headers = HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", "\(text.utf8.count)"), ("Connection", "close")])
            if upgradeMissing && originRefused == nil && unauthorized == nil { headers.add(name: "Upgrade", value: "websocket") }
            if let challenge { headers.add(name: "WWW-Authenticate", value: challenge) }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
