import KVCore
import Logging
import NIOCore
import RESP

/// Which node of a Redis Cluster serves each of its 16384 slots, as `CLUSTER SLOTS` reports
/// it (masters only: KvServer writes, and reads its own writes, on masters).
public struct ClusterTopology: Sendable, Equatable {
    public static let slots = 16384
    private var owners: [ClusterNode?]

    public init() { owners = Array(repeating: nil, count: Self.slots) }

    /// Reads `CLUSTER SLOTS`: `[[first, last, [host, port, id, …], replicas…], …]`. A master
    /// announced with an empty host (or `?`) is on `defaultHost`, the node that was asked.
    public init?(slotsReply reply: RESPValue, defaultHost: String) {
        guard case .array(let ranges) = reply else { return nil }
        self.init()
        for range in ranges {
            guard case .array(let fields) = range, fields.count >= 3,
                  case .integer(let first) = fields[0], case .integer(let last) = fields[1],
                  first >= 0, last < Self.slots, first <= last,
                  case .array(let master) = fields[2], master.count >= 2,
                  let announced = master[0].string, case .integer(let port) = master[1], (1...65535).contains(port)
            else { return nil }
            let node = ClusterNode(host: announced.isEmpty || announced == "?" ? defaultHost : announced, port: Int(port))
            for slot in Int(first)...Int(last) { owners[slot] = node }
        }
    }

    public func owner(ofSlot slot: Int) -> ClusterNode? { owners[slot] }

    public mutating func assign(slot: Int, to node: ClusterNode) { owners[slot] = node }

    /// The masters serving at least one slot.
    public var masters: [ClusterNode] {
        var seen = Set<ClusterNode>(), ordered: [ClusterNode] = []
        for case let node? in owners where seen.insert(node).inserted { ordered.append(node) }
        return ordered
    }

    /// Slots no master serves (the cluster is incomplete, or a failover is under way).
    public var uncoveredSlots: Int { owners.lazy.filter { $0 == nil }.count }

    /// What a log line says of a newly learnt map.
    var logMetadata: Logger.Metadata {
        ["kv.masters": "\(masters)", "kv.uncovered_slots": "\(uncoveredSlots)"]
    }
}

/// Asking the cluster's nodes one after another until one answers — the masters of the map
/// (but one that stopped answering), then the seeds — keeping each failure for the error if
/// none does: how both clients learn the slot map, and kv-fcgi tells that the cluster is up.
struct ClusterSearch {
    private var candidates: ArraySlice<ClusterNode>
    private var reasons: [String] = []

    init(map: ClusterTopology?, seeds: [ClusterNode], excluding excluded: ClusterNode? = nil) {
        var nodes: [ClusterNode] = []
        for node in (map?.masters ?? []) + seeds where node != excluded && !nodes.contains(node) { nodes.append(node) }
        candidates = nodes[...]
    }

    /// The next node to ask; nil when none is left (then `failure` is the answer).
    mutating func next() -> ClusterNode? { candidates.popFirst() }

    mutating func failed(_ node: ClusterNode, _ reason: String) { reasons.append("\(node): \(reason)") }

    var failure: KVError { KVError(.storageUnavailable, "storage unavailable: no cluster node answered: \(reasons.joined(separator: "; "))") }

    /// `node`'s answer to `CLUSTER SLOTS`: its map, or nil (and why is kept).
    mutating func slotMap(from node: ClusterNode, _ answer: Result<RESPValue, KVError>) -> ClusterTopology? {
        switch answer {
        case .success(let reply):
            if let map = ClusterTopology(slotsReply: reply, defaultHost: node.host) { return map }
            failed(node, "not a cluster node (CLUSTER SLOTS: \(reply.string ?? "unexpected reply"))")
        case .failure(let error):
            failed(node, error.message)
        }
        return nil
    }
}

/// A cluster node's answer that the command belongs elsewhere.
public enum ClusterRedirect: Sendable, Equatable {
    /// `MOVED slot host:port`: the slot lives there now; update the map.
    case moved(slot: Int, to: ClusterNode)
    /// `ASK slot host:port`: the slot is migrating; ask there once, after `ASKING`.
    case ask(slot: Int, to: ClusterNode)

    /// Reads an error reply's text; nil for any other error. A host left empty (a node that
    /// does not know its address) is `defaultHost`, the node that answered.
    public init?(error text: String, defaultHost: String) {
        let words = text.split(separator: " ")
        guard words.count == 3, let slot = Int(words[1]), (0..<ClusterTopology.slots).contains(slot),
              let colon = words[2].lastIndex(of: ":"), let port = Int(words[2][words[2].index(after: colon)...])
        else { return nil }
        var host = String(words[2][..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let node = ClusterNode(host: host.isEmpty ? defaultHost : host, port: port)
        switch words[0] {
        case "MOVED": self = .moved(slot: slot, to: node)
        case "ASK": self = .ask(slot: slot, to: node)
        default: return nil
        }
    }

    /// Reads a reply: a redirection, or nil.
    public init?(reply: RESPValue, defaultHost: String) {
        guard case .error(let text) = reply else { return nil }
        self.init(error: String(buffer: text), defaultHost: defaultHost)
    }
}
