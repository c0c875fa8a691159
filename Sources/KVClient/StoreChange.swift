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

    public init(key: ByteBuffer, kind: ChangeKind, revision: UInt64, value: ByteBuffer?) {
        self.key = key
        self.kind = kind
        self.revision = revision
        self.value = value
    }

    /// Reads a pub/sub `message` push (`["message", key, payload]`); nil for anything else.
    public init?(push elements: [RESPValue]) {
        guard elements.count == 3, elements[0].string == "message",
              case .bulkString(let key) = elements[1], case .bulkString(let payload) = elements[2]
        else { return nil }
        self.init(channel: key, payload: payload)
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
