import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Health and metrics endpoints through the real nginx (docs/operations.md).
@Suite("Health and metrics through nginx", .serialized)
struct ObservabilityTests {
    /// The value of the metric line `series` (a name, with its labels if any) at
    /// `/metrics/<daemon>`; 0 when the series is not there yet.
    static func metric(_ stack: HTTPStack, _ daemon: String, _ series: String) throws -> Double {
        let response = try stack.client().send("GET", "/metrics/\(daemon)")
        #expect(response.status == 200, "\(response)")
        #expect(response.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        for line in response.text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? -1
        }
        return 0
    }

    @Test("/healthz answers while the front end runs; /readyz turns unready while kv-stored is down and ready again after")
    func health() throws {
        let stack = try HTTPStack()
        let http = stack.client()
        let health = try http.send("GET", "/healthz")
        #expect(health.status == 200 && health.text == "{\"status\":\"ok\"}\n" && health.headers["content-type"] == "application/json")
        let ready = try http.send("GET", "/readyz")
        #expect(ready.status == 200 && ready.text.contains(#""status":"ready""#), "\(ready)")
        #expect(try http.send("POST", "/readyz").status == 405)

        stack.store?.terminate()
        stack.store = nil
        let unready = try http.send("GET", "/readyz")
        #expect(unready.status == 503 && unready.text.contains(#""status":"unready""#) && unready.text.contains("storage unavailable"), "\(unready)")
        #expect(try http.send("GET", "/healthz").status == 200, "liveness does not depend on kv-stored")
        try stack.restartStore()
        #expect(eventually { (try? http.send("GET", "/readyz"))?.status == 200 })
    }

    @Test("metrics answer loopback only by default: another address gets 403 in JSON; health answers everyone")
    func metricsRestricted() throws {
        let stack = try HTTPStack(wsArguments: [])
        let elsewhere = HTTPClient(port: stack.port, source: "127.0.0.2")
        for daemon in ["kv-stored", "kv-fcgi", "kv-ws"] {
            let refused = try elsewhere.send("GET", "/metrics/\(daemon)")
            #expect(refused.status == 403 && refused.text.contains("not allowed from this address"), "\(daemon): \(refused)")
            #expect(try stack.client().send("GET", "/metrics/\(daemon)").status == 200, "\(daemon)")
        }
        #expect(try elsewhere.send("GET", "/healthz").status == 200)
        #expect(try elsewhere.send("GET", "/readyz").status == 200)
    }

    @Test("kv-fcgi's request counter and latency histogram move as requests are made")
    func frontEndMetrics() throws {
        let stack = try HTTPStack()
        let http = stack.client()
        #expect(try http.send("POST", "/storage/k", json: #"{"value":1}"#).status == 202)
        let series = #"kv_fcgi_requests_total{operation="GET",status="200"}"#
        let before = try Self.metric(stack, "kv-fcgi", series)
        for _ in 0..<3 { #expect(try http.send("GET", "/storage/k").status == 200) }
        #expect(try Self.metric(stack, "kv-fcgi", series) == before + 3)
        #expect(try Self.metric(stack, "kv-fcgi", #"kv_fcgi_request_duration_seconds_count{operation="GET"}"#) >= 3)
        #expect(try Self.metric(stack, "kv-fcgi", #"kv_fcgi_requests_total{operation="POST",status="202"}"#) == 1)
        #expect(try Self.metric(stack, "kv-fcgi", "process_resident_memory_bytes") > 0)
    }

    @Test("kv-stored's metrics: keys, changes, and an expiry in the expiry-lag histogram")
    func storeMetrics() throws {
        let stack = try HTTPStack()
        let http = stack.client()
        #expect(try Self.metric(stack, "kv-stored", "kv_stored_expiry_lag_seconds_count") == 0)
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":1,"ttl":50}"#).status == 202)
        #expect(try http.send("POST", "/storage/kept", json: #"{"value":2}"#).status == 202)
        #expect(eventually { (try? http.send("GET", "/storage/brief"))?.status == 204 })
        #expect(eventually { (try? Self.metric(stack, "kv-stored", "kv_stored_expiry_lag_seconds_count")) == 1 })
        #expect(try Self.metric(stack, "kv-stored", "kv_stored_keys") == 1)
        #expect(try Self.metric(stack, "kv-stored", "kv_stored_changes_total") == 3)  // two sets, one expiry
        #expect(try Self.metric(stack, "kv-stored", "kv_stored_expired_keys_total") == 1)
        #expect(try Self.metric(stack, "kv-stored", "kv_stored_aof_enabled") == 0, "the test stack runs memory-only")
    }
}
