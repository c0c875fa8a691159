import KVCore
import RESP

/// One command's way through a Redis Cluster, decided without I/O: given what happened (the
/// slot map, a reply, a node that did not answer), it says what to do next. kv-fcgi's blocking
/// router and kv-ws's event-loop connection both drive it, so they follow the same rules and
/// give the same answer: one redirect cap, one outcome past it, one set of errors that mean
/// "the cluster is healing" (503) rather than "the command failed".
///
/// The rules:
/// * a command goes to the master of its key's slot (any master when it has no key);
/// * `MOVED` records the slot's new master, asks for a fresh map once per command (one slot
///   seen moved usually means a failover or resharding moved many), and goes there;
/// * `ASK` goes to the named node once, after `ASKING`;
/// * `TRYAGAIN` (a multi-key operation during resharding) is sent again after a short wait;
/// * `CLUSTERDOWN`, `MASTERDOWN` and `LOADING` fail at once as unavailable;
/// * a master that does not answer makes the map be learnt again without it, once per
///   command: if another node now serves the slot (a failover), the command goes there;
/// * redirects and retries together are capped at `maxRedirections`; past the cap the command
///   fails as unavailable.
public struct ClusterRoute: Sendable {
    /// What the driver does next.
    public enum Step: Equatable, Sendable {
        /// Send the command to `node` (after `ASKING` when `asking`), waiting `afterMilliseconds`
        /// first when it is not 0.
        case send(ClusterNode, asking: Bool, afterMilliseconds: Int)
        /// `MOVED`: record that `slot` is served by `node` in the process's map, learn the whole
        /// map again in the background when `relearn` (the command does not wait for it), and
        /// send the command there.
        case moved(slot: Int, to: ClusterNode, relearn: Bool)
        /// Learn the slot map (from any node but `excluding`), then call `mapLearnt` or
        /// `mapUnavailable`.
        case learnMap(excluding: ClusterNode?)
        /// The command's reply, to hand back.
        case reply(RESPValue)
        case fail(KVError)
    }

    /// Redirects and retries one command may take (a slot migrating while the map is learnt).
    public static let maxRedirections = 8
    /// How long `TRYAGAIN` waits before the command is sent again.
    public static let retryMilliseconds = 20

    public let slot: Int?
    public private(set) var redirections = 0
    /// The map was learnt again for this command (at most once, beyond the first map).
    private var relearnt = false
    /// A node that did not answer, and why: the failure to report if no other node takes over.
    private var unanswered: (node: ClusterNode, error: KVError)?

    public init(slot: Int?) {
        self.slot = slot
    }

    /// The first step, with the process's slot map (nil: none learnt yet).
    public mutating func start(map: ClusterTopology?) -> Step {
        guard let map else { return .learnMap(excluding: nil) }
        return route(map)
    }

    /// The map was learnt (or learnt again).
    public mutating func mapLearnt(_ map: ClusterTopology) -> Step {
        if let (node, error) = unanswered {
            // A failover shows as another master for the slot; the same one means it is still down.
            guard let owner = owner(in: map), owner != node else { return .fail(error) }
            unanswered = nil
            return .send(owner, asking: false, afterMilliseconds: 0)
        }
        return route(map)
    }

    /// No node answered for the map.
    public mutating func mapUnavailable(_ error: KVError) -> Step {
        .fail(unanswered?.error ?? error)
    }

    /// `node` answered `reply`.
    public mutating func replied(_ reply: RESPValue, from node: ClusterNode) -> Step {
        guard case .error(let text) = reply else { return .reply(reply) }
        let message = String(buffer: text)
        if let redirect = ClusterRedirect(error: message, defaultHost: node.host) {
            guard redirections < Self.maxRedirections else { return .fail(Self.overCap(slot)) }
            redirections += 1
            switch redirect {
            case .moved(let movedSlot, let to):
                let relearn = !relearnt
                relearnt = true
                return .moved(slot: movedSlot, to: to, relearn: relearn)
            case .ask(_, let to):
                return .send(to, asking: true, afterMilliseconds: 0)
            }
        }
        if message.hasPrefix("TRYAGAIN") {
            guard redirections < Self.maxRedirections else { return .fail(Self.overCap(slot)) }
            redirections += 1
            return .send(node, asking: false, afterMilliseconds: Self.retryMilliseconds)
        }
        if Self.isHealing(message) {
            return .fail(KVError(.storageUnavailable, "storage unavailable: redis cluster node \(node): \(message)"))
        }
        return .reply(reply)
    }

    /// `node` did not answer (`error`: the connection failed or timed out).
    public mutating func unreachable(_ node: ClusterNode, error: KVError) -> Step {
        guard error.code == .storageUnavailable, !relearnt else { return .fail(error) }
        relearnt = true
        unanswered = (node, error)
        return .learnMap(excluding: node)
    }

    /// Errors a cluster gives while it heals: the caller answers 503, not 500.
    public static func isHealing(_ error: String) -> Bool {
        ["CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING"].contains { error.hasPrefix($0) }
    }

    private mutating func route(_ map: ClusterTopology) -> Step {
        if let owner = owner(in: map) { return .send(owner, asking: false, afterMilliseconds: 0) }
        // No master serves the slot: a failover may be under way; ask once more.
        guard !relearnt else {
            return .fail(KVError(.storageUnavailable, "storage unavailable: no node of the cluster serves slot \(slot ?? -1)"))
        }
        relearnt = true
        return .learnMap(excluding: nil)
    }

    private func owner(in map: ClusterTopology) -> ClusterNode? {
        guard let slot else { return map.masters.first }
        return map.owner(ofSlot: slot)
    }

    private static func overCap(_ slot: Int?) -> KVError {
        KVError(.storageUnavailable, "storage unavailable: the cluster kept redirecting slot \(slot ?? -1)")
    }
}
