import KVClient
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RESP

/// kv-ws's subscriptions: one kv-stored subscription per key for the whole process, however
/// many WebSocket sessions watch it (reference-counted, dropped with the last watcher), and the
/// routing of each change to those sessions.
///
/// Routing happens synchronously on the store connection's event loop, in the order kv-stored
/// sent the changes, so every session sees one key's changes in revision order.
///
/// A *versioned* watcher (a subscription with `id`, `initial` or `since`) is exact: its session
/// is sent each change with its `rev`, never conflated, and never one it already has. It
/// catches up with `KVSYNC` once kv-stored has acknowledged the subscription (the current
/// state, or the changes it missed, or a reset); changes that arrive meanwhile are held and
/// sent after the catch-up, those at or below its revision dropped. When the connection to
/// kv-stored is lost, versioned watchers hold again, and catch up once it is back (a replay
/// from kv-stored's history, or a reset): never a silent gap.
public final class SubscriptionHub: Sendable {
    private struct Watcher: Sendable {
        let session: Session
        let versioned: Bool
        /// Changes held while the session catches up (versioned watchers).
        var held: [StoreChange]?
        /// The revision of the last change the session was sent of this key, or caught up to (versioned watchers).
        var revision: UInt64 = 0
        /// The data's epoch at the last catch-up (versioned watchers).
        var epoch = ""
    }

    /// What a versioned subscription asks for (`subscribe` with `id`, `initial`, `since`).
    struct CatchUp: Sendable {
        var id: [UInt8]?
        var initial = false
        var since: UInt64?
        var epoch: String?
    }

    private struct Watch: Sendable {
        var watchers: [Int: Watcher] = [:]
        /// The revision of the last change sent to the seed watchers (all get every change).
        var seedRevision: UInt64 = 0
        /// Completes once kv-stored has acknowledged the subscription.
        var acknowledged: EventLoopFuture<Void>
    }

    private let watches = NIOLockedValueBox<[ByteBuffer: Watch]>([:])
    private let connection: any EventLoopStore
    private let logger: Logger

    public init(connection makeConnection: (@escaping @Sendable (StoreConnectionEvent) -> Void) -> any EventLoopStore, logger: Logger) {
        let router = NIOLockedValueBox<SubscriptionHub?>(nil)
        self.connection = makeConnection { event in router.withLockedValue { $0 }?.route(event) }
        self.logger = logger
        router.withLockedValue { $0 = self }
    }

    /// Adds `session` as a watcher of `key`; the future completes once kv-stored has acknowledged
    /// the subscription, so every change applied after that reaches the session. With
    /// `catchUp`, the watcher is versioned, and the future completes once it has caught up: the
    /// `ok` (with an id), then the state or the missed changes, are in the session's queue.
    func subscribe(_ key: [UInt8], _ session: Session, catchUp: CatchUp?) -> EventLoopFuture<Void> {
        let keyBuffer = ByteBuffer(bytes: key)
        let acknowledged = watches.withLockedValue { watches -> EventLoopFuture<Void> in
            var watch = watches[keyBuffer] ?? {
                WSMetrics.storeSubscriptions.increment()
                return Watch(acknowledged: connection.future(.subscribe(keyBuffer)))
            }()
            if watch.watchers.updateValue(Watcher(session: session, versioned: catchUp != nil, held: catchUp != nil ? [] : nil), forKey: session.id) == nil {
                WSMetrics.subscriptions.increment()
            }
            watches[keyBuffer] = watch
            return watch.acknowledged
        }
        let subscribed = acknowledged.flatMapError { error in
            // kv-stored refused or is unreachable: nobody stays subscribed on a failed subscription.
            self.watches.withLockedValue { watches in
                if let watch = watches[keyBuffer], watch.acknowledged === acknowledged {
                    watches[keyBuffer] = nil
                    WSMetrics.subscriptions.decrement(by: Double(watch.watchers.count))
                    WSMetrics.storeSubscriptions.decrement()
                }
            }
            return acknowledged.eventLoop.makeFailedFuture(KVError.storeFailure(error))
        }
        guard let catchUp else { return subscribed }
        return subscribed.flatMap { () -> EventLoopFuture<Void> in
            // After the acknowledgement: every change after the catch-up's revision reaches the hub.
            self.sync(keyBuffer, catchUp).map { reply in self.caughtUp(keyBuffer, session, reply, catchUp) }
        }.flatMapErrorThrowing { error in
            self.unsubscribe(key, session)
            throw error
        }
    }

