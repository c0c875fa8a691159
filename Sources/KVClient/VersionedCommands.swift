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

    private static func condition(_ precondition: WritePrecondition) -> [String] {
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
