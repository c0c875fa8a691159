/// One HTTP request as kv-fcgi receives it from nginx over FastCGI.
public struct HTTPRequest: Sendable, Equatable {
    /// `REQUEST_METHOD`.
    public var method: String
    /// `REQUEST_URI`: the raw request target, still percent-encoded, query included.
    public var requestURI: [UInt8]
    /// The request body (POST), already read in full.
    public var body: [UInt8]
    /// The `If-Match` and `If-None-Match` headers, as sent.
    public var ifMatch: String?
    public var ifNoneMatch: String?
    /// The `Origin` and `Host` headers: a browser's page and the site it sent the request to.
    public var origin: String?
    public var host: String?
    /// The `Authorization` header (docs/access.md): `Bearer <token>`.
    public var authorization: String?

    public init(method: String, requestURI: [UInt8], body: [UInt8] = [], ifMatch: String? = nil, ifNoneMatch: String? = nil,
                origin: String? = nil, host: String? = nil, authorization: String? = nil) {
        self.method = method
        self.requestURI = requestURI
        self.body = body
        self.ifMatch = ifMatch
        self.ifNoneMatch = ifNoneMatch
        self.origin = origin
        self.host = host
        self.authorization = authorization
    }

    public init(method: String, uri: String, body: String = "", ifMatch: String? = nil, ifNoneMatch: String? = nil,
                origin: String? = nil, host: String? = nil, authorization: String? = nil) {
        self.init(method: method, requestURI: Array(uri.utf8), body: Array(body.utf8), ifMatch: ifMatch, ifNoneMatch: ifNoneMatch,
                  origin: origin, host: host, authorization: authorization)
    }
}

/// The response kv-fcgi writes back.
public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func == (a: HTTPResponse, b: HTTPResponse) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.map { "\($0.name): \($0.value)" } == b.headers.map { "\($0.name): \($0.value)" }
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// The CGI-style head libfcgi responders write: `Status:` then the headers, then a blank line.
    public var cgiHead: String {
        var head = "Status: \(status) \(Self.reason(status))\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        return head + "\r\n"
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 202: "Accepted"
        case 204: "No Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 412: "Precondition Failed"
        case 413: "Content Too Large"
        case 500: "Internal Server Error"
        case 503: "Service Unavailable"
        case 507: "Insufficient Storage"
        default: "Status"
        }
    }
}
