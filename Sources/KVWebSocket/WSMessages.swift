import KVCore
import NIOCore

/// A client message of the WebSocket API (`{type, payload}`, see API.md), validated.
public enum ClientMessage: Equatable, Sendable {
    case get(key: [UInt8])
    case set(key: [UInt8], value: [UInt8], ttl: TTL?)
    case delete(key: [UInt8])
    case subscribe(key: [UInt8])
    case unsubscribe(key: [UInt8])

    /// Reads one text frame. Anything that is not a valid message throws a `KVError` whose
    /// message is what the client is told; nothing is stored for it.
    public static func parse(_ text: [UInt8], limits: Limits, reader: JSONReader = JSONReader()) throws(KVError) -> ClientMessage {
        let document = try reader.read(text)
        guard document.root.kind == .object else {
            throw KVError(.invalidRequest, "a message must be a JSON object {\"type\": …, \"payload\": …}")
        }
        guard let typeValue = document.root[member: "type"], let type = document.string(typeValue) else {
            throw KVError(.invalidRequest, "\"type\" must be a string")
        }
        guard ["get", "set", "delete", "subscribe", "unsubscribe"].contains(type) else {
            throw KVError(.invalidRequest, "unknown type \"\(type)\"; use get, set, delete, subscribe or unsubscribe")
        }
        guard let payload = document.root[member: "payload"], payload.kind == .object else {
            throw KVError(.invalidRequest, "\"payload\" must be an object")
        }
        guard let keyValue = payload[member: "key"], let key = document.string(keyValue) else {
            throw KVError(.invalidKey, "payload.key must be a string")
        }
        let keyBytes = Array(key.utf8)
        try StorageKey.validate(keyBytes, limits: limits)
        switch type {
        case "get": return .get(key: keyBytes)
        case "delete": return .delete(key: keyBytes)
        case "subscribe": return .subscribe(key: keyBytes)
        case "unsubscribe": return .unsubscribe(key: keyBytes)
        default:
            guard let value = payload[member: "value"] else { throw KVError(.invalidRequest, "payload.value is required for set") }
            let ttl = try TTL.fromJSON(payload[member: "ttl"], in: document)
            let text = document.compactText(of: value)
            guard text.count <= limits.maxValueBytes else {
                throw KVError(.tooLarge, "the value is \(text.count) bytes, the limit is \(limits.maxValueBytes)")
            }
            return .set(key: keyBytes, value: text, ttl: ttl)
        }
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

    /// The JSON text of the message, written straight into one buffer.
    public func encoded() -> ByteBuffer {
        switch self {
        case .value(let key, let value):
            let quotedKey = JSONText.quoted(String(decoding: key, as: UTF8.self))
            var out = ByteBuffer()
            out.reserveCapacity(quotedKey.count + value.count + 48)
            out.writeStaticString(#"{"type":"value","payload":{"key":"#)
            out.writeBytes(quotedKey)
            out.writeStaticString(#","value":"#)
            out.writeBytes(value)
            out.writeStaticString("}}")
            return out
        case .noValue(let key):
            let quotedKey = JSONText.quoted(String(decoding: key, as: UTF8.self))
            var out = ByteBuffer()
            out.reserveCapacity(quotedKey.count + 40)
            out.writeStaticString(#"{"type":"no-value","payload":{"key":"#)
            out.writeBytes(quotedKey)
            out.writeStaticString("}}")
            return out
        case .error(let message):
            var out = ByteBuffer(staticString: #"{"type":"error","payload":"#)
            out.writeBytes(JSONText.quoted(message))
            out.writeStaticString("}")
            return out
        }
    }
}
