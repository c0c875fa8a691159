import CoreMetrics
import Dispatch
import FastCGI
import KVAccess
import KVClient
import KVCore
import KVHTTP
import KVMetrics
import Logging
import NIOCore
import RESP

/// One kv-fcgi worker thread: its own blocking connection to kv-stored, the HTTP API, and the
/// operational endpoints (docs/operations.md): `/healthz`, `/readyz`, `/metrics/kv-fcgi` and
/// `/metrics/kv-stored` (kv-stored's metrics, fetched with `KVMETRICS`).
final class StorageWorker: FastCGIServer.Worker {
    private let api: StorageAPI
    private let access: AccessControl
    private let refusals: RefusalLog
    private let store: StoreAdapter
    private var logger: Logger
    /// This thread's handles on the request metrics (no registry lookup per request).
    private struct Outcome: Hashable {
        var operation: String
        var status: Int
    }
    private var requestCounters: [Outcome: Counter] = [:]
    private var requestTimers: [String: Timer] = [:]

    private var refusalCounters: [Outcome: Counter] = [:]

    init(api: StorageAPI, access: AccessControl, refusals: RefusalLog, store: StoreAddress, credentials: StoreCredentials?, storeTimeoutMilliseconds: Int, reachability: StoreReachability, logger: Logger) {
        self.api = api
        self.access = access
        self.refusals = refusals
        let limits = RESPLimits(maxBulkBytes: api.limits.maxValueBytes + 64)
        self.store = StoreAdapter(client: BlockingStoreClient(
            address: store, credentials: credentials, limits: limits, timeoutMilliseconds: storeTimeoutMilliseconds, reachability: reachability,
            logger: logger))
        self.logger = logger
    }

