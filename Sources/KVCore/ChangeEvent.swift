/// What happened to a key. Every change takes the next value of kv-stored's global revision.
public enum ChangeKind: String, Sendable, Equatable, CaseIterable {
    /// The key was written (every successful write, even with an equal value).
    case set
    /// The key existed and was deleted.
    case deleted
    /// The key's TTL ran out and kv-stored removed it.
    case expired
}

/// The payload of a change-feed message: `set:<revision>:<value bytes>`,
/// `deleted:<revision>` or `expired:<revision>` (see docs/protocol.md).
///
/// It travels as the payload of a plain pub/sub `message` on a channel named after the key,
/// so a Redis/Valkey backend can produce identical events with one `PUBLISH` in a server-side
/// function that writes and publishes atomically.
public enum ChangePayload {
    /// The bytes before the value: `set:42:`, or the whole payload for deletions.
    public static func header(kind: ChangeKind, revision: UInt64) -> String {
        kind == .set ? "set:\(revision):" : "\(kind.rawValue):\(revision)"
    }

    public struct Parsed: Equatable, Sendable {
        public var kind: ChangeKind
        public var revision: UInt64
        /// Where the value starts in the payload (`set` only); it runs to the end.
        public var valueOffset: Int?
    }

    /// Parses a payload; nil when it is not one kv-stored produces.
    public static func parse(_ payload: UnsafeRawBufferPointer) -> Parsed? {
        var i = 0
        while i < payload.count, payload[i] != UInt8(ascii: ":") { i += 1 }
        guard i < payload.count else { return nil }
        let kindText = String(decoding: UnsafeRawBufferPointer(rebasing: payload[0..<i]), as: UTF8.self)
        guard let kind = ChangeKind(rawValue: kindText) else { return nil }
        i += 1
        var revision: UInt64 = 0
        var digits = 0
        while i < payload.count, payload[i] >= 0x30, payload[i] <= 0x39 {
            let (m, o1) = revision.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(payload[i] - 0x30))
            if o1 || o2 { return nil }
            revision = s
            digits += 1
            i += 1
        }
        guard digits > 0 else { return nil }
        if kind == .set {
            guard i < payload.count, payload[i] == UInt8(ascii: ":") else { return nil }
            return Parsed(kind: kind, revision: revision, valueOffset: i + 1)
        }
        guard i == payload.count else { return nil }
        return Parsed(kind: kind, revision: revision, valueOffset: nil)
    }
}
