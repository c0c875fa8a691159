import KVAccess
import KVClient
import KVCore
import Logging
import NIOCore
import NIOWebSocket
import RESP

/// What a session needs of kv-stored for requests: its event loop's pipelined connection.
protocol StoreRequests: AnyObject {
    /// Sends `command`; `completion` runs on the session's event loop, in call order among
    /// commands of one ordering domain.
    func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void)
    /// Commands about keys of one domain are applied and answered in the order sent; those of
    /// different domains (a cluster's masters) may overtake each other.
    func orderingDomain(ofKey key: [UInt8]) -> Int
}

extension StoreConnection: StoreRequests {
    /// One connection: everything is in order.
    func orderingDomain(ofKey key: [UInt8]) -> Int { 0 }
}

extension ClusterStoreConnection: StoreRequests {}

/// What a session needs of the subscription hub.
protocol Subscriptions: AnyObject, Sendable {
    /// Completes once kv-stored has acknowledged the subscription, and, with `catchUp`, once
    /// the session has been sent what it lacks (see `SubscriptionHub`).
    func subscribe(_ topic: Topic<[UInt8]>, _ session: Session, catchUp: SubscriptionHub.CatchUp?) -> EventLoopFuture<Void>
    /// The revision of the last change of `topic` the session was sent.
    func revision(of topic: Topic<[UInt8]>, for session: Session) -> UInt64
    /// Returns the revision of the last change of `topic` the session was sent.
    @discardableResult
    func unsubscribe(_ topic: Topic<[UInt8]>, _ session: Session) -> UInt64
}

extension SubscriptionHub: Subscriptions {}

