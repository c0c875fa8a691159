import KVAccess
import KVCore

#if canImport(Glibc)
import Glibc
#endif

/// What the HTTP API needs from kv-stored; `BlockingStoreClient` provides it in kv-fcgi.
/// Conditional writes are checked and applied by the store in one atomic step.
public protocol KeyValueStore {
    func get(_ key: [UInt8]) throws(KVError) -> VersionedValue?
    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult
    func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult
    /// One page of the keys under `query.prefix`, in one consistent step of the store.
    func list(_ query: ListingQuery) throws(KVError) -> KeyListing
}

/// The HTTP API of docs/api.md for `/storage/:key`, independent of FastCGI: a request
/// goes in, a response comes out. Every status code of the contract is decided here.
///
/// Versions (docs/http.md): a key's revision is its ETag. `GET` sends it (and `KV-Expires-At`
/// for a key with a TTL) and honours `If-None-Match` (304) and `If-Match`; `POST` and
/// `DELETE` honour `If-Match` and `If-None-Match: *`, with 412 and the current ETag when the
/// condition fails. A request without those headers behaves exactly as docs/api.md says.
public struct StorageAPI: Sendable {
    public let limits: Limits
    public let reader: JSONReader
    /// The browser origins allowed (docs/security.md); requests without `Origin` always are.
    public let origins: OriginPolicy
    /// Unix time in milliseconds, for `KV-Expires-At`.
    public let now: @Sendable () -> Int64

    public static let allowedMethods = "GET, HEAD, POST, DELETE"

    public init(limits: Limits, reader: JSONReader = JSONReader(), origins: OriginPolicy = OriginPolicy(),
                now: @escaping @Sendable () -> Int64 = StorageAPI.unixMilliseconds) {
        self.limits = limits
        self.reader = reader
        self.origins = origins
        self.now = now
    }

