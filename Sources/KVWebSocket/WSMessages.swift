import KVCore
import NIOCore

/// A client message of the WebSocket API (`{type, payload}`, see docs/api.md), validated.
public enum ClientMessage: Equatable, Sendable {
    case get(key: [UInt8])
    case set(key: [UInt8], value: [UInt8], ttl: TTL?)
    case delete(key: [UInt8])
    /// A key, or with `prefix` in the payload every key under it.
    case subscribe(Topic<[UInt8]>)
    case unsubscribe(Topic<[UInt8]>)
    /// One page of the keys under a prefix (docs/websocket.md, "Listing keys").
    case list(ListingQuery)
    /// Credentials for the connection (docs/access.md), for clients that cannot send headers.
    case auth(token: String)

    /// The key the message is about (a listing's prefix); none for `auth`.
    public var key: [UInt8] {
        switch self {
        case .get(let key), .set(let key, _, _), .delete(let key): key
        case .subscribe(let topic), .unsubscribe(let topic): topic.bytes
        case .list(let query): query.prefix
        case .auth: []
        }
    }

    /// Reads one text frame as a seed message (the opt-in fields are ignored). Anything that is
    /// not a valid message throws a `KVError` whose message is what the client is told.
    public static func parse(_ text: [UInt8], limits: Limits, reader: JSONReader = JSONReader()) throws(KVError) -> ClientMessage {
        try ClientRequest.parse(text, limits: limits, reader: reader).request.get().message
    }
}

/// A client message with its opt-in fields (docs/websocket.md): `id` on any message, `ifRev` on
/// `set`/`delete`, `initial` and `since`/`epoch` on `subscribe`. Without them a message is
/// handled, and answered, exactly as the seed protocol says.
public struct ClientRequest: Equatable, Sendable {
    public var message: ClientMessage
    /// The `id` as the client wrote it (JSON text of a string or number), echoed in replies.
    public var id: [UInt8]?
    /// Compare-and-set: the revision the key must be at (0: absent).
    public var ifRev: UInt64?
    /// `subscribe`: send the current state first, atomically with the subscription.
    public var initial = false
    /// `subscribe`: resume after this revision of the data with this epoch.
    public var since: UInt64?
    public var epoch: String?

    /// Whether any opt-in field is used: replies then carry `rev` (and the `id`).
    public var isVersioned: Bool { id != nil || ifRev != nil || initial || since != nil }

    /// Reads one text frame. The `id` is read first, so an error about the rest still echoes it.
    public static func parse(_ text: [UInt8], limits: Limits, reader: JSONReader = JSONReader()) -> (id: [UInt8]?, request: Result<ClientRequest, KVError>) {
        let document: JSONDocument
        do throws(KVError) { document = try reader.read(text) } catch { return (nil, .failure(error)) }
        guard document.root.kind == .object else {
            return (nil, .failure(KVError(.invalidRequest, "a message must be a JSON object {\"type\": …, \"payload\": …}")))
        }
        var id: [UInt8]?
        if let idValue = document.root[member: "id"] {
            guard idValue.kind == .string || idValue.kind == .number else {
                return (nil, .failure(KVError(.invalidRequest, "\"id\" must be a string or a number")))
            }
            id = document.compactText(of: idValue)
        }
        do throws(KVError) {
            return (id, .success(try parse(document, id: id, limits: limits)))
        } catch {
            return (id, .failure(error))
        }
    }

