import CoreMetrics

/// kv-ws's metrics (docs/operations.md), through swift-metrics. Handles are made on first use,
/// which is after the daemon has bootstrapped the metrics system.
enum WSMetrics {
    /// Open WebSocket connections, and all accepted since start.
    static let connections = Meter(label: "kv_ws_connections")
    static let connectionsTotal = Counter(label: "kv_ws_connections_total")
    /// (session, key) subscriptions, and the keys kv-ws holds a kv-stored subscription for.
    static let subscriptions = Meter(label: "kv_ws_subscriptions")
    static let storeSubscriptions = Meter(label: "kv_ws_store_subscriptions")
    /// Messages written to clients.
    static let messagesOut = Counter(label: "kv_ws_messages_out_total")
    /// Change notifications a slow client's queue dropped for a newer one of the same key.
    static let conflated = Counter(label: "kv_ws_conflated_messages_total")
    /// Messages never delivered because their client was being cut off or had gone.
    static let dropped = Counter(label: "kv_ws_dropped_messages_total")

    /// Messages read from clients, by type (`invalid` for those refused).
    static let messagesIn: [String: Counter] = Dictionary(uniqueKeysWithValues: ["get", "set", "delete", "subscribe", "unsubscribe", "list", "auth", "invalid"].map {
        ($0, Counter(label: "kv_ws_messages_in_total", dimensions: [("type", $0)]))
    })

    /// Why connections closed.
    enum CloseReason: String, CaseIterable {
        /// The client closed (or answered our close).
        case client
        /// Its queue passed the output limit (1008).
        case outputLimit = "output_limit"
        /// It did not answer a ping.
        case pingTimeout = "ping_timeout"
        /// A message over the frame limit (1009), or a WebSocket protocol error.
        case protocolError = "protocol_error"
        /// kv-ws shut down (1001).
        case shutdown
        /// Its token expired or was revoked (4401), or its rules no longer let it watch a key (4403).
        case accessWithdrawn = "access_withdrawn"
        /// The connection dropped without a close.
        case dropped
    }

    static let closes: [CloseReason: Counter] = Dictionary(uniqueKeysWithValues: CloseReason.allCases.map {
        ($0, Counter(label: "kv_ws_closes_total", dimensions: [("reason", $0.rawValue)]))
    })

    /// Requests refused by the access rules (docs/access.md), by operation (`connect` for an
    /// upgrade with bad credentials) and status (401: no or bad credentials, 403: not allowed).
    static func refused(operation: String, status: Int) {
        Counter(label: "kv_ws_access_refused_total", dimensions: [("operation", operation), ("status", String(status))]).increment()
    }

    static func messageIn(_ message: ClientMessage?) {
        let type = switch message {
        case .get: "get"
        case .set: "set"
        case .delete: "delete"
        case .subscribe: "subscribe"
        case .unsubscribe: "unsubscribe"
        case .list: "list"
        case .auth: "auth"
        case nil: "invalid"
        }
        messagesIn[type]?.increment()
    }
}
