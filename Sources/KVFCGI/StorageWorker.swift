import FastCGI
import KVClient
import KVCore
import KVHTTP
import Logging
import NIOCore
import RESP

/// One kv-fcgi worker thread: its own blocking connection to kv-stored, and the HTTP API.
final class StorageWorker: FastCGIServer.Worker {
    private let api: StorageAPI
    private let store: StoreAdapter
    private var logger: Logger

    init(api: StorageAPI, storeSocket: String, storeTimeoutMilliseconds: Int, reachability: StoreReachability, logger: Logger) {
        self.api = api
        let limits = RESPLimits(maxBulkBytes: api.limits.maxValueBytes + 64)
        self.store = StoreAdapter(client: BlockingStoreClient(
            socketPath: storeSocket, limits: limits, timeoutMilliseconds: storeTimeoutMilliseconds, reachability: reachability))
        self.logger = logger
    }

    func handle(_ request: FastCGIRequest) {
        let method = request.param("REQUEST_METHOD") ?? ""
        let uri = request.paramBytes("REQUEST_URI") ?? []
        logger.debug("request received", metadata: ["kv.op": "\(method)", "request.id": "\(request.param("REQUEST_ID") ?? "-")"])
        let response: HTTPResponse
        do throws(FastCGIRequest.BodyError) {
            // Only POST carries a body the API reads; nginx enforces the same limit first.
            let body = method == "POST" ? try request.readBody(limit: api.limits.maxValueBytes + 4096) : []
            response = api.handle(HTTPRequest(method: method, requestURI: uri, body: body,
                                              ifMatch: request.param("HTTP_IF_MATCH"), ifNoneMatch: request.param("HTTP_IF_NONE_MATCH")),
                                  store: store)
        } catch {
            switch error {
            case .tooLarge(let length):
                response = StorageAPI.errorResponse(status: 413, message: "the body is \(length) bytes, more than the limit of \(api.limits.maxValueBytes)")
            case .truncated(let read):
                response = StorageAPI.errorResponse(status: 400, message: "the body ended after \(read) bytes, before its Content-Length")
            }
        }
        request.write(Array(response.cgiHead.utf8))
        if !response.body.isEmpty { request.write(response.body) }
        if response.status >= 500 {
            logger.warning("request failed", metadata: [
                "kv.op": "\(method)", "http.status": "\(response.status)", "error": "\(response.bodyText)",
                "request.id": "\(request.param("REQUEST_ID") ?? "-")",
            ])
        } else {
            logger.debug("request", metadata: ["kv.op": "\(method)", "http.status": "\(response.status)"])
        }
    }
}

/// `BlockingStoreClient` as the `KeyValueStore` the HTTP API expects.
struct StoreAdapter: KeyValueStore {
    let client: BlockingStoreClient

    func get(_ key: [UInt8]) throws(KVError) -> VersionedValue? {
        try client.versionedGet(key)
    }

    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try client.set(key, value: value, ttl: ttl, precondition: precondition)
    }

    func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try client.delete(key, precondition: precondition)
    }
}