    private static func parse(_ document: JSONDocument, id: [UInt8]?, limits: Limits) throws(KVError) -> ClientRequest {
        guard let typeValue = document.root[member: "type"], let type = document.string(typeValue) else {
            throw KVError(.invalidRequest, "\"type\" must be a string")
        }
        guard ["get", "set", "delete", "subscribe", "unsubscribe", "list", "auth"].contains(type) else {
            throw KVError(.invalidRequest, "unknown type \"\(type)\"; use get, set, delete, subscribe, unsubscribe, list or auth")
        }
        guard let payload = document.root[member: "payload"], payload.kind == .object else {
            throw KVError(.invalidRequest, "\"payload\" must be an object")
        }
        if type == "auth" {
            guard let tokenValue = payload[member: "token"], let token = document.string(tokenValue) else {
                throw KVError(.invalidRequest, "payload.token must be a string")
            }
            var request = ClientRequest(message: .auth(token: token))
            request.id = id
            return request
        }
        if type == "list" {
            var request = ClientRequest(message: .list(try listing(payload, in: document, limits: limits)))
            request.id = id
            return request
        }
        var topic: Topic<[UInt8]>?
        if type == "subscribe" || type == "unsubscribe", let prefixValue = payload[member: "prefix"] {
            guard payload[member: "key"] == nil else { throw KVError(.invalidRequest, "payload has key and prefix: give one") }
            guard let prefix = document.string(prefixValue) else { throw KVError(.invalidRequest, "payload.prefix must be a string (\"\" for every key)") }
            // Checked by the listing rules: UTF-8, no longer than a key, and may be empty.
            topic = .prefix(try ListingQuery(prefix: Array(prefix.utf8), limits: limits).prefix)
        }
        let keyBytes: [UInt8]
        if let topic {
            keyBytes = topic.bytes
        } else {
            guard let keyValue = payload[member: "key"], let key = document.string(keyValue) else {
                throw KVError(.invalidKey, type == "subscribe" || type == "unsubscribe" ? "payload.key (or payload.prefix) must be a string" : "payload.key must be a string")
            }
            keyBytes = Array(key.utf8)
            try StorageKey.validate(keyBytes, limits: limits)
        }
        var request: ClientRequest
        switch type {
        case "get": request = ClientRequest(message: .get(key: keyBytes))
        case "delete": request = ClientRequest(message: .delete(key: keyBytes))
        case "unsubscribe": request = ClientRequest(message: .unsubscribe(topic ?? .key(keyBytes)))
        case "subscribe":
            request = ClientRequest(message: .subscribe(topic ?? .key(keyBytes)))
            if let initial = payload[member: "initial"] {
                guard initial.kind == .true || initial.kind == .false else { throw KVError(.invalidRequest, "payload.initial must be true or false") }
                request.initial = initial.kind == .true
            }
            if let since = payload[member: "since"] {
                request.since = try revision(since, in: document, name: "payload.since")
                if let epoch = payload[member: "epoch"] {
                    guard let text = document.string(epoch) else { throw KVError(.invalidRequest, "payload.epoch must be a string") }
                    request.epoch = text
                }
            }
        default:
            guard let value = payload[member: "value"] else { throw KVError(.invalidRequest, "payload.value is required for set") }
            let ttl = try TTL.fromJSON(payload[member: "ttl"], in: document)
            let text = document.compactText(of: value)
            guard text.count <= limits.maxValueBytes else {
                throw KVError(.tooLarge, "the value is \(text.count) bytes, the limit is \(limits.maxValueBytes)")
            }
            request = ClientRequest(message: .set(key: keyBytes, value: text, ttl: ttl))
        }
        if type == "set" || type == "delete", let ifRev = payload[member: "ifRev"] {
            request.ifRev = try revision(ifRev, in: document, name: "payload.ifRev")
        }
        request.id = id
        return request
    }

    /// `list`'s payload: `{"prefix": string, "after"?: string, "limit"?: 1…1000, "values"?: bool}`.
    private static func listing(_ payload: JSONValue, in document: JSONDocument, limits: Limits) throws(KVError) -> ListingQuery {
        guard let prefixValue = payload[member: "prefix"], let prefix = document.string(prefixValue) else {
            throw KVError(.invalidRequest, "payload.prefix must be a string (\"\" for every key)")
        }
        var after: [UInt8]?
        if let afterValue = payload[member: "after"], afterValue.kind != .null {
            guard let text = document.string(afterValue) else { throw KVError(.invalidRequest, "payload.after must be a string: the next of the page before") }
            after = Array(text.utf8)
        }
        var limit = ListingQuery.defaultLimit
        if let limitValue = payload[member: "limit"] {
            guard limitValue.kind == .number, let text = document.numberText(limitValue), text.count <= 4,
                  let n = Int(String(decoding: text, as: UTF8.self)) else {
                throw KVError(.invalidRequest, "payload.limit must be an integer from 1 to \(ListingQuery.maxLimit)")
            }
            limit = n
        }
        var values = false
        if let valuesValue = payload[member: "values"] {
            guard valuesValue.kind == .true || valuesValue.kind == .false else { throw KVError(.invalidRequest, "payload.values must be true or false") }
            values = valuesValue.kind == .true
        }
        return try ListingQuery(prefix: Array(prefix.utf8), after: after, limit: limit, values: values, limits: limits)
    }

    /// A revision: a JSON integer from 0 to 2^64 - 1, written without fraction or exponent.
    private static func revision(_ value: JSONValue, in document: JSONDocument, name: String) throws(KVError) -> UInt64 {
        guard value.kind == .number, let text = document.numberText(value), let revision = UInt64(String(decoding: text, as: UTF8.self)) else {
            throw KVError(.invalidRequest, "\(name) must be a revision: an integer from 0 up")
        }
        return revision
    }
}

/// A server message of the WebSocket API.
public enum ServerMessage: Equatable, Sendable {
    /// Reply to `get` of an existing key, or a subscribed key was set.
    case value(key: [UInt8], value: [UInt8])
    /// Reply to `get` of a missing key, or a subscribed key was deleted or expired.
    case noValue(key: [UInt8])
    /// Something went wrong; the text says what.
    case error(String)
    /// A request with an `id` succeeded (docs/websocket.md).
    case ok(key: [UInt8])
    /// A prefix subscription or unsubscription with an `id` succeeded.
    case okPrefix(prefix: [UInt8])
    /// A prefix subscription resumed from too far back: what follows (marked `reset`) is the
    /// whole state under the prefix; keys not in it are gone.
    case reset(prefix: [UInt8])
    /// An `auth` message was accepted: who the connection now is, and until when (Unix ms).
    case authenticated(identity: String, expiresAt: Int64?)
    /// Reply to `list`: the page, its payload written by `KeyListing.json` (`now`: Unix ms, for
    /// `expiresAt`).
    case list(KeyListing, values: Bool, now: Int64)