    private func sync(_ key: ByteBuffer, _ catchUp: CatchUp) -> EventLoopFuture<SyncReply> {
        connection.future(.sync(key, since: catchUp.since, epoch: catchUp.epoch, initial: catchUp.initial))
    }

    /// Sends what `reply` says the session lacks (after the `ok`, for a request with an id), then
    /// the changes held meanwhile that come after it; the watcher goes live.
    private func caughtUp(_ key: ByteBuffer, _ session: Session, _ reply: SyncReply, _ catchUp: CatchUp) {
        let keyBytes = Array(key.readableBytesView)
        watches.withLockedValue { watches in
            guard var watcher = watches[key]?.watchers[session.id], let held = watcher.held else { return }
            if let id = catchUp.id {
                session.send(text: ServerMessage.ok(key: keyBytes).encoded(.init(id: id, rev: reply.revision, epoch: reply.epoch)))
            }
            for change in reply.changes {
                let message = Self.message(key: keyBytes, set: change.kind == .set, value: change.value)
                session.send(text: message.encoded(.init(rev: change.revision, reset: reply.mode == .reset)))
            }
            watcher.revision = reply.revision
            watcher.epoch = reply.epoch
            // (A held change without a revision, Redis's expiry, came before the catch-up's
            // state on the same connection, so that state already shows it.)
            for change in held where change.revision > watcher.revision {
                session.send(text: Self.message(for: change).encoded(.init(rev: change.revision)))
                watcher.revision = change.revision
            }
            watcher.held = nil
            watches[key]?.watchers[session.id] = watcher
        }
    }

    /// The revision of the last change of `key` the session was sent (or caught up to); 0 if none.
    func revision(of key: [UInt8], for session: Session) -> UInt64 {
        watches.withLockedValue { watches in
            guard let watch = watches[ByteBuffer(bytes: key)], let watcher = watch.watchers[session.id] else { return 0 }
            return watcher.versioned ? watcher.revision : watch.seedRevision
        }
    }

    /// Removes `session` from `key`'s watchers, dropping the kv-stored subscription with the last
    /// one. Returns the revision of the last change of `key` the session was sent.
    @discardableResult
    func unsubscribe(_ key: [UInt8], _ session: Session) -> UInt64 {
        let keyBuffer = ByteBuffer(bytes: key)
        return watches.withLockedValue { watches in
            guard let removed = watches[keyBuffer]?.watchers.removeValue(forKey: session.id) else { return 0 }
            WSMetrics.subscriptions.decrement()
            let revision = removed.versioned ? removed.revision : watches[keyBuffer]?.seedRevision ?? 0
            if watches[keyBuffer]?.watchers.isEmpty == true {
                watches[keyBuffer] = nil
                WSMetrics.storeSubscriptions.decrement()
                _ = connection.future(.unsubscribe(keyBuffer))
            }
            return revision
        }
    }

    /// Closes the subscription connection (at shutdown).
    func close() async { await connection.close() }

    private static func message(for change: StoreChange) -> ServerMessage {
        message(key: Array(change.key.readableBytesView), set: change.kind == .set, value: change.value)
    }

    /// `value` for a set, `no-value` for a deletion, an expiry or an absent state.
    private static func message(key: [UInt8], set: Bool, value: ByteBuffer?) -> ServerMessage {
        set ? .value(key: key, value: value.map { Array($0.readableBytesView) } ?? Array("null".utf8)) : .noValue(key: key)
    }

