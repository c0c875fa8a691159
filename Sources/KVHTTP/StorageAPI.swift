import KVCore

/// What the HTTP API needs from kv-stored; `BlockingStoreClient` provides it in kv-fcgi.
public protocol KeyValueStore {
    func get(_ key: [UInt8]) throws(KVError) -> [UInt8]?
    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?) throws(KVError)
    func delete(_ key: [UInt8]) throws(KVError) -> Bool
}

/// The HTTP API of `../shared/API.md` for `/storage/:key`, independent of FastCGI: a request
/// goes in, a response comes out. Every status code of the contract is decided here.
public struct StorageAPI: Sendable {
    public let limits: Limits
    public let reader: JSONReader

    public static let allowedMethods = "GET, HEAD, POST, DELETE"

    public init(limits: Limits, reader: JSONReader = JSONReader()) {
        self.limits = limits
        self.reader = reader
    }

    public func handle(_ request: HTTPRequest, store: some KeyValueStore) -> HTTPResponse {
        do throws(KVError) {
            switch request.method {
            case "GET", "HEAD":
                let key = try StorageKeyPath.key(fromRequestURI: request.requestURI, limits: limits)
                guard let value = try store.get(key) else { return HTTPResponse(status: 204) }
                var body = Array(#"{"value":"#.utf8)
                body.reserveCapacity(value.count + 10)
                body += value
                body.append(UInt8(ascii: "}"))
                let headers = [("Content-Type", "application/json"), ("Content-Length", String(body.count))]
                return HTTPResponse(status: 200, headers: headers, body: request.method == "HEAD" ? [] : body)
            case "POST":
                let key = try StorageKeyPath.key(fromRequestURI: request.requestURI, limits: limits)
                let (value, ttl) = try parseWrite(request.body)
                try store.set(key, value: value, ttl: ttl)
                return Self.empty(202)
            case "DELETE":
                let key = try StorageKeyPath.key(fromRequestURI: request.requestURI, limits: limits)
                _ = try store.delete(key)
                return Self.empty(200)
            default:
                var response = Self.errorResponse(status: 405, message: "method \(request.method) is not allowed; use \(Self.allowedMethods)")
                response.headers.append(("Allow", Self.allowedMethods))
                return response
            }
        } catch {
            return Self.errorResponse(for: error)
        }
    }

    /// Reads `{"value": any, "ttl"?: number | string | null}`; unknown members are ignored.
    public func parseWrite(_ body: [UInt8]) throws(KVError) -> (value: [UInt8], ttl: TTL?) {
        guard body.count <= limits.maxValueBytes + 4096 else {
            throw KVError(.tooLarge, "the body is \(body.count) bytes, the value limit is \(limits.maxValueBytes)")
        }
        let document = try reader.read(body)
        guard document.root.kind == .object else {
            throw KVError(.invalidRequest, "the body must be a JSON object such as {\"value\": …}")
        }
        guard let value = document.root[member: "value"] else {
            throw KVError(.invalidRequest, "\"value\" is required")
        }
        let ttl = try TTL.fromJSON(document.root[member: "ttl"], in: document)
        let text = document.compactText(of: value)
        guard text.count <= limits.maxValueBytes else {
            throw KVError(.tooLarge, "the value is \(text.count) bytes, the limit is \(limits.maxValueBytes)")
        }
        return (text, ttl)
    }

    /// A response with an empty body, said explicitly so nginx does not fall back to chunking.
    static func empty(_ status: Int) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Length", "0")])
    }

    /// The one mapping from error codes to HTTP statuses.
    public static func status(for code: KVError.Code) -> Int {
        switch code {
        case .invalidKey, .invalidJSON, .invalidRequest, .invalidTTL: 400
        case .tooLarge: 413
        case .storageUnavailable: 503
        case .storageError: 500
        }
    }

    public static func errorResponse(for error: KVError) -> HTTPResponse {
        errorResponse(status: status(for: error.code), message: error.message)
    }

    public static func errorResponse(status: Int, message: String) -> HTTPResponse {
        let body = Array(#"{"error":"#.utf8) + JSONText.quoted(message) + [UInt8(ascii: "}")]
        return HTTPResponse(
            status: status,
            headers: [("Content-Type", "application/json"), ("Content-Length", String(body.count))],
            body: body)
    }
}
