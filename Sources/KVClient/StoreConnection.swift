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
/// `requestTimeout` closes the connection). After a reconnect, every subscription is restored
/// and `.restored` is reported. What to do at each event is `StoreConnectionState`'s to say;
/// this class does the I/O. Its mutable state can only be reached on `eventLoop`
/// (`NIOLoopBoundBox` checks).
public final class StoreConnection: EventLoopStore {
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

    /// A request waiting for the connection: given it, or the reason there is none.
    private typealias Waiter = (Result<any Channel, KVError>) -> Void

    private struct LoopState {
        var connection = StoreConnectionState<any Channel, Waiter>()
        var flushScheduled = false
        var reconnect: Scheduled<Void>?
        var watchdog: Scheduled<Void>?
    }

    private let state: NIOLoopBoundBox<LoopState>

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
        self.state = .makeBoxSendingValue(LoopState(), eventLoop: eventLoop)
    }

    // MARK: - Commands

    /// On `eventLoop` only: sends `command` (connecting first when needed) and calls
    /// `completion` there with its reply; completions come in call order. The cheapest way
    /// in: no future is made while connected.
    public func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void) {
        let prefixed: Bool
        switch command.operation {
        case .prefixSync: prefixed = true
        default: prefixed = command.operation.subscription?.topic.isPrefix ?? false
        }
        if prefixed && address.isRedis { return completion(.failure(KVError.prefixSubscriptionOnRedis)) }
        guard let (topic, subscribing) = command.operation.subscription else {
            return submit(command.operation) { completion(command.reply($0)) }
        }
        guard subscribing else {
            guard let channel = state.value.connection.unsubscribed(topic) else {
                // The next connection will not subscribe it either.
                return completion(command.reply(.success(.unsubscribedHere)))
            }
            return write(command.operation, to: channel) { completion(command.reply($0)) }
        }
        submit(command.operation) { result in
            // Kept for reconnections only once acknowledged.
            if case .success(.push) = result { self.state.value.connection.subscribed(topic) }
            completion(command.reply(result))
        }
    }

    /// Closes the connection; later requests fail.
    public func close() async {
        let channel = try? await eventLoop.submit { () -> (any Channel)? in
            self.state.value.reconnect?.cancel()
            self.state.value.watchdog?.cancel()
            let (channel, waiters) = self.state.value.connection.close()
            for waiter in waiters { waiter(.failure(Self.closed)) }
            return channel
        }.get()
        try? await channel?.close()
    }

    private static let closed = KVError(.storageUnavailable, "storage unavailable: the client is closed")

    // MARK: - Event-loop side

    /// `operation` on the connection, made first when needed; `completion` gets the reply as
    /// kv-stored's.
    private func submit(_ operation: StoreOperation<ByteBuffer>, completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        if case .connected(let channel, _) = state.value.connection.phase {
            write(operation, to: channel, completion)
            return
        }
        let waiter: Waiter = { channel in
            switch channel {
            case .success(let channel): self.write(operation, to: channel, completion)
            case .failure(let error): completion(.failure(error))
            }
        }
        switch state.value.connection.request(waiter, now: NIODeadline.now()) {
        case .write(let channel): write(operation, to: channel, completion)
        case .queued: break
        case .connect: connect()
        case .fail(nil): completion(.failure(Self.closed))
        case .fail(let milliseconds?):
            completion(.failure(KVError(.storageUnavailable, "storage unavailable: \(address.name) is unreachable; retrying in \(milliseconds) ms")))
        }
    }

    private func write(_ operation: StoreOperation<ByteBuffer>, to channel: any Channel, _ completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        if let generation = state.value.connection.sent() { armWatchdog(channel, generation: generation) }
        let (command, shape) = translated(operation)
        let request = StoreRequest(arguments: command, repliedByPush: operation.repliedByPush) { result in
            self.state.value.connection.replied()
            completion(result.map { shape.adapt($0) })
        }
        // On the event loop, so the request (its callback is not Sendable) goes in synchronously.
        channel.pipeline.syncOperations.write(NIOAny(request), promise: nil)
        scheduleFlush(channel)
    }

    /// `operation` as this store takes it, and how to read the reply as kv-stored's.
    private func translated(_ operation: StoreOperation<ByteBuffer>) -> ([ByteBuffer], RedisFunctions.ReplyShape) {
        address.isRedis ? RedisFunctions.translate(operation) : (operation.arguments, .same)
    }

    /// One flush for all the commands sent in this event-loop tick (many sessions' requests
    /// then share one write to kv-stored), instead of one write per command.
    private func scheduleFlush(_ channel: any Channel) {
        guard !state.value.flushScheduled else { return }
        state.value.flushScheduled = true
        eventLoop.execute {
            self.state.value.flushScheduled = false
            channel.flush()
        }
    }

    /// While requests wait, kv-stored must answer something every `requestTimeout`; if it does
    /// not, the connection is closed (its requests fail) and the next request reconnects.
    private func armWatchdog(_ channel: any Channel, generation: Int) {
        state.value.watchdog = eventLoop.scheduleTask(in: requestTimeout) {
            self.state.value.watchdog = nil
            switch self.state.value.connection.watchdogFired(generation: generation) {
            case .none:
                break
            case .rearm:
                self.armWatchdog(channel, generation: generation)
            case .close(let channel):
                self.logger.warning("\(self.address.name) did not answer in time; reconnecting", metadata: ["kv.timeout": "\(self.requestTimeout)"])
                channel.close(promise: nil)
            }
        }
    }

    private func connect() {
        let loop = eventLoop
        let limits = self.limits
        let dialect: StoreClientHandler.Dialect = address.isRedis ? .redis : .kvStored
        let bootstrap = ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPValueDecoder(limits: limits)),
                        StoreClientHandler(dialect: dialect, onChange: { self.onEvent(.change($0)) }, onDropped: { self.dropped($0) }),
                    ])
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch address {
        case .kvStored(let path), .redis(.unix(let path)):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        case .redis(.tcp(let host, let port)):
            connected = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .redisCluster:
            connected = loop.makeFailedFuture(KVError(.storageUnavailable, "a cluster is reached through ClusterStoreConnection"))
        }
        connected.flatMap { channel in
            self.handshake(channel).map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }.whenComplete { result in
            switch result {
            case .success(let channel):
                switch self.state.value.connection.connected(channel) {
                case .discard:
                    channel.close(promise: nil)
                case .ready(let waiters, let restored, let generation):
                    channel.closeFuture.whenComplete { _ in self.connectionLost(generation: generation) }
                    if let restored {
                        self.logger.notice("reconnected to \(self.address.name); subscriptions restored", metadata: ["kv.subscriptions": "\(restored)"])
                        self.onEvent(.restored(subscriptions: restored))
                    }
                    for waiter in waiters { waiter(.success(channel)) }
                }
            case .failure(let failure):
                guard let (waiters, delay, reconnect) = self.state.value.connection.connectFailed(now: NIODeadline.now()) else { return }
                let error = (failure as? KVError) ?? KVError(.storageUnavailable, "storage unavailable: cannot connect to \(self.address.name): \(failure)")
                self.logger.debug("cannot reach \(self.address.name)", metadata: ["error": "\(failure)", "retry.ms": "\(delay)"])
                for waiter in waiters { waiter(.failure(error)) }
                if reconnect { self.scheduleReconnect(in: delay) }
            }
        }
    }

    /// `StoreHandshake`'s steps (RESP3, so pushes are told apart from replies), then every
    /// subscription again.
    private func handshake(_ channel: any Channel) -> EventLoopFuture<Void> {
        let handshake = StoreHandshake<ByteBuffer>(address: address, credentials: credentials, resp3: true, changeFeed: changeFeed)
        let resubscriptions = state.value.connection.subscriptions.map { topic in
            StoreHandshake<ByteBuffer>.Step(words: translated(.subscription(topic, subscribing: true)).0, what: "a subscription", repliedByPush: true)
        }
        let replies = (handshake.steps + resubscriptions).map { step -> EventLoopFuture<Void> in
            let promise = eventLoop.makePromise(of: Void.self)
            let request = StoreRequest(arguments: step.words, repliedByPush: step.repliedByPush) { result in
                switch result.flatMap({ handshake.check(step, $0) }) {
                case .success: promise.succeed()
                case .failure(let error): promise.fail(error)
                }
            }
            channel.pipeline.syncOperations.write(NIOAny(request), promise: nil)
            return promise.futureResult
        }
        if address.isRedis && changeFeed { checkExpiryEvents(channel) }
        channel.flush()
        return EventLoopFuture.andAllSucceed(replies, on: eventLoop)
    }

    /// Subscribers learn of Redis's expiries only if the server publishes them: says so in the
    /// log when `notify-keyspace-events` lacks `E` (keyevent) or `x` (expired; `A` includes it).
    private func checkExpiryEvents(_ channel: any Channel) {
        let words = ["CONFIG", "GET", "notify-keyspace-events"].map { ByteBuffer(string: $0) }
        let request = StoreRequest(arguments: words, repliedByPush: false) { result in
            let flags: String?
            switch result {
            case .success(.map(let items)) where items.count == 2: flags = items[1].string
            case .success(.array(let items)) where items.count == 2: flags = items[1].string
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
        channel.pipeline.syncOperations.write(NIOAny(request), promise: nil)
    }

    /// The store ended `key`'s subscription (a cluster slot moved).
    private func dropped(_ key: ByteBuffer) {
        guard state.value.connection.dropped(key) else { return }
        logger.notice("\(address.name) ended a subscription: the key's slot moved", metadata: ["kv.key": "\(String(buffer: key))"])
        onEvent(.dropped(key: key))
    }

    private func connectionLost(generation: Int) {
        guard let subscriptions = state.value.connection.connectionLost(generation: generation) else { return }
        logger.warning("lost the connection to \(address.name); changes may be missed until it returns", metadata: ["kv.subscriptions": "\(subscriptions)"])
        onEvent(.disconnected)
        scheduleReconnect(in: 0)
    }

    /// Subscriptions need the connection back even when no request asks for it.
    private func scheduleReconnect(in milliseconds: Int64) {
        state.value.reconnect?.cancel()
        state.value.reconnect = eventLoop.scheduleTask(in: .milliseconds(milliseconds)) {
            if self.state.value.connection.reconnectDue() { self.connect() }
        }
    }
}

/// A store as kv-ws reaches it, from an event loop: one server's `StoreConnection`, a
/// cluster's `ClusterStoreConnection` (which holds one of the first per master), or a
/// scripted one in tests.
public protocol EventLoopStore: AnyObject, Sendable {
    var eventLoop: any EventLoop { get }
    /// On `eventLoop` only: sends `command`; `completion` runs there with the reply, in call order.
    func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void)
    /// `send` from any thread, as a future (implemented below; a requirement so tests may script it).
    func future<Reply: Sendable>(_ command: StoreCommand<ByteBuffer, Reply>) -> EventLoopFuture<Reply>
    /// Closes it; later commands fail.
    func close() async
}

extension EventLoopStore {
    /// Calls made in sequence (under a caller's lock, say) reach the store in that order, so a
    /// quick unsubscribe-then-subscribe of one key stays ordered.
    public func future<Reply: Sendable>(_ command: StoreCommand<ByteBuffer, Reply>) -> EventLoopFuture<Reply> {
        let promise = eventLoop.makePromise(of: Reply.self)
        eventLoop.execute {
            self.send(command) { promise.completeWith($0.mapError { $0 }) }
        }
        return promise.futureResult
    }

    /// `send`, awaited.
    public func request<Reply: Sendable>(_ command: StoreCommand<ByteBuffer, Reply>) async throws(KVError) -> Reply {
        do {
            return try await future(command).get()
        } catch {
            throw KVError.storeFailure(error)
        }
    }
}