/// One WebSocket connection after the upgrade, on its channel's event loop: reads client
/// messages, talks to kv-stored, writes replies and changes, pings, and closes.
///
/// Ordering: messages are handled in the order sent. `get`/`set`/`delete` are pipelined on the
/// event loop's own kv-stored connection (replies come back in order, so answers keep the
/// order of the questions); on a cluster, only those for one master are pipelined, and a
/// request for another master waits for them. `subscribe` and `unsubscribe` wait until every
/// earlier request is answered, and no later message is looked at until kv-stored has
/// acknowledged a `subscribe`.
///
/// Everything here runs on the event loop: no locks, no thread hops on the request path.
final class WebSocketSessionHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    /// Whole frames (`ServerFrame`): kv-ws frames what it sends itself.
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var limits: Limits
        var pingInterval: TimeAmount
        /// How long a client may take to answer our close frame before it is cut off.
        var closeTimeout: TimeAmount = .seconds(2)
        /// Requests of one connection waiting for kv-stored at once; past this, reading pauses.
        var maxInFlight = 128
        /// Bytes of messages read but not yet answered (waiting in the inbox or for kv-stored);
        /// past this, reading pauses. One message is always taken, whatever its size.
        var maxPendingBytes = 16 << 20
        /// Keys and prefixes one connection may watch at once; a `subscribe` past it gets an `error`.
        var maxSubscriptions = 10_000
        /// Prefixes one connection may watch at once (each costs the store a lookup per change
        /// of a key of its length); a prefix `subscribe` past it gets an `error`.
        var maxPrefixSubscriptions = 100
    }

    /// Who the connection is (docs/access.md): what it presented and what that grants now.
    struct Access {
        var control: AccessControl
        var refusals: RefusalLog
        /// What the client presented at the upgrade or in its last `auth` message; presented
        /// again at each reload, so a revoked token loses the connection at once.
        var credential: Credential
        /// nil while the connection has no usable identity (no credentials and no anonymous
        /// rules): only `auth` is served then.
        var identity: Identity?

        static func open(logger: Logger) -> Access {
            Access(control: AccessControl(), refusals: RefusalLog(logger: logger), credential: .none, identity: .open)
        }
    }

    private let session: Session
    private let requests: any StoreRequests
    private let hub: any Subscriptions
    private let settings: Settings
    private let logger: Logger

    private var context: ChannelHandlerContext?
    /// Where frames are written: `FrameOutlet`'s context, past the pipeline's frame encoder
    /// (this handler's own context in a pipeline without one).
    private var outlet: ChannelHandlerContext?
    /// Which message goes next, and when to read (the ordering rules).
    private var ordering: SessionOrdering
    /// Pings, the close handshake, errors (the closing rules).
    private var closing = SessionClosing()
    /// Re-entered from a reply that completes at once, `pump` returns and lets the outer call carry on.
    private var pumping = false
    private var access: Access
    private var subscriptions = TopicSet()
    /// Closes the connection when its JWT expires.
    private var expiryTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var pinger: RepeatedTask?

    init(session: Session, requests: any StoreRequests, hub: any Subscriptions, settings: Settings, access: Access? = nil, logger: Logger) {
        self.access = access ?? .open(logger: logger)
        self.session = session
        self.requests = requests
        self.hub = hub
        self.settings = settings
        self.ordering = SessionOrdering(maxInFlight: settings.maxInFlight, maxPendingBytes: settings.maxPendingBytes)
        var logger = logger
        logger[metadataKey: "connection.id"] = "\(session.id)"
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outlet = (try? context.pipeline.syncOperations.context(handlerType: FrameOutlet.self)) ?? context
        session.watch(as: access.identity)
        logger.debug("websocket opened")
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        pinger = context.eventLoop.scheduleRepeatedTask(initialDelay: settings.pingInterval, delay: settings.pingInterval) { _ in
            bound.value.ping()
        }
        session.attach(self)
        armExpiry()
        WSMetrics.connections.increment()
        WSMetrics.connectionsTotal.increment()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pinger?.cancel()
        closeTimer?.cancel()
        expiryTimer?.cancel()
        for topic in subscriptions { hub.unsubscribe(topic, session) }
        subscriptions.removeAll()
        WSMetrics.connections.decrement()
        WSMetrics.closes[closing.reason ?? .dropped]?.increment()
        let conflated = session.conflatedCount
        session.finish()
        if conflated > 0 {
            logger.info("websocket closed", metadata: ["kv.conflated": "\(conflated)"])
        } else {
            logger.debug("websocket closed")
        }
        self.context = nil
        outlet = nil
        context.fireChannelInactive()
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            guard !closing.closing else { return }
            let bytes = frame.length
            let (id, parsed) = ClientRequest.parse(Array(buffer: frame.unmaskedData), limits: settings.limits)
            WSMetrics.messageIn(try? parsed.get().message)
            switch parsed {
            case .success(let request): ordering.received(.message(request, bytes: bytes))
            case .failure(let error):
                logger.debug("bad message", metadata: ["error": "\(error.message)"])
                ordering.received(.rejected(error.message, id: id, bytes: bytes))
            }
            pump()
        case .binary:
            guard !closing.closing else { return }
            WSMetrics.messageIn(nil)
            ordering.received(.rejected("messages must be text frames holding JSON", id: nil, bytes: 0))
            pump()
        case .ping:
            if let pong = closing.pingReceived(frame.unmaskedData, writable: context.channel.isWritable) {
                writeFrame(ServerFrame.frame(.pong, pong))
            }
        case .pong:
            closing.pongReceived()
        case .connectionClose:
            receivedClose(context, frame)
        default:
            break  // continuations are joined by NIOWebSocketFrameAggregator; nothing else is valid
        }
    }

    /// Handles queued messages in order, as far as `ordering` allows.
    private func pump() {
        guard !pumping else { return }
        pumping = true
        defer { pumping = false }
        while !closing.closing, let next = ordering.next(domain: { requests.orderingDomain(ofKey: $0.key) }) {
            switch next {
            case .rejected(let message, let id, _): session.send(frame: ServerMessage.error(message).framed(.init(id: id)))
            case .message(let request, _):
                if case .auth(let token) = request.message {
                    authenticate(Credential.token(token), id: request.id)
                } else if let refusal = refusal(request) {
                    session.send(frame: refusal)
                } else {
                    request.isVersioned ? handleVersioned(request) : handle(request.message)
                }
            }
        }
        if ordering.resumeRead(), let context { context.read() }
    }

    // MARK: - Access control

    /// The `error` for a request the connection's identity may not make (counted and logged),
    /// or nil when it may. Checked when the request is taken, so a reload or an `auth` applies
    /// to every later message.
    private func refusal(_ request: ClientRequest) -> ByteBuffer? {
        let operation: AccessOperation, name: String
        switch request.message {
        case .get: (operation, name) = (.read, "get")
        case .set: (operation, name) = (.write, "set")
        case .delete: (operation, name) = (.delete, "delete")
        case .subscribe: (operation, name) = (.subscribe, "subscribe")
        case .list: (operation, name) = (.read, "list")
        case .unsubscribe, .auth: return nil
        }
        let key = request.message.key
        let byPrefix = switch request.message {
        case .list, .subscribe(.prefix): true
        default: false
        }
        let status: Int, message: String
        if let identity = access.identity {
            let refusal = byPrefix ? identity.refusal(operation, prefix: key) : identity.refusal(operation, key: key)
            guard let refusal else { return nil }
            (status, message) = refusal.needsCredentials
                ? (401, "unauthorized: \(refusal.reason); send an auth message")
                : (403, refusal.reason)
        } else {
            (status, message) = (401, "unauthorized: this service needs a token; send {\"type\":\"auth\",\"payload\":{\"token\":…}} first")
        }
        WSMetrics.refused(operation: name, status: status)
        access.refusals.refused(status: status, operation: name, identity: access.identity?.id ?? "none",
                                key: String(decoding: key.prefix(200), as: UTF8.self), reason: message)
        return ServerMessage.error(message).framed(.init(id: request.id, code: status == 401 ? "unauthorized" : "forbidden"))
    }

    /// An `auth` message: later messages wait until the token is checked. A refused token is
    /// an `error` and leaves the connection as it was; an accepted one replaces its identity.
    private func authenticate(_ credential: Credential, id: [UInt8]?) {
        ordering.wait(for: .authentication)
        let control = access.control
        let generation = control.generation
        control.authenticate(credential, on: session.eventLoop).assumeIsolated().whenSuccess { authentication in
            self.ordering.opened()
            switch authentication {
            case .refused(let reason):
                WSMetrics.refused(operation: "auth", status: 401)
                self.access.refusals.refused(status: 401, operation: "auth", identity: "invalid-token", key: "-", reason: reason)
                self.session.send(frame: ServerMessage.error("unauthorized: \(reason)").framed(.init(id: id, code: "unauthorized")))
            case .identity(let identity):
                self.access.credential = credential
                self.become(identity)
                self.session.send(frame: ServerMessage.authenticated(identity: identity.id, expiresAt: identity.expiresAt).framed(.init(id: id)))
                // Checked under rules a reload has replaced meanwhile: checked again under the new.
                if control.generation != generation { self.reauthorize() }
            }
            self.pump()
        }
    }

    /// The access file was reloaded: the credentials the connection presented are looked at
    /// again. Revoked or expired: closed with 4401. Still valid, but no longer allowed to watch
    /// one of its keys: closed with 4403. Otherwise it carries on under the new rules.
    func reauthorize() {
        guard context != nil, !closing.closing else { return }
        let control = access.control
        let credential = access.credential
        control.authenticate(credential, on: session.eventLoop).assumeIsolated().whenSuccess { authentication in
            // An `auth` message changed the credentials meanwhile: look at those instead.
            guard self.access.credential == credential else {
                self.reauthorize()
                return
            }
            switch authentication {
            case .refused(let reason):
                if self.access.identity == nil { return }  // it had no identity to lose
                self.withdraw(4401, "unauthorized: \(reason)")
            case .identity(let identity):
                self.become(identity)
            }
        }
    }

    /// Takes `identity` for the connection, unless it may no longer watch a key or prefix it
    /// watches (a prefix it may now watch only part of goes on with that part).
    private func become(_ identity: Identity) {
        if let topic = subscriptions.first(where: { !Self.may(identity, watch: $0) }) {
            let shown = String(decoding: JSONText.quoted(String(decoding: topic.bytes.prefix(100), as: UTF8.self)), as: UTF8.self)
            withdraw(4403, "forbidden: \(identity.id) may no longer subscribe to \(topic.isPrefix ? "prefix" : "key") \(shown)")
            return
        }
        access.identity = identity
        session.watch(as: identity)
        armExpiry()
    }

    /// Whether `identity` may watch `topic`: a key, or some key under a prefix.
    private static func may(_ identity: Identity?, watch topic: Topic<[UInt8]>) -> Bool {
        guard let identity else { return false }
        switch topic {
        case .key(let key): return identity.allows(.subscribe, key: key)
        case .prefix(let prefix): return identity.coverage(.subscribe, prefix: prefix) != .none
        }
    }

    /// A connection whose identity has an expiry is closed then (4401).
    private func armExpiry() {
        expiryTimer?.cancel()
        expiryTimer = nil
        guard let identity = access.identity, let expiresAt = identity.expiresAt, let context else { return }
        // At most a day ahead (a far `exp` would overflow a TimeAmount); then it looks again.
        let remaining = min(max(0, expiresAt - access.control.now()), 86_400_000)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        expiryTimer = context.eventLoop.scheduleTask(in: .milliseconds(remaining)) {
            let handler = bound.value
            if let refusal = identity.timeRefusal(now: handler.access.control.now()) {
                handler.withdraw(4401, "unauthorized: \(refusal)")
            } else {
                handler.armExpiry()
            }
        }
    }

    private func withdraw(_ code: UInt16, _ reason: String) {
        logger.info("closing a websocket whose access was withdrawn", metadata: [
            "kv.identity": "\(access.identity?.id ?? "none")", "reason": "\(reason)", "close.code": "\(code)",
        ])
        sendClose(.unknown(code), reason: reason, because: .accessWithdrawn)
    }

    private func handle(_ message: ClientMessage) {
        switch message {
        case .get(let key):
            request(.get(ByteBuffer(bytes: key))) { session, reply in
                switch reply {
                case .success(let value?): session.send(.value(key: key, value: Array(value.readableBytesView)))
                case .success(nil): session.send(.noValue(key: key))
                case .failure(let error): session.send(.error(error.message))
                }
            }
        case .set(let key, let value, let ttl):
            request(.set(ByteBuffer(bytes: key), value: ByteBuffer(bytes: value), ttl: ttl)) { session, reply in
                if case .failure(let error) = reply { session.send(.error(error.message)) }
            }
        case .delete(let key):
            request(.delete(ByteBuffer(bytes: key))) { session, reply in
                if case .failure(let error) = reply { session.send(.error(error.message)) }
            }
        case .subscribe(let topic):
            subscribe(topic, catchUp: nil, id: nil)
        case .unsubscribe(let topic):
            guard subscriptions.remove(topic) != nil else { return }
            hub.unsubscribe(topic, session)
        case .list(let query):
            list(query, id: nil)
        case .auth:
            break  // taken in `pump`
        }
    }

    /// One page of keys; with access rules that cover only part of the prefix, the keys the
    /// connection may not read are left out (the rules in force when the page arrives).
    private func list(_ query: ListingQuery, id: [UInt8]?) {
        request(.list(query)) { session, reply in
            switch reply {
            case .success(let page):
                let shown = self.access.identity?.readable(page, under: query.prefix) ?? page.filtered { _ in false }
                session.send(frame: ServerMessage.list(shown, values: query.values, now: self.access.control.now()).framed(.init(id: id)))
            case .failure(let error):
                session.send(frame: ServerMessage.error(error.message).framed(.init(id: id)))
            }
        }
    }

    /// Holds every later message until kv-stored has acknowledged the subscription (and, for a
    /// versioned one, the session has caught up).
    private func subscribe(_ topic: Topic<[UInt8]>, catchUp: SubscriptionHub.CatchUp?, id: [UInt8]?) {
        guard subscriptions.contains(topic) || subscriptions.count < settings.maxSubscriptions else {
            let message = "subscription limit reached: this connection already watches \(subscriptions.count) keys and prefixes (the limit); unsubscribe from some first"
            session.send(frame: ServerMessage.error(message).framed(.init(id: id)))
            return
        }
        guard !topic.isPrefix || subscriptions.contains(topic) || subscriptions.prefixCount < settings.maxPrefixSubscriptions else {
            let message = "prefix subscription limit reached: this connection already watches \(subscriptions.prefixCount) prefixes (the limit); unsubscribe from some first"
            session.send(frame: ServerMessage.error(message).framed(.init(id: id)))
            return
        }
        ordering.wait(for: .subscription)
        hub.subscribe(topic, session, catchUp: catchUp).hop(to: session.eventLoop).assumeIsolated().whenComplete { result in
            self.ordering.opened()
            switch result {
            case .success where self.context == nil:
                // The connection closed while kv-stored was acknowledging: channelInactive has
                // already dropped the subscriptions it knew of, so this one goes now, or it
                // would stay in the hub and in kv-stored for good.
                self.hub.unsubscribe(topic, self.session)
            case .success where !Self.may(self.access.identity, watch: topic):
                // The rules changed (a reload or an auth) while kv-stored was acknowledging.
                self.hub.unsubscribe(topic, self.session)
                self.session.send(frame: ServerMessage.error("forbidden: no longer allowed to subscribe to this \(topic.isPrefix ? "prefix" : "key")").framed(.init(id: id, code: "forbidden")))
            case .success: self.subscriptions.insert(topic)
            case .failure(let error): self.session.send(frame: ServerMessage.error(Self.message(error)).framed(.init(id: id)))
            }
            self.pump()
        }
    }

    /// A message with opt-in fields (docs/websocket.md): replies echo its `id` and carry `rev`;
    /// writes and deletes use kv-stored's versioned commands, which check `ifRev` and write in
    /// one atomic step.
    private func handleVersioned(_ request: ClientRequest) {
        let id = request.id
        let precondition: WritePrecondition = request.ifRev.map { $0 == 0 ? .absent : .revision(in: [$0]) } ?? .none
        switch request.message {
        case .get(let key):
            self.request(.sync(ByteBuffer(bytes: key), since: nil, epoch: nil, initial: true)) { session, reply in
                switch reply {
                case .success(let sync):
                    let state = sync.changes.first
                    let envelope = ServerMessage.Envelope(id: id, rev: state?.revision)
                    if let state, state.kind == .set, let value = state.value {
                        session.send(frame: ServerMessage.value(key: key, value: Array(value.readableBytesView)).framed(envelope))
                    } else {
                        session.send(frame: ServerMessage.noValue(key: key).framed(envelope))
                    }
                case .failure(let error):
                    session.send(frame: ServerMessage.error(error.message).framed(.init(id: id)))
                }
            }
        case .set(let key, let value, let ttl):
            self.request(.versionedSet(ByteBuffer(bytes: key), value: ByteBuffer(bytes: value), ttl: ttl, precondition: precondition)) { session, reply in
                Self.answerWrite(session, key: key, request: request, reply)
            }
        case .delete(let key):
            self.request(.versionedDelete(ByteBuffer(bytes: key), precondition: precondition)) { session, reply in
                Self.answerWrite(session, key: key, request: request, reply)
            }
        case .subscribe(let topic):
            guard !subscriptions.contains(topic) else {
                // Already subscribed (and up to date): just acknowledged.
                if let id { session.send(frame: Self.ok(topic).framed(.init(id: id, rev: hub.revision(of: topic, for: session)))) }
                return
            }
            subscribe(topic, catchUp: SubscriptionHub.CatchUp(id: id, initial: request.initial, since: request.since, epoch: request.epoch), id: id)
        case .unsubscribe(let topic):
            let revision = subscriptions.remove(topic) != nil ? hub.unsubscribe(topic, session) : 0
            if let id { session.send(frame: Self.ok(topic).framed(.init(id: id, rev: revision))) }
        case .list(let query):
            list(query, id: id)
        case .auth:
            break  // taken in `pump`
        }
    }

    private static func ok(_ topic: Topic<[UInt8]>) -> ServerMessage {
        switch topic {
        case .key(let key): .ok(key: key)
        case .prefix(let prefix): .okPrefix(prefix: prefix)
        }
    }

    /// `ok` (with an id) or a `conflict` error naming the key's current revision.
    private static func answerWrite(_ session: Session, key: [UInt8], request: ClientRequest, _ result: Result<WriteResult, KVError>) {
        switch result {
        case .success(.applied(let revision)):
            if let id = request.id { session.send(frame: ServerMessage.ok(key: key).framed(.init(id: id, rev: revision))) }
        case .success(.conflict(let current)):
            let name = JSONText.quoted(String(decoding: key, as: UTF8.self))
            let expected = request.ifRev.map { $0 == 0 ? "absent" : "at revision \($0)" } ?? "as required"
            let found = current == 0 ? "absent" : "at revision \(current)"
            let message = "conflict: key \(String(decoding: name, as: UTF8.self)) is \(found), not \(expected); nothing was written"
            session.send(frame: ServerMessage.error(message).framed(.init(id: request.id, rev: current, code: "conflict")))
        case .failure(let error):
            session.send(frame: ServerMessage.error(error.message).framed(.init(id: request.id)))
        }
    }

    /// Pipelines a command on this event loop's kv-stored connection, counting it until its
    /// reply, which `answer` turns into messages for the client.
    private func request<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, answer: @escaping (Session, Result<Reply, KVError>) -> Void) {
        let bytes = command.operation.payloadBytes
        ordering.sent(bytes: bytes)
        requests.send(command) { reply in
            self.ordering.answered(bytes: bytes)
            answer(self.session, reply)
            self.pump()
        }
    }

    private static func message(_ error: any Error) -> String {
        KVError.storeFailure(error).message
    }

    /// Reading pauses while too many messages or bytes wait, so a client cannot queue unbounded work.
    func read(context: ChannelHandlerContext) {
        if ordering.readRequested() { context.read() }
    }

    // MARK: - Writing

    /// Writes a whole frame (`ServerFrame`) where frames go, `outlet`; `flush: false` leaves it
    /// for a later flush.
    private func writeFrame(_ frame: ByteBuffer, flush: Bool = true, promise: EventLoopPromise<Void>? = nil) {
        guard let outlet else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        outlet.write(wrapOutboundOut(frame), promise: promise)
        if flush { outlet.flush() }
    }

    /// Writes queued messages while the socket takes them, then flushes once.
    func drain() {
        guard let context, !closing.closing else { return }
        var wrote = false
        while context.channel.isWritable {
            let messages = session.take(maxBytes: 256 << 10)
            if messages.isEmpty { break }
            for message in messages {
                writeFrame(message.frame, flush: false)
            }
            WSMetrics.messagesOut.increment(by: messages.count)
            wrote = true
        }
        if wrote { outlet?.flush() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let pong = closing.writable() {
            writeFrame(ServerFrame.frame(.pong, pong))
        }
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Pings and closing

    private func ping() {
        guard let context else { return }
        switch closing.pingDue() {
        case .none:
            break
        case .send:
            writeFrame(ServerFrame.frame(.ping, ByteBuffer()))
        case .cutOff:
            logger.info("closing a websocket whose client did not answer a ping")
            context.close(promise: nil)
        }
    }

    /// Sends a close frame (queued messages are dropped) and cuts the connection off if the
    /// client has not answered within `closeTimeout`: one that stopped reading never does.
    func startClose(_ reason: Session.Closing) {
        switch reason {
        case .outputLimit:
            guard !closing.closing else { return }
            logger.warning("closing a websocket whose client does not keep up (output queue over its limit)")
            sendClose(.policyViolation, reason: "output queue limit exceeded", because: .outputLimit)
        case .shutdown:
            sendClose(.goingAway, reason: "server shutting down", because: .shutdown)
        }
    }

    private func sendClose(_ code: WebSocketErrorCode, reason: String, because: WSMetrics.CloseReason) {
        guard context != nil, closing.close(because) else { return }
        writeClose(code, reason: reason)
    }

    private func writeClose(_ code: WebSocketErrorCode, reason: String) {
        guard let context else { return }
        session.finish()
        writeFrame(ServerFrame.close(code, reason: reason))
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        closeTimer = context.eventLoop.scheduleTask(in: settings.closeTimeout) { bound.value.close(promise: nil) }
    }

    /// The client closes (we answer with its code and close), or answers our close.
    private func receivedClose(_ context: ChannelHandlerContext, _ frame: WebSocketFrame) {
        guard case .answer = closing.clientClosed() else {
            context.close(promise: nil)
            return
        }
        session.finish()
        var payload = frame.unmaskedData
        let code = payload.readWebSocketErrorCode() ?? .normalClosure
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let written = context.eventLoop.makePromise(of: Void.self)
        writeFrame(ServerFrame.close(code, reason: ""), promise: written)
        written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            session.close(.shutdown)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch closing.errorCaught(error) {
        case .ignore:
            logger.debug("websocket error while closing", metadata: ["error": "\(error)"])
        case .sendClose(let code, let reason):
            writeClose(code, reason: reason)
        case .closeNow:
            logger.debug("websocket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }
}
