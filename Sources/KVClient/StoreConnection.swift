import KVCore
import Logging
import NIOCore
import NIOPosix
import RESP

/// What a `StoreConnection` tells its owner besides replies.
public enum StoreConnectionEvent: Sendable, Equatable {
    /// A change of a subscribed key.
    case change(StoreChange)
    /// The connection to kv-stored was lost while subscriptions were active: changes are being
    /// missed until `.restored`.
    case disconnected
    /// Reconnected and every subscription re-established. Changes between `.disconnected` and
    /// now may have been missed; a subscriber should re-read what it cares about.
    case restored(subscriptions: Int)
    /// The store ended the subscription of `key` by itself: a Redis Cluster node does when the
    /// key's slot moves away (a failover or a resharding). `ClusterStoreConnection` subscribes
    /// it again where the slot went.
    case dropped(key: ByteBuffer)
    /// Like `.disconnected`, for some keys only: the cluster master holding their
    /// subscriptions is lost (or their slot is moving); the other keys are unaffected.
    case interrupted(keys: [ByteBuffer])
    /// Like `.restored`, for the keys of an `.interrupted`.
    case resumed(keys: [ByteBuffer])
}

/// An asynchronous, pipelined RESP3 connection to kv-stored for kv-ws: requests and change-feed
/// subscriptions on one socket, so a `subscribe` followed by a `get` is answered in that order.
///
/// Connects lazily and reconnects with backoff. While kv-stored is unreachable, requests fail at
/// once with `storageUnavailable` (never hang: while requests wait, kv-stored silent for
/// `requestTimeout` closes the connection). After a reconnect, every subscription is restored and `.restored`
/// is reported. All mutable state lives on `eventLoop`.
public final class StoreConnection: @unchecked Sendable {
    /// kv-stored's socket, or a Redis/Valkey server (commands pass through `RedisFunctions`).
    public let address: StoreAddress
    private let credentials: StoreCredentials?
    public let eventLoop: any EventLoop
    private let limits: RESPLimits
    private let logger: Logger
    private let requestTimeout: TimeAmount
    /// Whether this connection carries subscriptions (on Redis, it then also receives expiries).
    private let changeFeed: Bool
    private let onEvent: @Sendable (StoreConnectionEvent) -> Void

    private enum State {
        case idle
        case connecting(EventLoopFuture<Channel>)
        case connected(Channel)
        case waiting(until: NIODeadline)
        case closed
    }

    // Event-loop confined.
    private var state = State.idle
    private var subscriptions = Set<ByteBuffer>()
    private var backoff = ReconnectBackoff()
    private var lostSubscriptions = false
    private var reconnectTask: Scheduled<Void>?
    private var flushScheduled = false
    /// Requests sent and not yet answered, and whether any reply came since the watchdog was armed.
    private var outstanding = 0
    private var answered = false
    private var watchdog: Scheduled<Void>?

    public convenience init(
        socketPath: String,
        eventLoop: any EventLoop,
        limits: RESPLimits,
        logger: Logger,
        requestTimeout: TimeAmount = .seconds(5),
        onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void = { _ in }
    ) {
        self.init(address: .kvStored(path: socketPath), eventLoop: eventLoop, limits: limits, logger: logger, requestTimeout: requestTimeout,
                  changeFeed: true, onEvent: onEvent)
    }

    /// `changeFeed`: the connection will carry subscriptions (kv-ws's hub), so on Redis it
    /// subscribes to expiry events too. `address` is kv-stored or one Redis server (a cluster
    /// is `ClusterStoreConnection`'s: one of these per master).
    public init(
        address: StoreAddress,
        credentials: StoreCredentials? = nil,
        eventLoop: any EventLoop,
        limits: RESPLimits,
        logger: Logger,
        requestTimeout: TimeAmount = .seconds(5),
        changeFeed: Bool = false,
        onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void = { _ in }
    ) {
        self.changeFeed = changeFeed
        self.address = address
        self.credentials = credentials
        self.eventLoop = eventLoop
        self.limits = limits
        self.logger = logger
        self.requestTimeout = requestTimeout
        self.onEvent = onEvent
    }

    // MARK: - Operations

