import KVClient
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RESP

/// kv-ws's subscriptions: one kv-stored subscription per key or prefix (a *topic*) for the
/// whole process, however many WebSocket sessions watch it (reference-counted, dropped with the
/// last watcher), and the routing of each change to those sessions. A change of a key watched
/// both by itself and through a prefix reaches a session once per subscription.
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

    private let watches = NIOLockedValueBox<[Topic<ByteBuffer>: Watch]>([:])
    private let connection: any EventLoopStore
    private let logger: Logger

    public init(connection makeConnection: (@escaping @Sendable (StoreConnectionEvent) -> Void) -> any EventLoopStore, logger: Logger) {
        let router = NIOLockedValueBox<SubscriptionHub?>(nil)
        self.connection = makeConnection { event in router.withLockedValue { $0 }?.route(event) }
        self.logger = logger
        router.withLockedValue { $0 = self }
    }

    /// Adds `session` as a watcher of `topic`; the future completes once kv-stored has
    /// acknowledged the subscription, so every change applied after that reaches the session.
    /// With `catchUp`, the watcher is versioned, and the future completes once it has caught
    /// up: the `ok` (with an id), then the state or the missed changes, are in the session's queue.
    func subscribe(_ topic: Topic<[UInt8]>, _ session: Session, catchUp: CatchUp?) -> EventLoopFuture<Void> {
        let watched = topic.map { ByteBuffer(bytes: $0) }
        let acknowledged = watches.withLockedValue { watches -> EventLoopFuture<Void> in
            var watch = watches[watched] ?? {
                WSMetrics.storeSubscriptions.increment()
                return Watch(acknowledged: connection.future(.subscription(watched)))
            }()
            if watch.watchers.updateValue(Watcher(session: session, versioned: catchUp != nil, held: catchUp != nil ? [] : nil), forKey: session.id) == nil {
                WSMetrics.subscriptions.increment()
            }
            watches[watched] = watch
            return watch.acknowledged
        }
        let subscribed = acknowledged.flatMapError { error in
            // kv-stored refused or is unreachable: nobody stays subscribed on a failed subscription.
            self.watches.withLockedValue { watches in
                if let watch = watches[watched], watch.acknowledged === acknowledged {
                    watches[watched] = nil
                    WSMetrics.subscriptions.decrement(by: Double(watch.watchers.count))
                    WSMetrics.storeSubscriptions.decrement()
                }
            }
            return acknowledged.eventLoop.makeFailedFuture(KVError.storeFailure(error))
        }
        guard let catchUp else { return subscribed }
        return subscribed.flatMap { () -> EventLoopFuture<Void> in
            // After the acknowledgement: every change after the catch-up's revision reaches the hub.
            self.sync(watched, catchUp).map { reply in self.caughtUp(watched, session, reply, catchUp) }
        }.flatMapErrorThrowing { error in
            self.unsubscribe(topic, session)
            throw error
        }
    }

    /// What a catch-up found: the mode, and the state or the changes, each naming its key (a
    /// key's absent state is a change without a kind).
    private struct Caught: Sendable {
        var mode: SyncReply.Mode
        var epoch: String
        var revision: UInt64
        var changes: [(key: ByteBuffer, kind: ChangeKind?, revision: UInt64, value: ByteBuffer?)]
    }

    private func sync(_ topic: Topic<ByteBuffer>, _ catchUp: CatchUp) -> EventLoopFuture<Caught> {
        switch topic {
        case .key(let key):
            return connection.future(.sync(key, since: catchUp.since, epoch: catchUp.epoch, initial: catchUp.initial)).map { reply in
                Caught(mode: reply.mode, epoch: reply.epoch, revision: reply.revision,
                       changes: reply.changes.map { (key, $0.kind, $0.revision, $0.value) })
            }
        case .prefix(let prefix):
            return connection.future(.prefixSync(prefix, since: catchUp.since, epoch: catchUp.epoch, initial: catchUp.initial)).map { reply in
                Caught(mode: reply.mode, epoch: reply.epoch, revision: reply.revision,
                       changes: reply.changes.map { ($0.key, $0.kind, $0.revision, $0.value) })
            }
        }
    }

    /// Sends what `reply` says the session lacks (after the `ok`, for a request with an id), then
    /// the changes held meanwhile that come after it; the watcher goes live. A prefix's reset
    /// is announced first (`reset`): the state that follows is all there is under the prefix.
    private func caughtUp(_ topic: Topic<ByteBuffer>, _ session: Session, _ reply: Caught, _ catchUp: CatchUp) {
        let watchedBytes = Array(topic.bytes.readableBytesView)
        watches.withLockedValue { watches in
            guard var watcher = watches[topic]?.watchers[session.id], let held = watcher.held else { return }
            if let id = catchUp.id {
                let ok: ServerMessage = topic.isPrefix ? .okPrefix(prefix: watchedBytes) : .ok(key: watchedBytes)
                session.send(frame: ok.framed(.init(id: id, rev: reply.revision, epoch: reply.epoch)))
            }
            if topic.isPrefix, reply.mode == .reset {
                session.send(frame: ServerMessage.reset(prefix: watchedBytes).framed(.init(rev: reply.revision, epoch: reply.epoch)))
            }
            for change in reply.changes {
                let key = Array(change.key.readableBytesView)
                guard !topic.isPrefix || session.mayWatch(key) else { continue }
                let message = Self.message(key: key, set: change.kind == .set, value: change.value)
                session.send(frame: message.framed(.init(rev: change.revision, reset: reply.mode == .reset, expired: change.kind == .expired)))
            }
            watcher.revision = reply.revision
            watcher.epoch = reply.epoch
            // (A held change without a revision, Redis's expiry, came before the catch-up's
            // state on the same connection, so that state already shows it.)
            for change in held where change.revision > watcher.revision {
                if topic.isPrefix, !session.mayWatch(Array(change.key.readableBytesView)) { continue }
                session.send(frame: Self.message(for: change).framed(.init(rev: change.revision, expired: change.kind == .expired)))
                watcher.revision = change.revision
            }
            watcher.held = nil
            watches[topic]?.watchers[session.id] = watcher
        }
    }

    /// The revision of the last change of `topic` the session was sent (or caught up to); 0 if none.
    func revision(of topic: Topic<[UInt8]>, for session: Session) -> UInt64 {
        watches.withLockedValue { watches in
            guard let watch = watches[topic.map { ByteBuffer(bytes: $0) }], let watcher = watch.watchers[session.id] else { return 0 }
            return watcher.versioned ? watcher.revision : watch.seedRevision
        }
    }

    /// Removes `session` from `topic`'s watchers, dropping the kv-stored subscription with the
    /// last one. Returns the revision of the last change of `topic` the session was sent.
    @discardableResult
    func unsubscribe(_ topic: Topic<[UInt8]>, _ session: Session) -> UInt64 {
        let watched = topic.map { ByteBuffer(bytes: $0) }
        return watches.withLockedValue { watches in
            guard let removed = watches[watched]?.watchers.removeValue(forKey: session.id) else { return 0 }
            WSMetrics.subscriptions.decrement()
            let revision = removed.versioned ? removed.revision : watches[watched]?.seedRevision ?? 0
            if watches[watched]?.watchers.isEmpty == true {
                watches[watched] = nil
                WSMetrics.storeSubscriptions.decrement()
                _ = connection.future(.subscription(watched, subscribing: false))
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
                let topic = change.topic
                do {
                    guard let watch = watches[topic] else { return }
                    // Framed at most once per form, shared by every watcher of that form.
                    var seedFrame: ByteBuffer?, versionedFrame: ByteBuffer?
                    let conflationKey = Array(change.key.readableBytesView)
                    // Through a prefix, each session sees only the keys its access rules let it watch.
                    for (id, watcher) in watch.watchers where !topic.isPrefix || watcher.session.mayWatch(conflationKey) {
                        if watcher.held != nil {
                            var holding = watcher
                            holding.held?.append(change)
                            updates.append((id, holding))
                        } else if watcher.versioned {
                            // Revision 0: a change the store gives no revision (Redis's expiry);
                            // sent as it comes, without `rev`, and it moves no watcher's revision.
                            guard change.revision > watcher.revision || change.revision == 0 else { continue }
                            let frame = versionedFrame ?? Self.message(for: change).framed(
                                .init(rev: change.revision == 0 ? nil : change.revision, expired: change.kind == .expired))
                            versionedFrame = frame
                            // Never conflated: an exact subscriber that falls behind is closed and resumes.
                            watcher.session.send(frame: frame)
                            guard change.revision > 0 else { continue }
                            var sent = watcher
                            sent.revision = change.revision
                            updates.append((id, sent))
                        } else {
                            let frame = seedFrame ?? Self.message(for: change).framed()
                            seedFrame = frame
                            watcher.session.send(frame: frame, conflationKey: conflationKey)
                        }
                    }
                }
                if change.revision > 0 { watches[topic]?.seedRevision = change.revision }
                for (id, watcher) in updates { watches[topic]?.watchers[id] = watcher }
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
            for topic in watches.keys where Self.concerns(topic, keys) {
                for (id, watcher) in watches[topic]?.watchers ?? [:] where watcher.versioned && watcher.held == nil {
                    watches[topic]?.watchers[id]?.held = []
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
            watches.filter { Self.concerns($0.key, keys) }.flatMap { topic, watch in
                watch.watchers.values.filter { $0.versioned }.map { (topic, $0.session, CatchUp(since: $0.revision, epoch: $0.epoch)) }
            }
        }
        if !resuming.isEmpty { logger.notice("resuming exact subscriptions", metadata: ["kv.subscriptions": "\(resuming.count)"]) }
        for (topic, session, catchUp) in resuming {
            sync(topic, catchUp).whenSuccess { reply in self.caughtUp(topic, session, reply, catchUp) }
            // On failure the connection is gone again: the next `.restored` retries.
        }
    }

    /// Whether an event about `keys` (nil: every subscription) concerns `topic`. Events about
    /// some keys come from a cluster, where no prefix is watched.
    private static func concerns(_ topic: Topic<ByteBuffer>, _ keys: Set<ByteBuffer>?) -> Bool {
        guard let keys else { return true }
        if case .key(let key) = topic { return keys.contains(key) }
        return false
    }

    /// Tells every session watching one of `keys` (nil: anything), once (with `versioned`
    /// false, only those with a seed subscription: versioned ones are made whole instead).
    private func tellWatchers(_ message: String, versioned: Bool, keys: Set<ByteBuffer>?) {
        let sessions = watches.withLockedValue { watches in
            Dictionary(
                watches.filter { Self.concerns($0.key, keys) }.values.flatMap { $0.watchers.filter { versioned || !$0.value.versioned }.map { ($0.key, $0.value.session) } },
                uniquingKeysWith: { a, _ in a }
            ).values
        }
        guard !sessions.isEmpty else { return }
        logger.warning("\(message)", metadata: ["kv.sessions": "\(sessions.count)"])
        for session in sessions { session.send(.error(message)) }
    }
}
