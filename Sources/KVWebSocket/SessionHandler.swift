import Atomics
import KVClient
import KVCore
import Logging
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

    public func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let session = Session(id: Self.nextID.wrappingIncrementThenLoad(ordering: .relaxed), limits: outputLimits)
        var logger = self.logger
        logger[metadataKey: "connection.id"] = "\(session.id)"
        registry.add(session)
        logger.debug("websocket opened")
        var subscriptions = Set<[UInt8]>()
        defer {
            for key in subscriptions { hub.unsubscribe(key, session) }
            session.finish()
            registry.remove(session)
            logger.debug("websocket closed", metadata: ["kv.conflated": "\(session.conflatedCount)"])
        }
        let writerLogger = logger
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await Self.writeLoop(session, outbound, writerLogger) }
            do {
                for try await message in inbound.messages(maxSize: Self.maxMessageBytes(for: limits)) {
                    switch message {
                    case .text(let text):
                        await handle(Array(text.utf8), session, &subscriptions)
                    case .binary:
                        session.send(.error("messages must be text frames holding JSON"))
                    }
                }
            } catch {
                session.finish()
                throw error  // WSCore closes with the right code (1009 for an oversize message)
            }
            session.finish()
            try await group.waitForAll()
        }
    }

    private func handle(_ text: [UInt8], _ session: Session, _ subscriptions: inout Set<[UInt8]>) async {
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
                guard !subscriptions.contains(key) else { return }
                try await hub.subscribe(key, session)
                subscriptions.insert(key)
            case .unsubscribe(let key):
                guard subscriptions.remove(key) != nil else { return }
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
                if let closing {
                    switch closing {
                    case .outputLimit:
                        logger.warning("closing a websocket whose client does not keep up (output queue over its limit)",
                                       metadata: ["connection.id": "\(session.id)"])
                        try? await outbound.close(.policyViolation, reason: "output queue limit exceeded")
                    case .shutdown:
                        try? await outbound.close(.goingAway, reason: "server shutting down")
                    }
                    return
                }
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