    private func route(_ event: StoreConnectionEvent) {
        switch event {
        case .change(let change):
            watches.withLockedValue { watches in
                // Read-only pass over the watchers (no copy of the dictionary: routing a change
                // to 1000 watchers must not cost 1000 dictionary writes); only exact watchers,
                // usually few, are updated afterwards.
                var updates: [(id: Int, watcher: Watcher)] = []
                do {
                    guard let watch = watches[change.key] else { return }
                    // Encoded at most once per form, shared by every watcher of that form.
                    var seedText: ByteBuffer?, versionedText: ByteBuffer?
                    let conflationKey = Array(change.key.readableBytesView)
                    for (id, watcher) in watch.watchers {
                        if watcher.held != nil {
                            var holding = watcher
                            holding.held?.append(change)
                            updates.append((id, holding))
                        } else if watcher.versioned {
                            // Revision 0: a change the store gives no revision (Redis's expiry);
                            // sent as it comes, without `rev`, and it moves no watcher's revision.
                            guard change.revision > watcher.revision || change.revision == 0 else { continue }
                            let text = versionedText ?? Self.message(for: change).encoded(.init(rev: change.revision == 0 ? nil : change.revision))
                            versionedText = text
                            // Never conflated: an exact subscriber that falls behind is closed and resumes.
                            watcher.session.send(text: text)
                            guard change.revision > 0 else { continue }
                            var sent = watcher
                            sent.revision = change.revision
                            updates.append((id, sent))
                        } else {
                            let text = seedText ?? Self.message(for: change).encoded()
                            seedText = text
                            watcher.session.send(text: text, conflationKey: conflationKey)
                        }
                    }
                }
                if change.revision > 0 { watches[change.key]?.seedRevision = change.revision }
                for (id, watcher) in updates { watches[change.key]?.watchers[id] = watcher }
            }
        case .disconnected:
            interrupted(nil, "lost the connection to storage; changes of subscribed keys may be missed until it returns")
        case .interrupted(let keys):
            interrupted(Set(keys), "lost the storage node of some subscribed keys; their changes may be missed until it returns")
        case .dropped:
            // Only a cluster's slot moves end subscriptions; ClusterStoreConnection subscribes
            // the key again where the slot went, between an `.interrupted` and a `.resumed`.
            break
        case .restored:
            resumed(nil, "storage is reachable again and subscriptions are restored; changes made during the outage may have been missed")
        case .resumed(let keys):
            resumed(Set(keys), "the storage node of some subscribed keys is reachable again; changes of those keys made meanwhile may have been missed")
        }
    }

    /// The subscriptions of `keys` (nil: all) are lost: versioned watchers hold whatever
    /// arrives until they have caught up again; every watcher is told.
    private func interrupted(_ keys: Set<ByteBuffer>?, _ message: String) {
        watches.withLockedValue { watches in
            for key in watches.keys where keys?.contains(key) ?? true {
                for (id, watcher) in watches[key]?.watchers ?? [:] where watcher.versioned && watcher.held == nil {
                    watches[key]?.watchers[id]?.held = []
                }
            }
        }
        tellWatchers(message, versioned: true, keys: keys)
    }

    /// The subscriptions of `keys` (nil: all) are back: seed watchers are told changes may
    /// have been missed; versioned ones catch up instead.
    private func resumed(_ keys: Set<ByteBuffer>?, _ message: String) {
        tellWatchers(message, versioned: false, keys: keys)
        resumeVersionedWatchers(keys)
    }

    /// After a reconnection: each versioned watcher catches up from the last revision it was
    /// sent (a replay from kv-stored's history, or a reset with the current state).
    private func resumeVersionedWatchers(_ keys: Set<ByteBuffer>?) {
        let resuming = watches.withLockedValue { watches in
            watches.filter { keys?.contains($0.key) ?? true }.flatMap { key, watch in
                watch.watchers.values.filter { $0.versioned }.map { (key, $0.session, CatchUp(since: $0.revision, epoch: $0.epoch)) }
            }
        }
        if !resuming.isEmpty { logger.notice("resuming exact subscriptions", metadata: ["kv.subscriptions": "\(resuming.count)"]) }
        for (key, session, catchUp) in resuming {
            sync(key, catchUp).whenSuccess { reply in self.caughtUp(key, session, reply, catchUp) }
            // On failure the connection is gone again: the next `.restored` retries.
        }
    }

    /// Tells every session watching one of `keys` (nil: anything), once (with `versioned`
    /// false, only those with a seed subscription: versioned ones are made whole instead).
    private func tellWatchers(_ message: String, versioned: Bool, keys: Set<ByteBuffer>?) {
        let sessions = watches.withLockedValue { watches in
            Dictionary(
                watches.filter { keys?.contains($0.key) ?? true }.values.flatMap { $0.watchers.filter { versioned || !$0.value.versioned }.map { ($0.key, $0.value.session) } },
                uniquingKeysWith: { a, _ in a }
            ).values
        }
        guard !sessions.isEmpty else { return }
        logger.warning("\(message)", metadata: ["kv.sessions": "\(sessions.count)"])
        for session in sessions { session.send(.error(message)) }
    }
}
