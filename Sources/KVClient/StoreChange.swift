import KVCore
import NIOCore
import RESP

/// A change of a subscribed key, as a client receives it from kv-stored's change feed.
public struct StoreChange: Sendable, Equatable {
    public var key: ByteBuffer
    public var kind: ChangeKind
    public var revision: UInt64
    /// The new value for `set`; nil for `deleted` and `expired`.
    public var value: ByteBuffer?
    /// The prefix whose subscription this came through (a `pmessage`); nil for the key's own.
    public var prefix: ByteBuffer?

    public init(key: ByteBuffer, kind: ChangeKind, revision: UInt64, value: ByteBuffer?, prefix: ByteBuffer? = nil) {
        self.key = key
        self.kind = kind
        self.revision = revision
        self.value = value
        self.prefix = prefix
    }

    /// What the change came through: its key's subscription or a prefix's.
    public var topic: Topic<ByteBuffer> { prefix.map { .prefix($0) } ?? .key(key) }

    /// Reads a pub/sub `message` push (`["message", key, payload]`) or a prefix subscription's
    /// `pmessage` (`["pmessage", pattern, key, payload]`); nil for anything else.
    public init?(push elements: [RESPValue]) {
        switch elements.first?.string {
        case "message":
            guard elements.count == 3, case .bulkString(let key) = elements[1], case .bulkString(let payload) = elements[2] else { return nil }
            self.init(channel: key, payload: payload)
        case "pmessage":
            guard elements.count == 4, case .bulkString(let pattern) = elements[1], case .bulkString(let key) = elements[2],
                  case .bulkString(let payload) = elements[3], let prefix = PrefixPattern.prefix(of: pattern.readableBytesView)
            else { return nil }
            self.init(channel: key, payload: payload)
            self.prefix = ByteBuffer(bytes: prefix)
        default:
            return nil
        }
    }

    /// A change of `key` from its change payload (`set:<rev>:<value>`, `deleted:<rev>`, `expired:<rev>`).
    init?(channel key: ByteBuffer, payload: ByteBuffer) {
        guard let parsed = payload.withUnsafeReadableBytes({ ChangePayload.parse($0) }) else { return nil }
        self.key = key
        self.kind = parsed.kind
        self.revision = parsed.revision
        self.value = parsed.valueOffset.flatMap { payload.getSlice(at: payload.readerIndex + $0, length: payload.readableBytes - $0) }
    }
}
