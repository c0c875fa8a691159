/// What a subscription watches: one key, or every key that starts with a prefix. Generic over
/// how bytes are held (`[UInt8]` in kv-ws's sessions, `ByteBuffer` on a store connection).
public enum Topic<Bytes: Hashable & Sendable>: Hashable, Sendable {
    case key(Bytes)
    case prefix(Bytes)

    /// The key or the prefix.
    public var bytes: Bytes {
        switch self {
        case .key(let bytes), .prefix(let bytes): bytes
        }
    }

    public var isPrefix: Bool {
        if case .prefix = self { return true }
        return false
    }

    /// The same topic with its bytes held another way.
    public func map<Other>(_ transform: (Bytes) -> Other) -> Topic<Other> {
        switch self {
        case .key(let bytes): .key(transform(bytes))
        case .prefix(let bytes): .prefix(transform(bytes))
        }
    }
}