    public func get(_ key: ByteBuffer) async throws(KVError) -> ByteBuffer? {
        try Self.getReply(await request(Self.getCommand(key)))
    }

    public func set(_ key: ByteBuffer, value: ByteBuffer, ttl: TTL?) async throws(KVError) {
        try Self.setReply(await request(Self.setCommand(key, value: value, ttl: ttl)))
    }

    @discardableResult
    public func delete(_ key: ByteBuffer) async throws(KVError) -> Bool {
        try Self.deleteReply(await request(Self.deleteCommand(key)))
    }

    // Commands and their replies, for callers of `send(_:completion:)`.

    public static func getCommand(_ key: ByteBuffer) -> [ByteBuffer] { [Name.get, key] }

    public static func setCommand(_ key: ByteBuffer, value: ByteBuffer, ttl: TTL?) -> [ByteBuffer] {
        guard let ttl else { return [Name.set, key, value] }
        return [Name.set, key, value, Name.px, ByteBuffer(string: String(ttl.milliseconds))]
    }

    public static func deleteCommand(_ key: ByteBuffer) -> [ByteBuffer] { [Name.del, key] }

    /// Command names, allocated once (a ByteBuffer is copy-on-write, so sharing them is safe).
    private enum Name {
        static let get = ByteBuffer(string: "GET")
        static let set = ByteBuffer(string: "SET")
        static let px = ByteBuffer(string: "PX")
        static let del = ByteBuffer(string: "DEL")
    }

    public static func getReply(_ reply: RESPValue) throws(KVError) -> ByteBuffer? {
        switch reply {
        case .bulkString(let value): return value
        case .null: return nil
        case let other: throw BlockingStoreClient.unexpected(other)
        }
    }

    public static func setReply(_ reply: RESPValue) throws(KVError) {
        guard case .simpleString = reply else { throw BlockingStoreClient.unexpected(reply) }
    }

    public static func deleteReply(_ reply: RESPValue) throws(KVError) -> Bool {
        guard case .integer(let n) = reply else { throw BlockingStoreClient.unexpected(reply) }
        return n > 0
    }

    /// Subscribes to `key`'s changes; every change applied after this returns is delivered.
    public func subscribe(_ key: ByteBuffer) async throws(KVError) {
        try await Self.awaitStore(subscribeFuture(key))
    }

    /// Stops the changes of `key`.
    public func unsubscribe(_ key: ByteBuffer) async throws(KVError) {
        try await Self.awaitStore(unsubscribeFuture(key))
    }

    private static func awaitStore<T: Sendable>(_ future: EventLoopFuture<T>) async throws(KVError) -> T {
        do {
            return try await future.get()
        } catch let error as KVError {
            throw error
        } catch {
            throw KVError(.storageUnavailable, "storage unavailable: \(error)")
        }
    }

    /// `subscribe`, as a future. Calls made in sequence (under a caller's lock, say) reach
    /// kv-stored in that order, so a quick unsubscribe-then-subscribe of one key stays ordered.
    public func subscribeFuture(_ key: ByteBuffer) -> EventLoopFuture<Void> {
        subscribeReply(key).flatMapThrowing { reply in
            guard case .push = reply else { throw BlockingStoreClient.unexpected(reply) }
        }
    }

    /// `subscribeFuture`, with the store's reply: a push (subscribed) or an error (a cluster
    /// node answers MOVED for a slot it does not serve). Errors are `KVError`s.
    func subscribeReply(_ key: ByteBuffer) -> EventLoopFuture<RESPValue> {
        eventLoop.flatSubmit {
            // Kept for reconnections only once acknowledged.
            self.send([ByteBuffer(string: "SUBSCRIBE"), key], onReply: { if case .push = $0 { self.subscriptions.insert(key) } })
        }.flatMapErrorThrowing { error in
            if let error = error as? KVError { throw error }
            throw KVError(.storageUnavailable, "storage unavailable: \(error)")
        }
    }

