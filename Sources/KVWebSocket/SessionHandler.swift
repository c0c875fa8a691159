import Atomics
import KVClient
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import WSCore

/// Runs one WebSocket connection: its messages are handled one at a time, in the order sent
/// (a `subscribe` is acknowledged by kv-stored before the next message is looked at), while a
/// writer task drains the session's queue to the socket.
public struct SessionHandler: Sendable {
    let requests: StoreConnection
    let hub: SubscriptionHub
    let registry: SessionRegistry
    let limits: Limits
    let outputLimits: OutputLimits
    let logger: Logger
    private static let nextID = ManagedAtomic<Int>(0)

    /// Largest WebSocket message accepted: a value at the limit plus a key at the limit written
    /// with JSON escapes (up to 6 characters per byte) and the envelope.
    public static func maxMessageBytes(for limits: Limits) -> Int {
        limits.maxValueBytes + limits.maxKeyBytes * 6 + (64 << 10)
    }

    public init(requests: StoreConnection, hub: SubscriptionHub, registry: SessionRegistry, limits: Limits, outputLimits: OutputLimits, logger: Logger) {
        self.requests = requests
        self.hub = hub
        self.registry = registry
        self.limits = limits
        self.outputLimits = outputLimits
        self.logger = logger
    }

    /// A session for a connection that is being upgraded. It is registered before the client
    /// sees the upgrade response, so a shutdown can never miss it (and closes it with 1001
    /// at once if one is under way); it leaves the registry when `channel` closes, whether or
    /// not the upgrade completed.
    public func openSession(on channel: any Channel) -> Session {
        let id = Self.nextID.wrappingIncrementThenLoad(ordering: .relaxed)
        let logger = self.logger
        let session = Session(id: id, limits: outputLimits) { dropped in
            logger.info("a client does not keep up; keeping only the newest change per key for it",
                        metadata: ["connection.id": "\(id)", "kv.conflated": "\(dropped)"])
        }
        registry.add(session)
        let registry = self.registry
        channel.closeFuture.whenComplete { _ in registry.remove(session) }
        return session
    }

    public func run(session: Session, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        var logger = self.logger
        logger[metadataKey: "connection.id"] = "\(session.id)"
        logger.debug("websocket opened")
        // Touched by the reader task only; boxed because that task is a child task.
        let subscriptions = NIOLockedValueBox(Set<[UInt8]>())
        defer {
            for key in subscriptions.withLockedValue({ $0 }) { hub.unsubscribe(key, session) }
            session.finish()
            registry.remove(session)
            let conflated = session.conflatedCount
            if conflated > 0 {
                logger.info("websocket closed", metadata: ["kv.conflated": "\(conflated)"])
            } else {
                logger.debug("websocket closed")
            }
        }
        let writerLogger = logger
        let maxMessage = Self.maxMessageBytes(for: limits)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await Self.writeLoop(session, outbound, writerLogger) }
            group.addTask {
                for try await message in inbound.messages(maxSize: maxMessage) {
                    switch message {
                    case .text(let text):
                        await handle(Array(text.utf8), session, subscriptions)
                    case .binary:
                        session.send(.error("messages must be text frames holding JSON"))
                    }
                }
                session.finish()
            }
            // Closes are sent from here, not by the writer: a client that does not read leaves the
            // writer suspended in a write, so close frames are sent unstructured (cancelling this
            // group must not stop them) and a client that never answers is cut off by throwing,
            // which cancels the stuck writer; WSCore then drops the connection after its close timeout.
            group.addTask {
                for await reason in session.closeRequests {
                    switch reason {
                    case .shutdown:
                        Task { try? await outbound.close(.goingAway, reason: "server shutting down") }
                        // A client that reads answers the close, its reader ends and this task is
                        // cancelled; one that does not is cut off here.
                        try await Task.sleep(for: .seconds(2))
                        throw ClientDidNotClose()
                    case .outputLimit:
                        writerLogger.warning("closing a websocket whose client does not keep up (output queue over its limit)",
                                             metadata: ["connection.id": "\(session.id)"])
                        Task { try? await outbound.close(.policyViolation, reason: "output queue limit exceeded") }
                        throw OutputLimitExceeded()
                    }
                }
            }
            do {
                // The reader ending (the client closed, or answered our close) ends the session;
                // the writer and the close task are then cancelled.
                try await group.next()
                group.cancelAll()
            } catch {
                session.finish()
                throw error  // WSCore closes (1009 for an oversize message) and drops the connection
            }
        }
    }

    struct ClientDidNotClose: Error {}
    struct OutputLimitExceeded: Error {}

    private func handle(_ text: [UInt8], _ session: Session, _ subscriptions: NIOLockedValueBox<Set<[UInt8]>>) async {
        let message: ClientMessage
        do throws(KVError) {
            message = try ClientMessage.parse(text, limits: limits)
        } catch {
            logger.debug("bad message", metadata: ["error": "\(error.message)", "connection.id": "\(session.id)"])
            return session.send(.error(error.message))
        }
        do throws(KVError) {
            switch message {
            case .get(let key):
                if let value = try await requests.get(ByteBuffer(bytes: key)) {
                    session.send(.value(key: key, value: Array(value.readableBytesView)))
                } else {
                    session.send(.noValue(key: key))
                }
            case .set(let key, let value, let ttl):
                try await requests.set(ByteBuffer(bytes: key), value: ByteBuffer(bytes: value), ttl: ttl)
            case .delete(let key):
                try await requests.delete(ByteBuffer(bytes: key))
            case .subscribe(let key):
                guard !subscriptions.withLockedValue({ $0.contains(key) }) else { return }
                try await hub.subscribe(key, session)
                subscriptions.withLockedValue { _ = $0.insert(key) }
            case .unsubscribe(let key):
                guard subscriptions.withLockedValue({ $0.remove(key) }) != nil else { return }
                hub.unsubscribe(key, session)
            }
        } catch {
            session.send(.error(error.message))
        }
    }

    /// Writes queued messages while the client takes them; closes on overflow or shutdown.
    private static func writeLoop(_ session: Session, _ outbound: WebSocketOutboundWriter, _ logger: Logger) async {
        for await _ in session.wakeups {
            while true {
                let (messages, closing) = session.next(maxBytes: 256 << 10)
                // The close-request task sends the close frame; the writer stops writing but
                // stays until the session ends, so it does not end the session early.
                if closing != nil { break }
                if messages.isEmpty { break }
                do {
                    for message in messages {
                        try await outbound.write(.text(String(decoding: message.text, as: UTF8.self)))
                    }
                } catch {
                    return  // the connection is gone
                }
            }
        }
    }
}
