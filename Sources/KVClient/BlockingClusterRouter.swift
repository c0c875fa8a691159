import KVCore
import Logging
import RESP

/// kv-fcgi's way through a Redis Cluster: one blocking connection per master (each a
/// `BlockingStoreClient` of that node, which loads KvServer's functions there), commands sent
/// to the master of their key's slot, `MOVED` and `ASK` followed, and the slot map learnt again
/// from any node that answers when a master moves or stops answering (a failover).
/// Not thread-safe: one per `BlockingStoreClient`, like its connection; the slot map is the
/// process's (`StoreReachability`), shared by every worker's router.
final class BlockingClusterRouter {
    let seeds: [ClusterNode]
    private let credentials: StoreCredentials?
    private let limits: RESPLimits
    private let timeoutMilliseconds: Int
    private let shared: StoreReachability
    private let logger: Logger?
    private var nodes: [ClusterNode: BlockingStoreClient] = [:]

    private var topology: ClusterTopology? { shared.slotMap }

    /// A command is redirected at most this often (a slot migrating while the map is learnt).
    private static let maxRedirections = 8

    init(seeds: [ClusterNode], credentials: StoreCredentials?, limits: RESPLimits, timeoutMilliseconds: Int,
         shared: StoreReachability, logger: Logger?) {
        self.seeds = seeds
        self.credentials = credentials
        self.shared = shared
        self.logger = logger
        self.limits = limits
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Sends an already translated command to the master of `routingKey`'s slot (any master
    /// when nil) and returns its reply.
    func send(_ command: [[UInt8]], routingKey: [UInt8]?) throws(KVError) -> RESPValue {
        if topology == nil { try refresh() }
        let slot = routingKey.map { RedisKeyLayout.slot(of: $0) }
        var target = owner(of: slot)
        var asking = false, refreshed = false
        for _ in 0..<Self.maxRedirections {
            guard let node = target else {
                guard !refreshed else { throw KVError(.storageUnavailable, "storage unavailable: no node of the cluster serves slot \(slot ?? -1)") }
                refreshed = true
                try refresh()
                target = owner(of: slot)
                continue
            }
            let reply: RESPValue
            do {
                let client = self.client(for: node)
                if asking { _ = try client.sendCommand([Array("ASKING".utf8)]) }
                reply = try client.sendCommand(command)
            } catch {
                // The master is unreachable: if the cluster has failed it over, another node
                // knows the new master; otherwise the slot is unavailable until it returns.
                guard error.code == .storageUnavailable, !refreshed else { throw error }
                refreshed = true
                logger?.warning("a cluster master does not answer; asking the other nodes for the slot map",
                                metadata: ["kv.node": "\(node)", "error": "\(error.message)"])
                try? refresh(excluding: node)
                guard let next = owner(of: slot), next != node else { throw error }
                target = next
                asking = false
                continue
            }
            if let redirect = ClusterRedirect(reply: reply, defaultHost: node.host) {
                switch redirect {
                case .moved(let movedSlot, let to):
                    shared.moved(slot: movedSlot, to: to)
                    target = to
                    asking = false
                    // One slot seen moved usually means a failover or resharding moved many.
                    if !refreshed { refreshed = true; try? refresh() }
                case .ask(_, let to):
                    target = to
                    asking = true
                }
                continue
            }
            if case .error(let text) = reply, Self.isTransient(String(buffer: text)) {
                throw KVError(.storageUnavailable, "storage unavailable: redis cluster node \(node): \(String(buffer: text))")
            }
            return reply
        }
        throw KVError(.storageUnavailable, "storage unavailable: the cluster kept redirecting slot \(slot ?? -1)")
    }

    /// Errors a cluster gives while it heals: the caller should answer 503, not 500.
    static func isTransient(_ error: String) -> Bool {
        ["CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING"].contains { error.hasPrefix($0) }
    }

    private func owner(of slot: Int?) -> ClusterNode? {
        guard let topology else { return nil }
        guard let slot else { return topology.masters.first }
        return topology.owner(ofSlot: slot)
    }

    /// Succeeds when any master (or seed) answers `PING`.
    func ping() throws(KVError) {
        var reasons: [String] = []
        for node in ClusterTopology.nodesToAsk(topology, seeds: seeds, excluding: nil) {
            do {
                if case .simpleString = try client(for: node).sendCommand([Array("PING".utf8)]) { return }
                reasons.append("\(node): unexpected reply")
            } catch {
                reasons.append("\(node): \(error.message)")
            }
        }
        throw KVError(.storageUnavailable, "storage unavailable: no cluster node answered: \(reasons.joined(separator: "; "))")
    }

    private func client(for node: ClusterNode) -> BlockingStoreClient {
        if let client = nodes[node] { return client }
        let client = BlockingStoreClient(address: .redis(.tcp(host: node.host, port: node.port)), credentials: credentials, limits: limits,
                                         timeoutMilliseconds: timeoutMilliseconds)
        nodes[node] = client
        return client
    }

    /// Learns the slot map from the first node that answers: the known masters, then the seeds.
    private func refresh(excluding excluded: ClusterNode? = nil) throws(KVError) {
        var reasons: [String] = []
        for node in ClusterTopology.nodesToAsk(topology, seeds: seeds, excluding: excluded) {
            do {
                let reply = try client(for: node).sendCommand([Array("CLUSTER".utf8), Array("SLOTS".utf8)])
                guard let map = ClusterTopology(slotsReply: reply, defaultHost: node.host) else {
                    reasons.append("\(node): not a cluster node (CLUSTER SLOTS: \(reply.string ?? "unexpected reply"))")
                    continue
                }
                if shared.learnt(map) {
                    logger?.notice("cluster slot map learnt", metadata: map.logMetadata.merging(["kv.from": "\(node)"]) { a, _ in a })
                }
                // Connections to nodes that are no longer masters are closed.
                let masters = Set(map.masters)
                nodes = nodes.filter { masters.contains($0.key) || seeds.contains($0.key) }
                return
            } catch {
                reasons.append("\(node): \(error.message)")
            }
        }
        throw KVError(.storageUnavailable, "storage unavailable: no cluster node answered: \(reasons.joined(separator: "; "))")
    }
}