    func handle(_ request: FastCGIRequest) {
        let started = DispatchTime.now().uptimeNanoseconds
        let method = request.param("REQUEST_METHOD") ?? ""
        let uri = request.paramBytes("REQUEST_URI") ?? []
        let requestID = request.param("REQUEST_ID") ?? "-"
        logger.debug("request received", metadata: ["kv.op": "\(method)", "request.id": "\(requestID)"])
        // What nginx routed (the location's $kv_endpoint), never the raw URI's path: nginx resolves
        // /storage/../healthz to /healthz before choosing a location.
        let endpoint = request.param("KV_ENDPOINT") ?? ""
        let operation: String
        let response: HTTPResponse
        let isStorage = endpoint == "storage"
        var identity = "-"
        if isStorage {
            operation = ["GET", "HEAD", "POST", "DELETE"].contains(method) ? method : "other"
            (response, identity) = storageResponse(request, method: method, uri: uri)
        } else if let operational = operationalResponse(endpoint: endpoint, method: method) {
            (operation, response) = operational
        } else {
            operation = "other"
            logger.warning("a request came from an nginx location kv-fcgi does not know: each location that passes to kv-fcgi must set $kv_endpoint (see the shipped site)",
                           metadata: ["kv.endpoint": "\(endpoint.prefix(100))", "request.id": "\(requestID)"])
            response = StorageAPI.errorResponse(status: 404, message: "not found: this nginx location is not one of kv-fcgi's")
        }
        request.write(Array(response.cgiHead.utf8))
        if !response.body.isEmpty { request.write(response.body) }
        count(operation, status: response.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
        // The key as sent (still percent-encoded), cut short: keys may be a megabyte long. Only
        // made when a line is logged (metadata is evaluated lazily).
        let key = { isStorage ? String(decoding: uri.dropFirst(Self.storagePrefix.count).prefix { $0 != UInt8(ascii: "?") }.prefix(200), as: UTF8.self) : "-" }
        if isStorage, response.status == 401 || response.status == 403 {
            refused(operation, status: response.status, identity: identity, key: key(), reason: response.bodyText, requestID: requestID)
        }
        if response.status >= 500 {
            logger.warning("request failed", metadata: [
                "kv.op": "\(method)", "kv.key": "\(key())", "http.status": "\(response.status)", "error": "\(response.bodyText)",
                "request.id": "\(requestID)",
            ])
        } else {
            logger.debug("request", metadata: [
                "kv.op": "\(method)", "kv.key": "\(key())", "http.status": "\(response.status)", "request.id": "\(requestID)",
            ])
        }
    }

    private static let storagePrefix = Array("/storage/".utf8)

    private func count(_ operation: String, status: Int, nanoseconds: UInt64) {
        let outcome = Outcome(operation: operation, status: status)
        let counter = requestCounters[outcome] ?? Counter(label: "kv_fcgi_requests_total", dimensions: [("operation", operation), ("status", String(status))])
        requestCounters[outcome] = counter
        counter.increment()
        let timer = requestTimers[operation] ?? Timer(label: "kv_fcgi_request_duration_seconds", dimensions: [("operation", operation)])
        requestTimers[operation] = timer
        timer.recordNanoseconds(Int64(clamping: nanoseconds))
    }

    /// `/healthz`, `/readyz` and the metrics paths, by the endpoint nginx named; nil for any other.
    private func operationalResponse(endpoint: String, method: String) -> (String, HTTPResponse)? {
        let operation: String, path: String
        switch endpoint {
        case "healthz": (operation, path) = ("healthz", "/healthz")
        case "readyz": (operation, path) = ("readyz", "/readyz")
        case "metrics-kv-fcgi": (operation, path) = ("metrics", "/metrics/kv-fcgi")
        case "metrics-kv-stored": (operation, path) = ("metrics", "/metrics/kv-stored")
        default: return nil
        }
        guard method == "GET" || method == "HEAD" else {
            var response = StorageAPI.errorResponse(status: 405, message: "\(path) answers GET and HEAD only")
            response.headers.append(("Allow", "GET, HEAD"))
            return (operation, response)
        }
        var response: HTTPResponse
        switch path {
        case "/healthz":
            // Liveness of the front end (nginx and kv-fcgi); kv-stored is /readyz's business.
            response = Self.json(200, #"{"status":"ok"}"#)
        case "/readyz":
            do throws(KVError) {
                try store.client.ping()
                response = Self.json(200, #"{"status":"ready","storage":"reachable"}"#)
            } catch {
                response = Self.json(503, #"{"status":"unready","error":"# + String(decoding: JSONText.quoted(error.message), as: UTF8.self) + "}")
            }
        case "/metrics/kv-stored":
            if store.client.address.isRedis {
                response = StorageAPI.errorResponse(status: 404, message: "the store is \(store.client.address.name), not kv-stored: use a Redis exporter for its metrics")
                break
            }
            do throws(KVError) {
                response = Self.metrics(try store.client.send(.metrics))
            } catch {
                response = StorageAPI.errorResponse(for: error)
            }
        default:
            response = Self.metrics(ProcessMetrics.exposition())
        }
        if method == "HEAD" { response.body = [] }
        return (operation, response)
    }

    private static func json(_ status: Int, _ text: String) -> HTTPResponse {
        let body = Array((text + "\n").utf8)
        return HTTPResponse(status: status, headers: [("Content-Type", "application/json"), ("Content-Length", String(body.count))], body: body)
    }

    private static func metrics(_ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: 200, headers: [("Content-Type", ProcessMetrics.contentType), ("Content-Length", String(body.count))], body: body)
    }

    /// A 401 or 403: counted by operation and status, and logged (rate-limited) with the
    /// identity's id, never the token.
    private func refused(_ operation: String, status: Int, identity: String, key: String, reason: String, requestID: String) {
        let outcome = Outcome(operation: operation, status: status)
        let counter = refusalCounters[outcome] ?? Counter(label: "kv_fcgi_access_refused_total", dimensions: [("operation", operation), ("status", String(status))])
        refusalCounters[outcome] = counter
        counter.increment()
        refusals.refused(status: status, operation: operation, identity: identity, key: key, reason: reason, requestID: requestID)
    }

    /// The response, and who asked (the identity's id, for the log).
    private func storageResponse(_ request: FastCGIRequest, method: String, uri: [UInt8]) -> (HTTPResponse, String) {
        let response: HTTPResponse
        let authorization = request.param("HTTP_AUTHORIZATION")
        let authentication = access.authenticateBlocking(Credential.fromAuthorization(authorization))
        let identity: String
        switch authentication {
        case .identity(let known): identity = known.id
        case .refused: identity = authorization == nil ? "anonymous" : "invalid-token"
        }
        var httpRequest = HTTPRequest(method: method, requestURI: uri,
                                      ifMatch: request.param("HTTP_IF_MATCH"), ifNoneMatch: request.param("HTTP_IF_NONE_MATCH"),
                                      origin: request.param("HTTP_ORIGIN"), host: request.param("HTTP_HOST"), authorization: authorization)
        do throws(FastCGIRequest.BodyError) {
            // Only POST carries a body the API reads; nginx enforces the same limit first. A
            // POST its client may not make is answered without reading the body.
            if method == "POST", api.accessRefusal(httpRequest, as: authentication) == nil {
                httpRequest.body = try request.readBody(limit: api.limits.maxValueBytes + 4096)
            }
            response = api.handle(httpRequest, as: authentication, store: store)
        } catch {
            switch error {
            case .tooLarge(let length):
                response = StorageAPI.errorResponse(status: 413, message: "the body is \(length) bytes, more than the limit of \(api.limits.maxValueBytes)")
            case .truncated(let read):
                response = StorageAPI.errorResponse(status: 400, message: "the body ended after \(read) bytes, before its Content-Length")
            }
        }
        return (response, identity)
    }
}

/// `BlockingStoreClient` as the `KeyValueStore` the HTTP API expects.
struct StoreAdapter: KeyValueStore {
    let client: BlockingStoreClient

    func get(_ key: [UInt8]) throws(KVError) -> VersionedValue? {
        try client.send(.versionedGet(key))
    }

    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try client.send(.versionedSet(key, value: value, ttl: ttl, precondition: precondition))
    }

    func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try client.send(.versionedDelete(key, precondition: precondition))
    }
}
