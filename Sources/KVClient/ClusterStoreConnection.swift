import KVCore
import Logging
import NIOCore
import RESP

/// kv-ws's connection to a Redis Cluster: one `StoreConnection` per master on one event loop,
/// each command sent to the master of its key's slot (`MOVED` and `ASK` followed), each key's
/// subscription held on the master of its slot (sharded pub/sub is per slot), and expiry
/// events from every master (keyspace events are node-local).
///
/// Topology changes: when a master's connection is lost, the slot map is learnt again from
/// the other nodes until either the master is back (its connection restores its own
/// subscriptions) or another node serves its slots (a failover): then the keys subscribed
/// there move to the new master. A node that ends a subscription because the slot moved away
/// has that key moved the same way. Either way the owner sees `.interrupted` for the keys
/// concerned (only those: the other masters' keys are unaffected), then `.resumed` once their
/// subscriptions are in place again.
///
/// Offers what `StoreConnection` offers kv-ws. Its mutable state can only be reached on
/// `eventLoop` (`NIOLoopBoundBox` checks).
public final class ClusterStoreConnection: EventLoopStore {
    public let seeds: [ClusterNode]
    public let eventLoop: any EventLoop
    private let logger: Logger
    private let onEvent: @Sendable (StoreConnectionEvent) -> Void

    /// Makes a master's connection (a `StoreConnection`; a scripted one in tests).
    private let connectNode: @Sendable (ClusterNode, _ onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void) -> any EventLoopStore

    /// Everything that changes, reachable only on `eventLoop` (`NIOLoopBoundBox` checks).
    private struct LoopState {
        var topology: ClusterTopology?
        var refreshing: EventLoopFuture<Void>?
        var nodes: [ClusterNode: any EventLoopStore] = [:]
        /// `orderingDomain`'s numbers.
        var nodeNumbers: [ClusterNode: Int] = [:]
        /// Where each subscribed key's subscription is held.
        var subscribedAt: [ByteBuffer: ClusterNode] = [:]
        /// Masters whose connection is lost while they hold subscriptions.
        var down: Set<ClusterNode> = []
        /// Keys whose subscription is being moved to their slot's new master.
        var moving: Set<ByteBuffer> = []
        var closed = false
    }

    private let state: NIOLoopBoundBox<LoopState>

    /// How often the slot map is asked for while a master is down.
    private static let recoveryInterval = TimeAmount.milliseconds(500)

    public convenience init(
        seeds: [ClusterNode],
        credentials: StoreCredentials? = nil,
        eventLoop: any EventLoop,
        limits: RESPLimits,
        logger: Logger,
        changeFeed: Bool = false,
        onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void = { _ in }
    ) {
        self.init(seeds: seeds, eventLoop: eventLoop, logger: logger, onEvent: onEvent) { node, onEvent in
            StoreConnection(address: .redis(.tcp(host: node.host, port: node.port)), credentials: credentials, eventLoop: eventLoop, limits: limits,
                            logger: logger, changeFeed: changeFeed, onEvent: onEvent)
        }
    }

    init(seeds: [ClusterNode], eventLoop: any EventLoop, logger: Logger, onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void,
         connectNode: @escaping @Sendable (ClusterNode, _ onEvent: @escaping @Sendable (StoreConnectionEvent) -> Void) -> any EventLoopStore) {
        self.seeds = seeds
        self.eventLoop = eventLoop
        self.logger = logger
        self.onEvent = onEvent
        self.connectNode = connectNode
        state = .makeBoxSendingValue(LoopState(), eventLoop: eventLoop)
    }

    // MARK: - Requests

