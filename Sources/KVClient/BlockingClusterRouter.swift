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
    private let shared: StoreReachability
    private let logger: Logger?
    private var nodes: [ClusterNode: any ClusterNodeLink] = [:]
    /// Makes a master's connection (a `BlockingStoreClient`; a scripted one in tests).
    private let connectNode: (ClusterNode) -> any ClusterNodeLink
    /// Waits before a retry (TRYAGAIN); tests do not sleep.
    private let pause: (_ milliseconds: Int) -> Void

    private var topology: ClusterTopology? { shared.slotMap }
    /// The slot map as last learnt (nil before the first).
    var slotMap: ClusterTopology? { shared.slotMap }

    convenience init(seeds: [ClusterNode], credentials: StoreCredentials?, limits: RESPLimits, timeoutMilliseconds: Int,
                     shared: StoreReachability, logger: Logger?) {
        self.init(seeds: seeds, shared: shared, logger: logger, pause: { usleep(UInt32($0) * 1000) }) { node in
            BlockingStoreClient(address: .redis(.tcp(host: node.host, port: node.port)), credentials: credentials, limits: limits,
                                timeoutMilliseconds: timeoutMilliseconds)
        }
    }

    init(seeds: [ClusterNode], shared: StoreReachability, logger: Logger?, pause: @escaping (Int) -> Void,
         connectNode: @escaping (ClusterNode) -> any ClusterNodeLink) {
        self.seeds = seeds
        self.shared = shared
        self.logger = logger
        self.pause = pause
        self.connectNode = connectNode
    }

    /// Sends an already translated command to the master of `slot` (any master when nil) and
    /// returns its reply; `ClusterRoute` decides every step.
    func send(_ command: [[UInt8]], slot: Int?) throws(KVError) -> RESPValue {
        var route = ClusterRoute(slot: slot)
        var step = route.start(map: topology)
        while true {
            switch step {
            case .reply(let reply):
                return reply
            case .fail(let error):
                throw error
            case .learnMap(let excluded):
                do throws(KVError) {
                    try refresh(excluding: excluded)
                    step = route.mapLearnt(topology ?? ClusterTopology())
                } catch {
                    step = route.mapUnavailable(error)
                }
            case .moved(let slot, let to, let relearn):
                shared.moved(slot: slot, to: to)
                // This thread's request waits for the map here; the next ones find it learnt.
                if relearn { try? refresh() }
                step = .send(to, asking: false, afterMilliseconds: 0)
            case .send(let node, let asking, let wait):
                if wait > 0 { pause(wait) }
                do throws(KVError) {
                    let client = self.client(for: node)
                    if asking { _ = try client.sendCommand([Array("ASKING".utf8)]) }
                    step = route.replied(try client.sendCommand(command), from: node)
                } catch {
                    if error.code == .storageUnavailable {
                        logger?.warning("a cluster master does not answer; asking the other nodes for the slot map",
                                        metadata: ["kv.node": "\(node)", "error": "\(error.message)"])
                    }
                    step = route.unreachable(node, error: error)
                }
            }
        }
    }

    /// Succeeds when any master (or seed) answers `PING`.
    func ping() throws(KVError) {
        var search = ClusterSearch(map: topology, seeds: seeds)
        while let node = search.next() {
            switch Result(catching: { () throws(KVError) in try client(for: node).sendCommand([Array("PING".utf8)]) }) {
            case .success(.simpleString): return
            case .success: search.failed(node, "unexpected reply")
            case .failure(let error): search.failed(node, error.message)
            }
        }
        throw search.failure
    }

    private func client(for node: ClusterNode) -> any ClusterNodeLink {
        if let client = nodes[node] { return client }
        let client = connectNode(node)
        nodes[node] = client
        return client
    }

    /// Learns the slot map from the first node that answers (`ClusterSearch`).
    private func refresh(excluding excluded: ClusterNode? = nil) throws(KVError) {
        var search = ClusterSearch(map: topology, seeds: seeds, excluding: excluded)
        while let node = search.next() {
            let answer = Result(catching: { () throws(KVError) in try client(for: node).sendCommand([Array("CLUSTER".utf8), Array("SLOTS".utf8)]) })
            guard let map = search.slotMap(from: node, answer) else { continue }
            if shared.learnt(map) {
                logger?.notice("cluster slot map learnt", metadata: map.logMetadata.merging(["kv.from": "\(node)"]) { a, _ in a })
            }
            // Connections to nodes that are no longer masters are closed.
            let masters = Set(map.masters)
            nodes = nodes.filter { masters.contains($0.key) || seeds.contains($0.key) }
            return
        }
        throw search.failure
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A master's connection as `BlockingClusterRouter` uses it: a `BlockingStoreClient`, or a
/// scripted node in tests.
protocol ClusterNodeLink: AnyObject {
    /// Sends `arguments` as they are and returns the reply.
    func sendCommand(_ arguments: [[UInt8]]) throws(KVError) -> RESPValue
}

extension BlockingStoreClient: ClusterNodeLink {}
