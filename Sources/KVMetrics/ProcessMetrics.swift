import CoreMetrics
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// A daemon's metrics: swift-metrics, bootstrapped once per process with a Prometheus
/// registry, and the registry's text exposition for the daemon's `/metrics/…` path
/// (docs/operations.md lists every metric).
///
/// Libraries record through swift-metrics (`Counter`, `Timer`, `Gauge`) and never see the
/// backend; until a daemon bootstraps, those are no-ops (unit tests).
public enum ProcessMetrics {
    private static let registry = PrometheusCollectorRegistry()

    /// Buckets of the latency histograms: sub-millisecond resolution at the bottom, where a
    /// healthy request or expiry lands, up to 10 s.
    public static let latencyBuckets: [Duration] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(10),
    ]

    /// Sets swift-metrics up for this process; called once, by the daemon's `main`.
    public static func bootstrap() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        MetricsSystem.bootstrap(factory)
    }

    /// Every metric of the process, in the Prometheus text format (version 0.0.4), after the
    /// process-level gauges are brought up to date.
    public static func exposition() -> [UInt8] {
        Gauge(label: "process_resident_memory_bytes").record(residentBytes())
        return registry.emitToBuffer()
    }

    /// The `Content-Type` of `exposition()`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Resident set size of this process in bytes, from /proc (0 where unavailable).
    public static func residentBytes() -> Int {
        #if os(Linux)
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0, resident = 0
        guard withUnsafeMutablePointer(to: &size, { s in
            withUnsafeMutablePointer(to: &resident) { r in
                withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
            }
        }) == 2 else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
        #else
        return 0
        #endif
    }
}
