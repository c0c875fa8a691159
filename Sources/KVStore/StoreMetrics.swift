import CoreMetrics
import KVMetrics
import NIOConcurrencyHelpers

/// kv-stored's metrics (docs/operations.md), through swift-metrics. The expiry lag is recorded
/// as keys expire; everything else is read from the keyspace, the statistics and the log when
/// metrics are asked for (`KVMETRICS`), so the command path pays nothing for them.
public final class StoreMetrics: Sendable {
    /// From a key's deadline to its removal: how punctual active expiry is.
    let expiryLag = Timer(label: "kv_stored_expiry_lag_seconds")

    private let keys = Gauge(label: "kv_stored_keys")
    private let expiringKeys = Gauge(label: "kv_stored_expiring_keys")
    private let datasetBytes = Gauge(label: "kv_stored_dataset_bytes")
    private let revision = Gauge(label: "kv_stored_revision")
    private let historyChanges = Gauge(label: "kv_stored_history_changes")
    private let connectedClients = Gauge(label: "kv_stored_connected_clients")
    private let subscriptions = Gauge(label: "kv_stored_subscriptions")
    private let prefixSubscriptions = Gauge(label: "kv_stored_prefix_subscriptions")
    private let aofEnabled = Gauge(label: "kv_stored_aof_enabled")
    private let aofSize = Gauge(label: "kv_stored_aof_size_bytes")
    private let aofPendingFsync = Gauge(label: "kv_stored_aof_pending_fsync_bytes")
    private let aofRewriting = Gauge(label: "kv_stored_aof_rewrite_in_progress")
    private let aofLastRewriteFailed = Gauge(label: "kv_stored_aof_last_rewrite_failed")
    private let aofLastFsync = Gauge(label: "kv_stored_aof_last_fsync_timestamp_seconds")

    /// Counters kept elsewhere as totals; each scrape adds what they grew by since the last.
    private let totals = NIOLockedValueBox<[String: Int]>([:])

    public init() {}

    /// Wires the expiry-lag histogram to `store`.
    public func observe(_ store: Store) {
        let lag = expiryLag
        store.withKeyspace { $0.expiryLagObserver = { lag.recordNanoseconds($0) } }
    }

    /// Brings every metric up to date, then renders the process's exposition.
    func exposition(store: Store, statistics: ServerStatistics, log: AppendLog?) -> [UInt8] {
        let snapshot = store.withKeyspace { ks in
            (count: ks.count, expiring: ks.expiringCount, dataset: ks.datasetBytes, revision: ks.revision,
             history: ks.historyFigures.changes, subscriptions: ks.subscriptionCount, prefixSubscriptions: ks.prefixSubscriptionCount, stats: ks.stats)
        }
        keys.record(snapshot.count)
        expiringKeys.record(snapshot.expiring)
        datasetBytes.record(snapshot.dataset)
        revision.record(Double(snapshot.revision))
        historyChanges.record(snapshot.history)
        subscriptions.record(snapshot.subscriptions)
        prefixSubscriptions.record(snapshot.prefixSubscriptions)
        connectedClients.record(statistics.connectedClients.load(ordering: .relaxed))
        advance("kv_stored_commands_total", to: statistics.totalCommands.load(ordering: .relaxed))
        advance("kv_stored_connections_total", to: statistics.totalConnections.load(ordering: .relaxed))
        advance("kv_stored_changes_total", to: snapshot.stats.changes)
        advance("kv_stored_expired_keys_total", to: snapshot.stats.expiredKeys)
        advance("kv_stored_keyspace_hits_total", to: snapshot.stats.hits)
        advance("kv_stored_keyspace_misses_total", to: snapshot.stats.misses)
        advance("kv_stored_subscriber_conflated_changes_total", to: statistics.conflatedChanges.load(ordering: .relaxed))
        advance("kv_stored_subscriber_output_limit_disconnects_total", to: statistics.outputLimitDisconnects.load(ordering: .relaxed))
        advance("kv_stored_protocol_errors_total", to: statistics.protocolErrors.load(ordering: .relaxed))
        aofEnabled.record(log == nil ? 0 : 1)
        if let figures = log?.figures {
            aofSize.record(figures.sizeBytes)
            aofPendingFsync.record(figures.unsyncedBytes + figures.bufferedBytes)
            aofRewriting.record(figures.compacting ? 1 : 0)
            aofLastRewriteFailed.record(figures.lastCompactionFailed ? 1 : 0)
            aofLastFsync.record(figures.lastSyncUnixSeconds)
            advance("kv_stored_aof_rewrites_total", to: figures.compactions)
        }
        return ProcessMetrics.exposition()
    }

    private func advance(_ name: String, to total: Int) {
        let delta = totals.withLockedValue { totals -> Int in
            let delta = total - totals[name, default: 0]
            totals[name] = total
            return delta
        }
        if delta > 0 { Counter(label: name).increment(by: delta) }
    }
}