    /// `unsubscribe`, as a future, ordered with `subscribeFuture` in the same way.
    @discardableResult
    public func unsubscribeFuture(_ key: ByteBuffer) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.subscriptions.remove(key)
            guard case .connected = self.state else { return self.eventLoop.makeSucceededVoidFuture() }
            return self.send([ByteBuffer(string: "UNSUBSCRIBE"), key], onReply: nil).map { _ in }
        }
    }

    /// Sends one command and returns its reply.
    public func request(_ arguments: [ByteBuffer]) async throws(KVError) -> RESPValue {
        try await request(arguments, onReply: nil)
    }

    private func request(_ arguments: [ByteBuffer], onReply: (@Sendable (RESPValue) -> Void)?) async throws(KVError) -> RESPValue {
        try await Self.awaitStore(eventLoop.flatSubmit { self.send(arguments, onReply: onReply) })
    }

    /// On `eventLoop` only: sends one command and calls `completion` there with its reply. The
    /// cheapest way in (no future is made while connected); completions come in call order.
    public func send(_ arguments: [ByteBuffer], completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        eventLoop.preconditionInEventLoop()
        guard case .connected(let channel) = state else {
            // Connecting, backing off or closed: the future path connects or fails fast.
            requestFuture(arguments).assumeIsolated().whenComplete { result in
                completion(result.mapError { ($0 as? KVError) ?? KVError(.storageUnavailable, "storage unavailable: \($0)") })
            }
            return
        }
        outstanding += 1
        armWatchdog(channel)
        let (command, shape) = translated(arguments)
        let request = StoreRequest(arguments: command, reply: .callback { result in
            self.outstanding -= 1
            self.answered = true
            completion(result.map { shape.adapt($0) })
        })
        // On the event loop, so the request (its callback is not Sendable) goes in synchronously.
        channel.pipeline.syncOperations.write(NIOAny(request), promise: nil)
        scheduleFlush(channel)
    }

    /// Sends one command; the reply completes the future on `eventLoop`. Errors are `KVError`s.
    public func requestFuture(_ arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        let reply = eventLoop.inEventLoop ? send(arguments, onReply: nil) : eventLoop.flatSubmit { self.send(arguments, onReply: nil) }
        return reply.flatMapErrorThrowing { error in
            if let error = error as? KVError { throw error }
            throw KVError(.storageUnavailable, "storage unavailable: \(error)")
        }
    }

    /// Closes the connection; later requests fail.
    public func close() async {
        let channel: Channel? = try? await eventLoop.submit { () -> Channel? in
            self.reconnectTask?.cancel()
            self.watchdog?.cancel()
            defer { self.state = .closed }
            if case .connected(let channel) = self.state { return channel }
            return nil
        }.get()
        try? await channel?.close()
    }

    // MARK: - Event-loop side

    /// `arguments` as this store takes them, and how to read the reply as kv-stored's.
    private func translated(_ arguments: [ByteBuffer]) -> ([ByteBuffer], RedisFunctions.ReplyShape) {
        guard address.isRedis else { return (arguments, .same) }
        let (command, shape, _) = RedisFunctions.translate(arguments)
        return (command, shape)
    }

    private func send(_ arguments: [ByteBuffer], onReply: (@Sendable (RESPValue) -> Void)?) -> EventLoopFuture<RESPValue> {
        let (command, shape) = translated(arguments)
        return channel().flatMap { channel in
            let promise = self.eventLoop.makePromise(of: RESPValue.self)
            self.outstanding += 1
            self.armWatchdog(channel)
            promise.futureResult.whenComplete { result in
                self.outstanding -= 1
                self.answered = true
                if case .success(let reply) = result { onReply?(reply) }
            }
            channel.pipeline.syncOperations.write(NIOAny(StoreRequest(arguments: command, reply: .promise(promise))), promise: nil)
            self.scheduleFlush(channel)
            return promise.futureResult.map { shape.adapt($0) }
        }
    }

    /// One flush for all the commands sent in this event-loop tick (many sessions' requests
    /// then share one write to kv-stored), instead of one write per command.
    private func scheduleFlush(_ channel: Channel) {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.execute {
            self.flushScheduled = false
            channel.flush()
        }
    }

    /// While requests wait, kv-stored must answer something every `requestTimeout`; if it does
    /// not, the connection is closed (its requests fail) and the next request reconnects. One
    /// timer per connection, not one per request.
    private func armWatchdog(_ channel: Channel) {
        guard watchdog == nil else { return }
        answered = false
        watchdog = eventLoop.scheduleTask(in: requestTimeout) {
            self.watchdog = nil
            guard case .connected(let current) = self.state, current === channel, self.outstanding > 0 else { return }
            if self.answered {
                self.armWatchdog(channel)
            } else {
                self.logger.warning("\(self.address.name) did not answer in time; reconnecting", metadata: ["kv.timeout": "\(self.requestTimeout)"])
                channel.close(promise: nil)
            }
        }
    }

    /// The live channel, connecting first if needed; fails fast while backing off.
    private func channel() -> EventLoopFuture<Channel> {
        switch state {
        case .connected(let channel):
            return eventLoop.makeSucceededFuture(channel)
        case .connecting(let future):
            return future
        case .closed:
            return eventLoop.makeFailedFuture(KVError(.storageUnavailable, "storage unavailable: the client is closed"))
        case .waiting(let until) where NIODeadline.now() < until:
            let ms = (until - .now()).nanoseconds / 1_000_000
            return eventLoop.makeFailedFuture(KVError(
                .storageUnavailable, "storage unavailable: \(address.name) is unreachable; retrying in \(ms) ms"))
        case .idle, .waiting:
            return connect()
        }
    }

    private func connect() -> EventLoopFuture<Channel> {
        let loop = eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let limits = self.limits
        let dialect: StoreClientHandler.Dialect = address.isRedis ? .redis : .kvStored
        let bootstrap = ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPValueDecoder(limits: limits)),
                        StoreClientHandler(dialect: dialect, onChange: { bound.value.onEvent(.change($0)) }, onDropped: { bound.value.dropped($0) }),
                    ])
                }
            }
        let connected: EventLoopFuture<Channel>
        switch address {
        case .kvStored(let path), .redis(.unix(let path)):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        case .redis(.tcp(let host, let port)):
            connected = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .redisCluster:
            connected = loop.makeFailedFuture(KVError(.storageUnavailable, "a cluster is reached through ClusterStoreConnection"))
        }
        let future = connected
            .flatMap { channel in self.handshake(channel).map { channel } }
        state = .connecting(future)
        future.whenComplete { result in
            switch result {
            case .success(let channel):
                guard case .connecting = self.state else { channel.close(promise: nil); return }
                self.state = .connected(channel)
                self.backoff.succeeded()
                channel.closeFuture.whenComplete { _ in self.connectionLost(channel) }
                if self.lostSubscriptions {
                    self.lostSubscriptions = false
                    self.logger.notice("reconnected to \(self.address.name); subscriptions restored", metadata: ["kv.subscriptions": "\(self.subscriptions.count)"])
                    self.onEvent(.restored(subscriptions: self.subscriptions.count))
                }
            case .failure(let error):
                guard case .connecting = self.state else { return }
                let delay = self.backoff.failed()
                self.state = .waiting(until: .now() + .milliseconds(delay))
                self.logger.debug("cannot reach \(self.address.name)", metadata: ["error": "\(error)", "retry.ms": "\(delay)"])
                if self.lostSubscriptions { self.scheduleReconnect(in: delay) }
            }
        }
        return future.flatMapErrorThrowing { error in
            if let error = error as? KVError { throw error }
            throw KVError(.storageUnavailable, "storage unavailable: cannot connect to \(self.address.name): \(error)")
        }
    }

    /// RESP3 (so pushes are told apart from replies); then every subscription again.
    /// kv-stored: every change, never a conflated stream (kv-ws conflates per WebSocket client
    /// itself, and exact subscribers must see every revision: past kv-stored's output limit the
    /// connection is cut and they resume). Redis: KvServer's functions, and its expiry events
    /// (`RedisFunctions.expiredChannel`; `notify-keyspace-events` must include `Ex`).
    private func handshake(_ channel: Channel) -> EventLoopFuture<Void> {
        var steps: [[ByteBuffer]] = [credentials?.hello() ?? [ByteBuffer(string: "HELLO"), ByteBuffer(string: "3")]]
        switch address {
        case .kvStored:
            steps.append([ByteBuffer(string: "CLIENT"), ByteBuffer(string: "NO-CONFLATE"), ByteBuffer(string: "ON")])
        case .redis, .redisCluster:
            steps.append(RedisFunctions.load())
            if changeFeed { steps.append([ByteBuffer(string: "SUBSCRIBE"), ByteBuffer(string: RedisFunctions.expiredChannel)]) }
        }
        for key in subscriptions { steps.append(translated([ByteBuffer(string: "SUBSCRIBE"), key]).0) }
        let replies = steps.map { args -> EventLoopFuture<RESPValue> in
            let promise = eventLoop.makePromise(of: RESPValue.self)
            channel.pipeline.syncOperations.write(NIOAny(StoreRequest(arguments: args, reply: .promise(promise))), promise: nil)
            return promise.futureResult.flatMapThrowing { reply in
                // (A replica refuses the functions with READONLY: it has its master's.)
                if case .error(let text) = reply, !String(buffer: text).hasPrefix("READONLY") {
                    let what = switch String(buffer: args[0]) {
                    case "FUNCTION": "KvServer's functions (Redis 7 or Valkey 7.2 or later is needed)"
                    case "HELLO" where self.credentials != nil: "the login (\(StoreCredentials.userVariable)/\(StoreCredentials.passwordVariable))"
                    case let command: command
                    }
                    throw KVError(.storageError, "\(self.address.name) refused \(what): \(String(buffer: text))")
                }
                return reply
            }
        }
        if address.isRedis && changeFeed { checkExpiryEvents(channel) }
        channel.flush()
        return EventLoopFuture.andAllSucceed(replies, on: eventLoop)
    }

    /// Subscribers learn of Redis's expiries only if the server publishes them: says so in the
    /// log when `notify-keyspace-events` lacks `E` (keyevent) or `x` (expired; `A` includes it).
    private func checkExpiryEvents(_ channel: Channel) {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        let args = ["CONFIG", "GET", "notify-keyspace-events"].map { ByteBuffer(string: $0) }
        channel.pipeline.syncOperations.write(NIOAny(StoreRequest(arguments: args, reply: .promise(promise))), promise: nil)
        promise.futureResult.whenSuccess { reply in
            let flags: String?
            switch reply {
            case .map(let items) where items.count == 2, .array(let items) where items.count == 2: flags = items[1].string
            default: flags = nil
            }
            guard let flags else {
                self.logger.warning("cannot read notify-keyspace-events (CONFIG GET refused?); subscribers see expiries only if it includes E and x", metadata: ["store": "\(self.address)"])
                return
            }
            if !(flags.contains("E") && (flags.contains("x") || flags.contains("A"))) {
                self.logger.error("notify-keyspace-events lacks E and x: subscribers will not be told of expiries; set notify-keyspace-events Ex (docs/scaling.md)",
                                  metadata: ["store": "\(self.address)", "notify-keyspace-events": "\(flags)"])
            }
        }
    }

    /// The store ended `key`'s subscription (a cluster slot moved away).
    private func dropped(_ key: ByteBuffer) {
        guard subscriptions.remove(key) != nil else { return }
        logger.notice("\(address.name) ended a subscription: the key's slot moved", metadata: ["kv.key": "\(String(buffer: key))"])
        onEvent(.dropped(key: key))
    }

    private func connectionLost(_ channel: Channel) {
        guard case .connected(let current) = state, current === channel else { return }
        state = .idle
        guard !subscriptions.isEmpty else { return }
        lostSubscriptions = true
        logger.warning("lost the connection to \(address.name); changes may be missed until it returns", metadata: ["kv.subscriptions": "\(subscriptions.count)"])
        onEvent(.disconnected)
        scheduleReconnect(in: 0)
    }

    /// Subscriptions need the connection back even when no request asks for it.
    private func scheduleReconnect(in milliseconds: Int64) {
        reconnectTask?.cancel()
        reconnectTask = eventLoop.scheduleTask(in: .milliseconds(milliseconds)) {
            switch self.state {
            case .idle, .waiting: _ = self.connect()
            default: break
            }
        }
    }
}