    public static func unixMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Answers `request` from the client `authentication` names (kv-fcgi authenticates the
    /// `Authorization` header with `AccessControl`; without an access file everyone may do
    /// everything): `begin`, the store's call if one is needed, then `finish`.
    public func handle(_ request: HTTPRequest, as authentication: Authentication = .identity(.open), store: some KeyValueStore) -> HTTPResponse {
        switch begin(request, as: authentication) {
        case .answered(let response):
            return response
        case .get(let key, let reading):
            return finish(reading, Result { () throws(KVError) in try store.get(key) })
        case .set(let key, let value, let ttl, let precondition, let writing):
            return finish(writing, Result { () throws(KVError) in try store.set(key, value: value, ttl: ttl, precondition: precondition) })
        case .delete(let key, let precondition, let writing):
            return finish(writing, Result { () throws(KVError) in try store.delete(key, precondition: precondition) })
        case .list(let query, let listing):
            return finish(listing, Result { () throws(KVError) in try store.list(query) })
        }
    }

    /// A request taken as far as it goes without the store: answered, or the one store call it
    /// needs with what `finish` needs to answer from its reply. kv-fcgi sends the calls of the
    /// requests that arrive together to the store in one pipeline.
    public enum Step {
        case answered(HTTPResponse)
        case get(key: [UInt8], Reading)
        case set(key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition, Writing)
        case delete(key: [UInt8], precondition: WritePrecondition, Writing)
        /// `GET /storage/?prefix=…`: one page of keys.
        case list(ListingQuery, Listing)
    }

    /// What answers a listing once the page is known.
    public struct Listing: Sendable {
        /// Who asked: the keys under the prefix it may not read are left out.
        let reader: Identity
        let prefix: [UInt8]
        let values: Bool
        let isHead: Bool
        var origin: String?
    }

    /// What answers a GET or HEAD once the value is known.
    public struct Reading: Sendable {
        let ifMatch: EntityTags?
        let ifNoneMatch: EntityTags?
        let isHead: Bool
        var origin: String?
    }

    /// What answers a POST or DELETE once the store has applied it, or not.
    public struct Writing: Sendable {
        let isDelete: Bool
        var origin: String?
    }

    /// The browser-origin check first (a page of another site gets 403 and nothing is read or
    /// written; an allowed one gets CORS headers and its preflight answered), then the access
    /// rules (401 or 403, before the store is asked anything), then the request itself.
    public func begin(_ request: HTTPRequest, as authentication: Authentication = .identity(.open)) -> Step {
        guard let origin = request.origin else { return plan(request, as: authentication) }
        guard origins.allows(origin: origin, host: request.host) else {
            let shown = String(decoding: JSONText.quoted(String(origin.prefix(200))), as: UTF8.self)
            return .answered(Self.errorResponse(
                status: 403, message: "origin \(shown) is not allowed: pages of other sites may use this API only if the admin lists them (--allowed-origins)"))
        }
        if request.method == "OPTIONS" {
            // A CORS preflight: what a page of an allowed origin may send.
            var response = Self.empty(204)
            response.headers += [
                ("Access-Control-Allow-Methods", Self.allowedMethods),
                ("Access-Control-Allow-Headers", "Content-Type, If-Match, If-None-Match, Authorization"),
                ("Access-Control-Max-Age", "600"),
                ("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
            ]
            return .answered(response)
        }
        switch plan(request, as: authentication) {
        case .answered(let response): return .answered(Self.allowing(origin, response))
        case .get(let key, var reading):
            reading.origin = origin
            return .get(key: key, reading)
        case .set(let key, let value, let ttl, let precondition, var writing):
            writing.origin = origin
            return .set(key: key, value: value, ttl: ttl, precondition: precondition, writing)
        case .delete(let key, let precondition, var writing):
            writing.origin = origin
            return .delete(key: key, precondition: precondition, writing)
        case .list(let query, var listing):
            listing.origin = origin
            return .list(query, listing)
        }
    }

    /// The answer to a listing from the store's page: 200 with `{"keys"|"items", "next", "revision"?}`.
    public func finish(_ listing: Listing, _ page: Result<KeyListing, KVError>) -> HTTPResponse {
        var response: HTTPResponse
        switch page {
        case .failure(let error): response = Self.errorResponse(for: error)
        case .success(let page):
            let body = listing.reader.readable(page, under: listing.prefix).json(values: listing.values, now: now())
            response = HTTPResponse(status: 200, headers: [("Content-Type", "application/json"), ("Content-Length", String(body.count))],
                                    body: listing.isHead ? [] : body)
        }
        return listing.origin.map { Self.allowing($0, response) } ?? response
    }

    /// The answer to a GET or HEAD from the store's reply.
    public func finish(_ reading: Reading, _ stored: Result<VersionedValue?, KVError>) -> HTTPResponse {
        let response: HTTPResponse
        switch stored {
        case .failure(let error): response = Self.errorResponse(for: error)
        case .success(nil): response = reading.ifMatch == nil ? HTTPResponse(status: 204) : Self.preconditionFailed(current: 0)
        case .success(let stored?): response = found(stored, reading)
        }
        return reading.origin.map { Self.allowing($0, response) } ?? response
    }

    /// The answer to a POST or DELETE from the store's reply.
    public func finish(_ writing: Writing, _ written: Result<WriteResult, KVError>) -> HTTPResponse {
        var response: HTTPResponse
        switch written {
        case .failure(let error): response = Self.errorResponse(for: error)
        case .success(.conflict(let current)): response = Self.preconditionFailed(current: current)
        // No ETag on a DELETE's success: nginx would hold a DELETE's 200 against its If-Match.
        case .success(.applied) where writing.isDelete: response = Self.empty(200)
        case .success(.applied(let revision)):
            response = Self.empty(202)
            response.headers.append(("ETag", EntityTags.tag(revision)))
        }
        return writing.origin.map { Self.allowing($0, response) } ?? response
    }

    /// A response to a page of an allowed origin: CORS headers added.
    private static func allowing(_ origin: String, _ response: HTTPResponse) -> HTTPResponse {
        var response = response
        response.headers += [
            ("Access-Control-Expose-Headers", "ETag, KV-Expires-At, WWW-Authenticate"),
            ("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
        ]
        return response
    }

    /// What the access rules say of a storage request, decided from the method and the key
    /// alone: the key is parsed here, once, for the check and for the operation.
    private enum AccessDecision {
        /// 401 or 403.
        case refused(HTTPResponse)
        /// Not a method of the API: 405, whoever asks.
        case notAllowedMethod
        /// An unusable key: the API's 400 or 413, whoever asks (it names no key to protect).
        case unusableKey(KVError)
        case allowed(key: [UInt8])
        /// A listing, which `reader` may see part or all of.
        case listing(ListingQuery, reader: Identity)
    }

    private func decide(_ request: HTTPRequest, as authentication: Authentication) -> AccessDecision {
        let identity: Identity
        switch authentication {
        case .identity(let known): identity = known
        case .refused(let reason): return .refused(Self.unauthorized(reason, invalidToken: request.authorization != nil))
        }
        let operation: AccessOperation
        switch request.method {
        case "GET", "HEAD": operation = .read
        case "POST": operation = .write
        case "DELETE": operation = .delete
        default: return .notAllowedMethod
        }
        let key: [UInt8]
        do throws(KVError) {
            if operation == .read, let query = try StorageKeyPath.listing(fromRequestURI: request.requestURI, limits: limits) {
                if let refusal = Self.refusal(identity.refusal(.read, prefix: query.prefix)) { return .refused(refusal) }
                return .listing(query, reader: identity)
            }
            key = try StorageKeyPath.key(fromRequestURI: request.requestURI, limits: limits)
        } catch {
            return .unusableKey(error)
        }
        if let refusal = Self.refusal(operation, key: key, identity) { return .refused(refusal) }
        return .allowed(key: key)
    }

    /// The 401 or 403 for a request its client may not make, or nil, so kv-fcgi answers a
    /// refused POST without reading its body.
    public func accessRefusal(_ request: HTTPRequest, as authentication: Authentication) -> HTTPResponse? {
        if case .refused(let response) = decide(request, as: authentication) { return response }
        return nil
    }

    private func plan(_ request: HTTPRequest, as authentication: Authentication) -> Step {
        let key: [UInt8]
        switch decide(request, as: authentication) {
        case .refused(let response):
            return .answered(response)
        case .notAllowedMethod:
            var response = Self.errorResponse(status: 405, message: "method \(request.method) is not allowed; use \(Self.allowedMethods)")
            response.headers.append(("Allow", Self.allowedMethods))
            return .answered(response)
        case .unusableKey(let error):
            return .answered(Self.errorResponse(for: error))
        case .allowed(let allowed):
            key = allowed
        case .listing(let query, let reader):
            return .list(query, Listing(reader: reader, prefix: query.prefix, values: query.values, isHead: request.method == "HEAD"))
        }
        do throws(KVError) {
            switch request.method {
            case "GET", "HEAD":
                let ifMatch = try request.ifMatch.map { header throws(KVError) in try EntityTags.parse(header, name: "If-Match") }
                let ifNoneMatch = try request.ifNoneMatch.map { header throws(KVError) in try EntityTags.parse(header, name: "If-None-Match") }
                return .get(key: key, Reading(ifMatch: ifMatch, ifNoneMatch: ifNoneMatch, isHead: request.method == "HEAD"))
            case "POST":
                let (value, ttl) = try parseWrite(request.body)
                return .set(key: key, value: value, ttl: ttl, precondition: try Self.writePrecondition(request), Writing(isDelete: false))
            default:  // DELETE: decide let no other method through
                return .delete(key: key, precondition: try Self.writePrecondition(request), Writing(isDelete: true))
            }
        } catch {
            return .answered(Self.errorResponse(for: error))
        }
    }

    /// 200 with the value (or 304, or 412 for a failed If-Match).
    private func found(_ stored: VersionedValue, _ reading: Reading) -> HTTPResponse {
        let etag = EntityTags.tag(stored.revision)
        if let ifMatch = reading.ifMatch, !ifMatch.matchesStrongly(stored.revision) { return Self.preconditionFailed(current: stored.revision) }
        if let ifNoneMatch = reading.ifNoneMatch, ifNoneMatch.matchesWeakly(stored.revision) {
            return HTTPResponse(status: 304, headers: [("ETag", etag)])
        }
        var body = Array(#"{"value":"#.utf8)
        body.reserveCapacity(stored.value.count + 10)
        body += stored.value
        body.append(UInt8(ascii: "}"))
        var headers = [("Content-Type", "application/json"), ("Content-Length", String(body.count)), ("ETag", etag)]
        if let ttl = stored.ttlMilliseconds { headers.append(("KV-Expires-At", String(now() + ttl))) }
        return HTTPResponse(status: 200, headers: headers, body: reading.isHead ? [] : body)
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

    /// The precondition of a POST or DELETE: `If-Match` (`*`: the key exists; tags: its
    /// revision is one of them) or `If-None-Match: *` (the key is absent).
    static func writePrecondition(_ request: HTTPRequest) throws(KVError) -> WritePrecondition {
        switch (request.ifMatch, request.ifNoneMatch) {
        case (nil, nil):
            return .none
        case (let ifMatch?, nil):
            switch try EntityTags.parse(ifMatch, name: "If-Match") {
            case .any: return .exists
            case .list(let tags):
                let revisions = tags.compactMap { $0.weak ? nil : $0.revision }
                // A list with no tag of ours can never match; kv-stored still reports the
                // current revision for the 412 (UInt64.max is never a revision).
                return .revision(in: revisions.isEmpty ? [UInt64.max] : revisions)
            }
        case (nil, let ifNoneMatch?):
            guard try EntityTags.parse(ifNoneMatch, name: "If-None-Match") == .any else {
                throw KVError(.invalidRequest, "If-None-Match on \(request.method) supports only * (create only if absent); use If-Match for a revision")
            }
            return .absent
        case (.some, .some):
            throw KVError(.invalidRequest, "send If-Match or If-None-Match, not both")
        }
    }

    /// 401: no usable credentials (RFC 6750: `invalid_token` when a token was sent).
    static func unauthorized(_ reason: String, invalidToken: Bool) -> HTTPResponse {
        var response = errorResponse(status: 401, message: "unauthorized: \(reason)")
        let challenge = invalidToken
            ? #"Bearer realm="kvserver", error="invalid_token", error_description="# + String(decoding: JSONText.quoted(reason), as: UTF8.self)
            : #"Bearer realm="kvserver""#
        response.headers.append(("WWW-Authenticate", challenge))
        return response
    }

    /// The answer to an operation `identity` may not do to `key`: 401 for a client without
    /// credentials (a token may allow it), 403 for one whose token does not. Nil when allowed.
    static func refusal(_ operation: AccessOperation, key: [UInt8], _ identity: Identity) -> HTTPResponse? {
        refusal(identity.refusal(operation, key: key))
    }

    /// The 401 or 403 that says `refusal`, or nil for none.
    static func refusal(_ refusal: AccessRefusal?) -> HTTPResponse? {
        guard let refusal else { return nil }
        if refusal.needsCredentials { return unauthorized(refusal.reason, invalidToken: false) }
        var response = errorResponse(status: 403, message: refusal.reason)
        response.headers.append(("WWW-Authenticate", #"Bearer realm="kvserver", error="insufficient_scope""#))
        return response
    }

    /// 412, with the key's current ETag when it exists.
    static func preconditionFailed(current: UInt64) -> HTTPResponse {
        let message = current == 0 ? "precondition failed: the key does not exist" : "precondition failed: the key is at revision \(current) (ETag \(EntityTags.tag(current)))"
        var response = errorResponse(status: 412, message: message)
        if current > 0 { response.headers.append(("ETag", EntityTags.tag(current))) }
        return response
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
        case .storageFull: 507
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
