import KVClient
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// kv-ws's subscriptions: one kv-stored subscription per key for the whole process, however
/// many WebSocket sessions watch it (reference-counted, dropped with the last watcher), and the
/// routing of each change to those sessions.
///
/// Routing happens synchronously on the store connection's event loop, in the order kv-stored
/// sent the changes, so every session sees one key's changes in revision order.
public final class SubscriptionHub: Sendable {
    private struct Watch: Sendable {
        var sessions: [Int: Session] = [:]
        /// Completes once kv-stored has acknowledged the subscription.
        var acknowledged: EventLoopFuture<Void>
    }

    private let watches = NIOLockedValueBox<[ByteBuffer: Watch]>([:])
    private let connection: StoreConnection
    private let logger: Logger

    public init(connection makeConnection: (@escaping @Sendable (StoreConnectionEvent) -> Void) -> StoreConnection, logger: Logger) {
        let router = NIOLockedValueBox<SubscriptionHub?>(nil)
        self.connection = makeConnection { event in router.withLockedValue { $0 }?.route(event) }
        self.logger = logger
        router.withLockedValue { $0 = self }
    }

    /// Adds `session` as a watcher of `key`; the future completes once kv-stored has acknowledged
    /// the subscription, so every change applied after that reaches the session.
    func subscribe(_ key: [UInt8], _ session: Session) -> EventLoopFuture<Void> {
        let keyBuffer = ByteBuffer(bytes: key)
        let acknowledged = watches.withLockedValue { watches -> EventLoopFuture<Void> in
            var watch = watches[keyBuffer] ?? Watch(acknowledged: connection.subscribeFuture(keyBuffer))
            watch.sessions[session.id] = session
            watches[keyBuffer] = watch
            return watch.acknowledged
        }
        return acknowledged.flatMapError { error in
            // kv-stored refused or is unreachable: nobody stays subscribed on a failed subscription.
            self.watches.withLockedValue { watches in
                if let watch = watches[keyBuffer], watch.acknowledged === acknowledged { watches[keyBuffer] = nil }
            }
            return acknowledged.eventLoop.makeFailedFuture((error as? KVError) ?? KVError(.storageUnavailable, "storage unavailable: \(error)"))
        }
    }

    /// Removes `session` from `key`'s watchers, dropping the kv-stored subscription with the last one.
    func unsubscribe(_ key: [UInt8], _ session: Session) {
        let keyBuffer = ByteBuffer(bytes: key)
        watches.withLockedValue { watches in
            guard watches[keyBuffer]?.sessions.removeValue(forKey: session.id) != nil else { return }
            if watches[keyBuffer]?.sessions.isEmpty == true {
                watches[keyBuffer] = nil
                connection.unsubscribeFuture(keyBuffer)
            }
        }
    }

    /// Closes the subscription connection (at shutdown).
    func close() async { await connection.close() }

    /// The number of keys with a kv-stored subscription (one per key, whatever the watchers).
    public var keyCount: Int { watches.withLockedValue { $0.count } }

    private func route(_ event: StoreConnectionEvent) {
        switch event {
        case .change(let change):
            let sessions = watches.withLockedValue { $0[change.key].map { Array($0.sessions.values) } } ?? []
            guard !sessions.isEmpty else { return }
            let key = Array(change.key.readableBytesView)
            let message: ServerMessage = change.kind == .set
                ? .value(key: key, value: change.value.map { Array($0.readableBytesView) } ?? Array("null".utf8))
                : .noValue(key: key)
            let text = message.encoded()  // encoded once, shared by every watcher
            for session in sessions { session.send(text: text, conflationKey: key) }
        case .disconnected:
            tellEveryWatcher("lost the connection to storage; changes of subscribed keys may be missed until it returns")
        case .restored:
            tellEveryWatcher("storage is reachable again and subscriptions are restored; changes made during the outage may have been missed")
        }
    }

    private func tellEveryWatcher(_ message: String) {
        let sessions = watches.withLockedValue { watches in
            Dictionary(watches.values.flatMap { $0.sessions.map { ($0.key, $0.value) } }, uniquingKeysWith: { a, _ in a }).values
        }
        logger.warning("\(message)", metadata: ["kv.sessions": "\(sessions.count)"])
        for session in sessions { session.send(.error(message)) }
    }
}
