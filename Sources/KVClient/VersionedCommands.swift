import KVCore
import NIOCore
import RESP

/// kv-stored's versioned commands (docs/protocol.md, "Versioned commands"): the options each
/// client puts after the key (and value), and the replies, shared by kv-fcgi's blocking client
/// and kv-ws's pipelined one.
public enum VersionedCommands {
    /// `KVSET key value` is followed by these.
    public static func setOptions(ttl: TTL?, precondition: WritePrecondition) -> [String] {
        (ttl.map { ["PX", String($0.milliseconds)] } ?? []) + condition(precondition)
    }

    /// `KVDEL key` is followed by these.
    public static func deleteOptions(precondition: WritePrecondition) -> [String] {
        condition(precondition)
    }

    /// The condition words (`NX`, `XX`, `IFREV r …`) of `precondition`.
    static func condition(_ precondition: WritePrecondition) -> [String] {
        switch precondition {
        case .none: []
        case .exists: ["XX"]
        case .absent: ["NX"]
        case .revision(let revisions): revisions.flatMap { ["IFREV", String($0)] }
        }
    }

    /// `KVGET`'s reply: null, or `[value, revision, pttl]`.
    public static func getReply(_ reply: RESPValue) throws(KVError) -> VersionedValue? {
        switch reply {
        case .null: return nil
        case .array(let items) where items.count == 3:
            guard case .bulkString(let value) = items[0], case .integer(let revision) = items[1], case .integer(let ttl) = items[2], revision > 0
            else { throw BlockingStoreClient.unexpected(reply) }
            return VersionedValue(value: Array(value.readableBytesView), revision: UInt64(revision), ttlMilliseconds: ttl < 0 ? nil : Int64(ttl))
        default: throw BlockingStoreClient.unexpected(reply)
        }
    }

    /// `KVSET`'s reply: the revision, or `-CONFLICT <current>`.
    public static func setReply(_ reply: RESPValue) throws(KVError) -> WriteResult {
        if case .integer(let revision) = reply, revision > 0 { return .applied(revision: UInt64(revision)) }
        return try conflict(reply)
    }

    /// `KVDEL`'s reply: `[deleted, revision]`, or `-CONFLICT <current>`.
    public static func deleteReply(_ reply: RESPValue) throws(KVError) -> WriteResult {
        if case .array(let items) = reply, items.count == 2, case .integer = items[0], case .integer(let revision) = items[1], revision >= 0 {
            return .applied(revision: UInt64(revision))
        }
        return try conflict(reply)
    }

    private static func conflict(_ reply: RESPValue) throws(KVError) -> WriteResult {
        if case .error(let text) = reply {
            let words = String(buffer: text).split(separator: " ")
            if words.count == 2, words[0] == "CONFLICT", let current = UInt64(words[1]) { return .conflict(current: current) }
        }
        throw BlockingStoreClient.unexpected(reply)
    }
}

/// `KVSYNC`'s reply: how a subscriber of one key is exactly up to date at `revision`.
public struct SyncReply: Sendable, Equatable {
    public enum Mode: String, Sendable {
        /// Nothing to catch up (or the current state, asked for with INITIAL).
        case live
        /// The key's changes after the subscriber's revision, from kv-stored's history.
        case replay
        /// The history does not reach back that far, or the data is another (epoch): the current state.
        case reset
    }

    /// One change, or a current state (`kind` nil: absent).
    public struct Change: Sendable, Equatable {
        public var kind: ChangeKind?
        public var revision: UInt64
        public var value: ByteBuffer?
    }

    public var mode: Mode
    public var epoch: String
    public var revision: UInt64
    public var changes: [Change]
}

extension VersionedCommands {
    /// `KVSYNC key` is followed by these.
    public static func syncOptions(since: UInt64?, epoch: String?, initial: Bool) -> [String] {
        (since.map { ["SINCE", String($0), "EPOCH", epoch ?? ""] } ?? []) + (initial ? ["INITIAL"] : [])
    }

    public static func syncReply(_ reply: RESPValue) throws(KVError) -> SyncReply {
        guard case .array(let items) = reply, items.count == 4, let modeText = items[0].string, let mode = SyncReply.Mode(rawValue: modeText),
              let epoch = items[1].string, case .integer(let revision) = items[2], revision >= 0, case .array(let entries) = items[3]
        else { throw BlockingStoreClient.unexpected(reply) }
        var changes: [SyncReply.Change] = []
        for entry in entries {
            guard case .array(let fields) = entry, fields.count >= 2, let kindText = fields[0].string, case .integer(let at) = fields[1], at >= 0 else {
                throw BlockingStoreClient.unexpected(reply)
            }
            if kindText == "absent" {
                changes.append(SyncReply.Change(kind: nil, revision: UInt64(at), value: nil))
                continue
            }
            guard let kind = ChangeKind(rawValue: kindText) else { throw BlockingStoreClient.unexpected(reply) }
            var value: ByteBuffer?
            if kind == .set {
                guard fields.count == 3, case .bulkString(let bytes) = fields[2] else { throw BlockingStoreClient.unexpected(reply) }
                value = bytes
            }
            changes.append(SyncReply.Change(kind: kind, revision: UInt64(at), value: value))
        }
        return SyncReply(mode: mode, epoch: epoch, revision: UInt64(revision), changes: changes)
    }
}