    /// On `eventLoop` only: sends `command` to the master of its key's slot (a subscription is
    /// held there); `completion` runs there with the reply.
    public func send<Reply>(_ command: StoreCommand<ByteBuffer, Reply>, completion: @escaping (Result<Reply, KVError>) -> Void) {
        eventLoop.preconditionInEventLoop()
        switch command.operation {
        case .subscribe(let key):
            subscribe(key) { completion(command.reply($0)) }
        case .unsubscribe(let key):
            unsubscribe(key) { completion(command.reply($0)) }
        case .list(let prefix, let after, let limit, let values):
            let position: (slot: Int, cursor: [UInt8])
            do throws(KVError) { position = try ClusterListing.position(after: after.map { Array($0.readableBytesView) }) } catch {
                return completion(.failure(error))
            }
            // One master's SCAN step: sent to the master of the slot the cursor names.
            let step = StoreOperation<ByteBuffer>.list(prefix: prefix, after: ByteBuffer(bytes: position.cursor), limit: limit, values: values)
            var route = ClusterRoute(slot: position.slot)
            let first = route.start(map: state.value.topology)
            let raw = StoreCommand<ByteBuffer, RESPValue>(step) { $0 }
            drive(route, first, attempt: { node, asking, reply in
                self.connection(to: node).send(raw, completion: reply)
            }, completion: { reply in
                completion(command.reply(reply.map { ClusterListing.continued($0, scanning: position.slot, topology: self.state.value.topology) }))
            })
        case .psubscribe, .punsubscribe, .prefixSync:
            completion(.failure(KVError.prefixSubscriptionOnRedis))
        default:
            var route = ClusterRoute(slot: RedisFunctions.routingSlot(command.operation))
            let first = route.start(map: state.value.topology)
            let raw = StoreCommand<ByteBuffer, RESPValue>(command.operation) { $0 }
            drive(route, first, attempt: { node, asking, reply in
                let connection = self.connection(to: node)
                if asking { connection.send(.other([ByteBuffer(string: "ASKING")])) { _ in } }
                connection.send(raw, completion: reply)
            }, completion: { completion(command.reply($0)) })
        }
    }

