import KVCore
import RESP

/// Listing keys on a Redis Cluster (docs/scaling.md): each master's keys are scanned in turn
/// (`kv_list` is one `SCAN` step on one server), the masters in the order of the first slot
/// each serves. A page's `next` says where the listing stands: `<slot>:<scan cursor>`, the
/// slot naming the master being scanned (any slot it serves routes there). Both clients list
/// this way: kv-fcgi's blocking router and kv-ws's `ClusterStoreConnection`.
///
/// A key that exists on one master throughout the listing is listed at least once; a slot
/// that moves to another master meanwhile (a resharding, a failover to a replica that missed
/// writes) may make its keys be listed twice or missed.
enum ClusterListing {
    /// Where a page starts: the slot whose master to scan, and the SCAN cursor there. `after`
    /// nil: the start (slot 0's master serves the lowest slot of all).
    static func position(after: [UInt8]?) throws(KVError) -> (slot: Int, cursor: [UInt8]) {
        guard let after else { return (0, Array("0".utf8)) }
        let parts = after.split(separator: UInt8(ascii: ":"), maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count <= 5, let slot = Int(String(decoding: parts[0], as: UTF8.self)), (0..<ClusterTopology.slots).contains(slot),
              // kv_list's cursor: digits, perhaps then `:` and hex (`kv_list` checks its shape).
              !parts[1].isEmpty, parts[1].allSatisfy({ $0 == UInt8(ascii: ":") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else { throw KVError(.invalidRequest, "on a Redis Cluster store, after takes the next of the page before (slot:cursor), not a key") }
        return (slot, Array(parts[1]))
    }

    /// The page `reply` (kv-stored's shape, `[null, SCAN cursor | null, items]`) with its
    /// `next` in the cluster's terms: the same master further on, or the next master from its
    /// start, or null after the last.
    static func continued(_ reply: RESPValue, scanning slot: Int, topology: ClusterTopology?) -> RESPValue {
        guard case .array(var fields) = reply, fields.count == 3 else { return reply }
        switch fields[1] {
        case .bulkString(let cursor):
            fields[1] = .bulkString(.init(string: "\(slot):" + String(buffer: cursor)))
        default:
            // (The page came from a master found by the map, so the map is known; were it
            // not, saying "done" could end a listing early.)
            guard let topology else { return .error(.init(string: "the cluster's slot map is not known: list again")) }
            guard let next = nextMaster(after: slot, in: topology) else { return .array(fields) }
            fields[1] = .bulkString(.init(string: "\(next):0"))
        }
        return .array(fields)
    }

    /// The first slot of the master that comes after `slot`'s master, in the order of each
    /// master's first slot; nil when it is the last.
    static func nextMaster(after slot: Int, in topology: ClusterTopology) -> Int? {
        guard let current = topology.owner(ofSlot: slot) else { return nil }
        var firsts: [ClusterNode: Int] = [:]
        for candidate in 0..<ClusterTopology.slots {
            if let node = topology.owner(ofSlot: candidate), firsts[node] == nil { firsts[node] = candidate }
        }
        guard let start = firsts[current] else { return nil }
        return firsts.values.filter { $0 > start }.min()
    }
}
