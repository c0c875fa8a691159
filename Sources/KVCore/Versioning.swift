/// When a conditional write or delete may happen (HTTP `If-Match` / `If-None-Match: *`,
/// WebSocket `ifRev`). kv-stored checks it and writes in one atomic step.
public enum WritePrecondition: Sendable, Equatable {
    /// Unconditional.
    case none
    /// The key must exist (`If-Match: *`).
    case exists
    /// The key must not exist (`If-None-Match: *`, `ifRev: 0`).
    case absent
    /// The key's revision must be one of these; 0 stands for "absent".
    case revision(in: [UInt64])
}

/// What a conditional write or delete did.
public enum WriteResult: Sendable, Equatable {
    /// Done. The revision of the change; for a delete of an absent key (nothing changed), the
    /// store's revision when it found the key absent.
    case applied(revision: UInt64)
    /// The precondition did not hold; nothing changed. The key's revision, 0 when absent.
    case conflict(current: UInt64)
}

/// A value as read with its version.
public struct VersionedValue: Sendable, Equatable {
    public var value: [UInt8]
    /// The revision of the change that wrote it.
    public var revision: UInt64
    /// Milliseconds left before it expires (rounded up), nil without a TTL.
    public var ttlMilliseconds: Int64?

    public init(value: [UInt8], revision: UInt64, ttlMilliseconds: Int64?) {
        self.value = value
        self.revision = revision
        self.ttlMilliseconds = ttlMilliseconds
    }
}