    /// Drives one command's `ClusterRoute` on the event loop: `attempt` sends it to a node
    /// (after `ASKING` when told) and reports the reply.
    private func drive(_ route: ClusterRoute, _ step: ClusterRoute.Step,
                       attempt: @escaping (ClusterNode, Bool, @escaping (Result<RESPValue, KVError>) -> Void) -> Void,
                       completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        var route = route
        switch step {
        case .reply(let reply):
            completion(.success(reply))
        case .fail(let error):
            completion(.failure(error))
        case .learnMap(let excluded):
            refresh(excluding: excluded).assumeIsolated().whenComplete { result in
                let next: ClusterRoute.Step
                switch result {
                case .success: next = route.mapLearnt(self.state.value.topology ?? ClusterTopology())
                case .failure(let error): next = route.mapUnavailable(KVError.storeFailure(error))
                }
                self.drive(route, next, attempt: attempt, completion: completion)
            }
        case .moved(let slot, let to, let relearn):
            state.value.topology?.assign(slot: slot, to: to)
            if relearn { _ = refresh() }  // in the background: the command goes on at once
            drive(route, .send(to, asking: false, afterMilliseconds: 0), attempt: attempt, completion: completion)
        case .send(let node, let asking, let wait):
            let go = {
                attempt(node, asking) { result in
                    let next: ClusterRoute.Step
                    switch result {
                    case .success(let reply): next = route.replied(reply, from: node)
                    case .failure(let error): next = route.unreachable(node, error: error)
                    }
                    self.drive(route, next, attempt: attempt, completion: completion)
                }
            }
            if wait > 0 {
                eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(wait))) { go() }
            } else {
                go()
            }
        }
    }

    /// On `eventLoop` only: a number naming the master `key`'s commands go to now; commands
    /// for one master are applied in the order sent (one connection), others may overtake.
    public func orderingDomain(ofKey key: [UInt8]) -> Int {
        guard let node = owner(of: RedisKeyLayout.slot(ofKey: key)) else { return -1 }
        if let id = state.value.nodeNumbers[node] { return id }
        let id = state.value.nodeNumbers.count
        state.value.nodeNumbers[node] = id
        return id
    }

    private func owner(of slot: Int?) -> ClusterNode? {
        guard let topology = state.value.topology else { return nil }
        guard let slot else { return topology.masters.first }
        return topology.owner(ofSlot: slot)
    }

    // MARK: - Subscriptions

    /// Subscribes `key` on the master of its slot, by the same `ClusterRoute` as requests;
    /// `completion` gets the acknowledgement.
    private func subscribe(_ key: ByteBuffer, completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        var route = ClusterRoute(slot: RedisKeyLayout.slot(ofKey: Array(key.readableBytesView)))
        let first = route.start(map: state.value.topology)
        let command = StoreCommand<ByteBuffer, RESPValue>(.subscribe(key: key)) { $0 }
        drive(route, first, attempt: { node, _, reply in
            // Sharded pub/sub has no ASK: a migrating slot's subscription stays where it is
            // until the slot moves, and then its node ends it (nodeEvent moves it on).
            self.state.value.subscribedAt[key] = node
            self.connection(to: node).send(command) { result in
                // Anything but the subscription's acknowledgement means it is not held there.
                if case .success(.push) = result {} else if self.state.value.subscribedAt[key] == node { self.state.value.subscribedAt[key] = nil }
                reply(result)
            }
        }, completion: completion)
    }

    /// Stops `key`'s changes.
    private func unsubscribe(_ key: ByteBuffer, completion: @escaping (Result<RESPValue, KVError>) -> Void) {
        state.value.moving.remove(key)
        guard let node = state.value.subscribedAt.removeValue(forKey: key), let connection = state.value.nodes[node] else {
            completion(.success(.unsubscribedHere))
            return
        }
        connection.send(StoreCommand<ByteBuffer, RESPValue>(.unsubscribe(key: key)) { $0 }, completion: completion)
    }

    /// What a master's connection reports.
    private func nodeEvent(_ node: ClusterNode, _ event: StoreConnectionEvent) {
        switch event {
        case .change:
            onEvent(event)
        case .disconnected:
            guard !state.value.closed, state.value.down.insert(node).inserted else { return }
            onEvent(.interrupted(keys: keys(at: node)))
            recover(node)
        case .restored:
            // The master is back with its own subscriptions.
            guard state.value.down.remove(node) != nil else { return }
            onEvent(.resumed(keys: keys(at: node)))
        case .dropped(let key):
            // The key's slot moved away from `node`: subscribe it where it went.
            guard !state.value.closed, state.value.subscribedAt[key] == node else { return }
            state.value.subscribedAt[key] = nil
            state.value.moving.insert(key)
            onEvent(.interrupted(keys: [key]))
            resubscribe([key]) { self.onEvent(.resumed(keys: [key])) }
        case .interrupted, .resumed:
            break  // a single server's connection never reports these
        }
    }

    private func keys(at node: ClusterNode) -> [ByteBuffer] {
        state.value.subscribedAt.filter { $0.value == node }.map(\.key)
    }

    /// While `node` is down: asks for the slot map until another master serves its keys' slots
    /// (moving their subscriptions there), or `node` is back.
    private func recover(_ node: ClusterNode) {
        guard state.value.down.contains(node), !state.value.closed else { return }
        refresh(excluding: node).assumeIsolated().whenComplete { _ in
            guard self.state.value.down.contains(node), !self.state.value.closed else { return }
            let keys = self.keys(at: node)
            let moved = keys.filter { self.owner(of: RedisKeyLayout.slot(ofKey: Array($0.readableBytesView))).map { $0 != node } ?? false }
            guard moved.count == keys.count else {
                self.eventLoop.scheduleTask(in: Self.recoveryInterval) { self.recover(node) }
                return
            }
            self.logger.notice("a cluster master is gone; subscribing its keys where their slots are now",
                               metadata: ["kv.node": "\(node)", "kv.subscriptions": "\(moved.count)"])
            for key in moved {
                self.state.value.nodes[node]?.send(.unsubscribe(key)) { _ in }  // forget it there: not subscribed again if that node returns
                self.state.value.subscribedAt[key] = nil
                self.state.value.moving.insert(key)
            }
            self.resubscribe(moved) {
                guard self.state.value.down.remove(node) != nil else { return }
                self.onEvent(.resumed(keys: moved))
            }
        }
    }

    /// Subscribes `keys` where their slots are now, learning the map again and retrying every
    /// `recoveryInterval` until each is subscribed (or unsubscribed meanwhile); then `done`.
    private func resubscribe(_ keys: [ByteBuffer], then done: @escaping () -> Void) {
        let wanted = keys.filter { state.value.moving.contains($0) }
        guard !wanted.isEmpty, !state.value.closed else { done(); return }
        refresh().assumeIsolated().whenComplete { _ in
            let attempts = wanted.map { key in
                let promise = self.eventLoop.makePromise(of: ByteBuffer.self)
                self.subscribe(key) { result in
                    switch result {
                    case .success(.push): promise.succeed(key)
                    case .success(let reply): promise.fail(KVError.storeReply(reply))
                    case .failure(let error): promise.fail(error)
                    }
                }
                return promise.futureResult
            }
            EventLoopFuture.whenAllComplete(attempts, on: self.eventLoop).assumeIsolated().whenSuccess { results in
                for case .success(let key) in results { self.state.value.moving.remove(key) }
                let left = wanted.filter { self.state.value.moving.contains($0) }
                guard !left.isEmpty else { done(); return }
                self.logger.warning("could not subscribe keys where their slots moved; retrying", metadata: ["kv.keys": "\(left.count)"])
                self.eventLoop.assumeIsolated().scheduleTask(in: Self.recoveryInterval) { self.resubscribe(left, then: done) }
            }
        }
    }

    // MARK: - Nodes and the slot map

    private func connection(to node: ClusterNode) -> any EventLoopStore {
        if let connection = state.value.nodes[node] { return connection }
        let connection = connectNode(node) { [weak self] event in
            guard let self else { return }
            // Synchronously when on the loop (always, in practice): a change must reach the
            // owner before the replies that follow it on the same connection.
            if self.eventLoop.inEventLoop { self.nodeEvent(node, event) } else { self.eventLoop.execute { self.nodeEvent(node, event) } }
        }
        state.value.nodes[node] = connection
        return connection
    }

    /// Learns the slot map from the first node that answers (`ClusterSearch`). Concurrent
    /// callers share one refresh.
    private func refresh(excluding excluded: ClusterNode? = nil) -> EventLoopFuture<Void> {
        if let refreshing = state.value.refreshing { return refreshing }
        let promise = eventLoop.makePromise(of: Void.self)
        state.value.refreshing = promise.futureResult
        ask(ClusterSearch(map: state.value.topology, seeds: seeds, excluding: excluded), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in self.state.value.refreshing = nil }
        return promise.futureResult
    }

    private func ask(_ search: ClusterSearch, promise: EventLoopPromise<Void>) {
        var search = search
        guard let node = search.next() else { return promise.fail(search.failure) }
        connection(to: node).send(.other([ByteBuffer(string: "CLUSTER"), ByteBuffer(string: "SLOTS")])) { answer in
            guard let map = search.slotMap(from: node, answer) else { return self.ask(search, promise: promise) }
            if map != self.state.value.topology {
                self.logger.info("cluster slot map learnt", metadata: map.logMetadata.merging(["kv.from": "\(node)"]) { a, _ in a })
            }
            self.state.value.topology = map
            promise.succeed()
        }
    }

    /// Closes every master's connection; later requests fail.
    public func close() async {
        let connections = try? await eventLoop.submit { () -> [any EventLoopStore] in
            self.state.value.closed = true
            return Array(self.state.value.nodes.values)
        }.get()
        for connection in connections ?? [] { await connection.close() }
    }
}
