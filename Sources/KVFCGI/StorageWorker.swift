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
    private let store: BlockingStoreClient
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
        self.store = BlockingStoreClient(
            address: store, credentials: credentials, limits: limits, timeoutMilliseconds: storeTimeoutMilliseconds, reachability: reachability,
            logger: logger)
        self.logger = logger
    }

    /// One request of a batch between its arrival and its answer.
    private struct Exchange {
        let request: FastCGIRequest
        let method: String
        let uri: [UInt8]
        let requestID: String
        let isStorage: Bool
        let operation: String
        let identity: String
        var state: State

        enum State {
            case answered(HTTPResponse)
            /// Waiting for its command's reply.
            case reading(StoreCommand<[UInt8], VersionedValue?>, StorageAPI.Reading)
            case writing(StoreCommand<[UInt8], WriteResult>, StorageAPI.Writing)
            case listing(StoreCommand<[UInt8], KeyListing>, StorageAPI.Listing)
        }

        /// The store call it waits for, if any.
        var call: StoreOperation<[UInt8]>? {
            switch state {
            case .answered: nil
            case .reading(let command, _): command.operation
            case .writing(let command, _): command.operation
            case .listing(let command, _): command.operation
            }
        }
    }

    /// Request bodies held at once before the store calls waiting are sent: with a batch of
    /// large POSTs, one thread holds about this much plus one body, not a whole batch of bodies.
    private static let pendingBodyBytes = 1 << 20

    /// Answers the requests that arrived together: each taken as far as it goes without the
    /// store, then their store calls in one pipeline (one round trip to kv-stored for the batch,
    /// not one each), each request answered as its reply is read.
    func handle(_ batch: [FastCGIRequest]) {
        let started = DispatchTime.now().uptimeNanoseconds
        var exchanges: [Exchange] = []
        var bodyBytes = 0
        for (position, request) in batch.enumerated() {
            let exchange = begin(request)
            bodyBytes += exchange.call?.payloadBytes ?? 0
            exchanges.append(exchange)
            if bodyBytes > Self.pendingBodyBytes || position == batch.count - 1 {
                complete(exchanges, started: started)
                exchanges.removeAll(keepingCapacity: true)
                bodyBytes = 0
            }
        }
    }

    /// Sends the store calls of `exchanges` in one pipeline and answers each of them.
    private func complete(_ exchanges: [Exchange], started: UInt64) {
        var waiting: [Int] = []  // the exchanges with a call, in the pipeline's order
        var calls: [StoreOperation<[UInt8]>] = []
        for (index, exchange) in exchanges.enumerated() {
            if case .answered(let response) = exchange.state { answer(exchange, with: response, started: started) }
            if let call = exchange.call {
                waiting.append(index)
                calls.append(call)
            }
        }
        guard !calls.isEmpty else { return }
        // A store that is slow to answer (stalled, or busy) must not hold back the requests that
        // need no store (/healthz) or that another thread could serve meanwhile.
        let stepAside = exchanges.first?.request.stepAside
        store.pipeline(calls, whenSlow: stepAside) { at, reply in
            let exchange = exchanges[waiting[at]]
            switch exchange.state {
            case .answered: break  // never: only waiting exchanges have calls
            case .reading(let command, let reading): answer(exchange, with: api.finish(reading, command.reply(reply)), started: started)
            case .writing(let command, let writing): answer(exchange, with: api.finish(writing, command.reply(reply)), started: started)
            case .listing(let command, let listing): answer(exchange, with: api.finish(listing, command.reply(reply)), started: started)
            }
        }
    }

    /// Reads `request` and decides it: answered, or waiting for one store call.
    private func begin(_ request: FastCGIRequest) -> Exchange {
        let method = request.param("REQUEST_METHOD") ?? ""
        let uri = request.paramBytes("REQUEST_URI") ?? []
        let requestID = request.param("REQUEST_ID") ?? "-"
        logger.debug("request received", metadata: ["kv.op": "\(method)", "request.id": "\(requestID)"])
        // What nginx routed (the location's $kv_endpoint), never the raw URI's path: nginx resolves
        // /storage/../healthz to /healthz before choosing a location.
        let endpoint = request.param("KV_ENDPOINT") ?? ""
        guard endpoint == "storage" else {
            let (operation, response) = operationalResponse(request, endpoint: endpoint, method: method) ?? {
                logger.warning("a request came from an nginx location kv-fcgi does not know: each location that passes to kv-fcgi must set $kv_endpoint (see the shipped site)",
                               metadata: ["kv.endpoint": "\(endpoint.prefix(100))", "request.id": "\(requestID)"])
                return ("other", StorageAPI.errorResponse(status: 404, message: "not found: this nginx location is not one of kv-fcgi's"))
            }()
            return Exchange(request: request, method: method, uri: uri, requestID: requestID, isStorage: false, operation: operation, identity: "-",
                            state: .answered(response))
        }
        var operation = ["GET", "HEAD", "POST", "DELETE"].contains(method) ? method : "other"
        let (step, identity) = storageStep(request, method: method, uri: uri)
        if case .list = step { operation = "LIST" }
        let state: Exchange.State
        switch step {
        case .answered(let response):
            state = .answered(response)
        case .get(let key, let reading):
            state = .reading(.versionedGet(key), reading)
        case .set(let key, let value, let ttl, let precondition, let writing):
            state = .writing(.versionedSet(key, value: value, ttl: ttl, precondition: precondition), writing)
        case .delete(let key, let precondition, let writing):
            state = .writing(.versionedDelete(key, precondition: precondition), writing)
        case .list(let query, let listing):
            state = .listing(.list(query), listing)
        }
        return Exchange(request: request, method: method, uri: uri, requestID: requestID, isStorage: true, operation: operation, identity: identity, state: state)
    }

    /// Writes the response, counts it, and logs what deserves a line.
    private func answer(_ exchange: Exchange, with response: HTTPResponse, started: UInt64) {
        let request = exchange.request, method = exchange.method, requestID = exchange.requestID, isStorage = exchange.isStorage
        let operation = exchange.operation, uri = exchange.uri
        request.write(Array(response.cgiHead.utf8))
        if !response.body.isEmpty { request.write(response.body) }
        count(operation, status: response.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
        // The key as sent (still percent-encoded), cut short: keys may be a megabyte long. Only
        // made when a line is logged (metadata is evaluated lazily).
        let key = { isStorage ? String(decoding: uri.dropFirst(Self.storagePrefix.count).prefix { $0 != UInt8(ascii: "?") }.prefix(200), as: UTF8.self) : "-" }
        if isStorage, response.status == 401 || response.status == 403 {
            refused(operation, status: response.status, identity: exchange.identity, key: key(), reason: response.bodyText, requestID: requestID)
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
    private func operationalResponse(_ request: FastCGIRequest, endpoint: String, method: String) -> (String, HTTPResponse)? {
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
            request.stepAside()  // probes must not hold back requests while the store is slow
            do throws(KVError) {
                try store.ping()
                response = Self.json(200, #"{"status":"ready","storage":"reachable"}"#)
            } catch {
                response = Self.json(503, #"{"status":"unready","error":"# + String(decoding: JSONText.quoted(error.message), as: UTF8.self) + "}")
            }
        case "/metrics/kv-stored":
            if store.address.isRedis {
                response = StorageAPI.errorResponse(status: 404, message: "the store is \(store.address.name), not kv-stored: use a Redis exporter for its metrics")
                break
            }
            request.stepAside()
            do throws(KVError) {
                response = Self.metrics(try store.send(.metrics))
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

    /// How far the request goes without the store, and who asked (the identity's id, for the log).
    private func storageStep(_ request: FastCGIRequest, method: String, uri: [UInt8]) -> (StorageAPI.Step, String) {
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
            return (api.begin(httpRequest, as: authentication), identity)
        } catch {
            switch error {
            case .tooLarge(let length):
                return (.answered(StorageAPI.errorResponse(status: 413, message: "the body is \(length) bytes, more than the limit of \(api.limits.maxValueBytes)")), identity)
            case .truncated(let read):
                return (.answered(StorageAPI.errorResponse(status: 400, message: "the body ended after \(read) bytes, before its Content-Length")), identity)
            }
        }
    }
}