    /// The opt-in fields a message carries beside `type` and `payload`; none for seed messages.
    public struct Envelope: Equatable, Sendable {
        /// The request's `id` (its JSON text).
        public var id: [UInt8]?
        /// The revision the message is about.
        public var rev: UInt64?
        /// The data's epoch (a subscription's `ok`).
        public var epoch: String?
        /// The current state sent when a resume could not replay (`reset: true`).
        public var reset = false
        /// What kind of error (`conflict`).
        public var code: String?
        /// A `no-value` of an exact subscription: the key expired (`"expired": true`) rather than
        /// being deleted.
        public var expired = false

        public init(id: [UInt8]? = nil, rev: UInt64? = nil, epoch: String? = nil, reset: Bool = false, code: String? = nil, expired: Bool = false) {
            self.id = id
            self.rev = rev
            self.epoch = epoch
            self.reset = reset
            self.code = code
            self.expired = expired
        }

        public static let none = Envelope()
    }

    /// The message as a text frame for the socket: its JSON text, written straight into one
    /// buffer behind room for the frame's header, so framing it copies nothing. With an empty
    /// envelope the text is byte for byte the seed protocol's message.
    func framed(_ envelope: Envelope = .none) -> ByteBuffer {
        var frame = ServerFrame.payloadBuffer()
        writeJSON(envelope, into: &frame)
        ServerFrame.frame(.text, &frame)
        return frame
    }

    private func writeJSON(_ envelope: Envelope, into out: inout ByteBuffer) {
        switch self {
        case .value(let key, let value):
            let quotedKey = JSONText.quoted(String(decoding: key, as: UTF8.self))
            out.reserveCapacity(minimumWritableBytes: quotedKey.count + value.count + 48)
            out.writeStaticString(#"{"type":"value""#)
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":{"key":"#)
            out.writeBytes(quotedKey)
            out.writeStaticString(#","value":"#)
            out.writeBytes(value)
            out.writeStaticString("}}")
        case .noValue(let key), .ok(let key):
            // Both carry only the key.
            if case .ok = self { out.writeStaticString(#"{"type":"ok""#) } else { out.writeStaticString(#"{"type":"no-value""#) }
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":{"key":"#)
            out.writeBytes(JSONText.quoted(String(decoding: key, as: UTF8.self)))
            out.writeStaticString("}}")
        case .okPrefix(let prefix), .reset(let prefix):
            if case .reset = self { out.writeStaticString(#"{"type":"reset""#) } else { out.writeStaticString(#"{"type":"ok""#) }
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":{"prefix":"#)
            out.writeBytes(JSONText.quoted(String(decoding: prefix, as: UTF8.self)))
            out.writeStaticString("}}")
        case .authenticated(let identity, let expiresAt):
            out.writeStaticString(#"{"type":"authenticated""#)
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":{"identity":"#)
            out.writeBytes(JSONText.quoted(identity))
            if let expiresAt {
                out.writeStaticString(#","expiresAt":"#)
                out.writeString(String(expiresAt))
            }
            out.writeStaticString("}}")
        case .list(let listing, let values, let now):
            let payload = listing.json(values: values, now: now)
            out.reserveCapacity(minimumWritableBytes: payload.count + 64)
            out.writeStaticString(#"{"type":"list""#)
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":"#)
            out.writeBytes(payload)
            out.writeStaticString("}")
        case .error(let message):
            out.writeStaticString(#"{"type":"error""#)
            Self.write(envelope, into: &out)
            out.writeStaticString(#","payload":"#)
            out.writeBytes(JSONText.quoted(message))
            out.writeStaticString("}")
        }
    }

    private static func write(_ envelope: Envelope, into out: inout ByteBuffer) {
        if let id = envelope.id {
            out.writeStaticString(#","id":"#)
            out.writeBytes(id)
        }
        if let code = envelope.code {
            out.writeStaticString(#","code":"#)
            out.writeBytes(JSONText.quoted(code))
        }
        if let rev = envelope.rev {
            out.writeStaticString(#","rev":"#)
            out.writeString(String(rev))
        }
        if let epoch = envelope.epoch {
            out.writeStaticString(#","epoch":"#)
            out.writeBytes(JSONText.quoted(epoch))
        }
        if envelope.reset { out.writeStaticString(#","reset":true"#) }
        if envelope.expired { out.writeStaticString(#","expired":true"#) }
    }
}
