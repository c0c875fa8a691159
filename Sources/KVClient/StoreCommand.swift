import KVCore
import NIOCore
import RESP

/// What one of kv-stored's commands asks, with its fields typed (docs/protocol.md). Written in
/// kv-stored's words by `arguments`, and for a Redis store by `RedisFunctions.translate`, which
/// reads these fields rather than the words. `A` is how a client holds bytes: `[UInt8]` for
/// kv-fcgi's blocking client (its values arrive as arrays and large ones are sent from there
/// without a copy), `ByteBuffer` for kv-ws's.
public enum StoreOperation<A: CommandArgument> {
    case get(key: A)
    /// Without a TTL the key never expires (and loses any TTL it had).
    case set(key: A, value: A, ttl: TTL?)
    case delete(key: A)
    case versionedGet(key: A)
    case versionedSet(key: A, value: A, ttl: TTL?, precondition: WritePrecondition)
    case versionedDelete(key: A, precondition: WritePrecondition)
    /// `KVSYNC`: how a subscriber of `key` is exactly up to date.
    case sync(key: A, since: UInt64?, epoch: String?, initial: Bool)
    case subscribe(key: A)
    case unsubscribe(key: A)
    /// `PSUBSCRIBE`: every change of every key that starts with `prefix`.
    case psubscribe(prefix: A)
    case punsubscribe(prefix: A)
    /// `KVPSYNC`: how a subscriber of `prefix` is exactly up to date.
    case prefixSync(prefix: A, since: UInt64?, epoch: String?, initial: Bool)
    /// `KVLIST`: one page of the keys under a prefix. About no one key: on a Redis store it
    /// scans the whole server (`RedisFunctions.translate`).
    case list(prefix: A, after: A?, limit: Int, values: Bool)
    /// A command about no key, as it is (`PING`, `KVMETRICS`, `CLUSTER SLOTS`, `INFO`, …):
    /// the same on every store.
    case other([A])

    /// The key the command is about (a cluster sends it to the master of its slot); nil for none.
    public var key: A? {
        switch self {
        case .get(let key), .set(let key, _, _), .delete(let key), .versionedGet(let key), .versionedSet(let key, _, _, _),
             .versionedDelete(let key, _), .sync(let key, _, _, _), .subscribe(let key), .unsubscribe(let key):
            key
        case .list, .psubscribe, .punsubscribe, .prefixSync, .other:
            nil
        }
    }

    /// The bytes of its key and value: what it weighs in a client's queue.
    public var payloadBytes: Int {
        switch self {
        case .set(let key, let value, _), .versionedSet(let key, let value, _, _): key.byteCount + value.byteCount
        case .other(let words): words.reduce(0) { $0 + $1.byteCount }
        case .list(let prefix, let after, _, _): prefix.byteCount + (after?.byteCount ?? 0)
        case .psubscribe(let prefix), .punsubscribe(let prefix), .prefixSync(let prefix, _, _, _): prefix.byteCount
        default: key?.byteCount ?? 0
        }
    }

    /// The command in kv-stored's words.
    public var arguments: [A] {
        switch self {
        case .get(let key): [A.word(.get), key]
        case .set(let key, let value, nil): [A.word(.set), key, value]
        case .set(let key, let value, let ttl?): [A.word(.set), key, value, A.word(.px), A(String(ttl.milliseconds))]
        case .delete(let key): [A.word(.del), key]
        case .versionedGet(let key): [A.word(.kvget), key]
        case .versionedSet(let key, let value, let ttl, let precondition):
            [A.word(.kvset), key, value] + (ttl.map { [A.word(.px), A(String($0.milliseconds))] } ?? []) + Self.condition(precondition)
        case .versionedDelete(let key, let precondition): [A.word(.kvdel), key] + Self.condition(precondition)
        case .sync(let key, let since, let epoch, let initial):
            [A.word(.kvsync), key] + (since.map { [A.word(.since), A(String($0)), A.word(.epoch), A(epoch ?? "")] } ?? []) + (initial ? [A.word(.initial)] : [])
        case .subscribe(let key): [A.word(.subscribe), key]
        case .unsubscribe(let key): [A.word(.unsubscribe), key]
        case .psubscribe(let prefix): [A.word(.psubscribe), A(bytes: PrefixPattern.pattern(of: prefix.bytes))]
        case .punsubscribe(let prefix): [A.word(.punsubscribe), A(bytes: PrefixPattern.pattern(of: prefix.bytes))]
        case .prefixSync(let prefix, let since, let epoch, let initial):
            [A.word(.kvpsync), prefix] + (since.map { [A.word(.since), A(String($0)), A.word(.epoch), A(epoch ?? "")] } ?? []) + (initial ? [A.word(.initial)] : [])
        case .list(let prefix, let after, let limit, let values):
            [A.word(.kvlist), prefix] + (after.map { [A.word(.after), $0] } ?? []) + [A.word(.limit), A(String(limit))]
                + (values ? [A.word(.values)] : [])
        case .other(let words): words
        }
    }

    /// Whether the reply comes as a push: RESP3 answers (un)subscribe requests that way.
    var repliedByPush: Bool {
        switch self {
        case .subscribe, .unsubscribe, .psubscribe, .punsubscribe: true
        default: false
        }
    }

    /// The condition words (`NX`, `XX`, `IFREV r …`) of `precondition`, as both stores take them.
    static func condition(_ precondition: WritePrecondition) -> [A] {
        switch precondition {
        case .none: []
        case .exists: [A.word(.xx)]
        case .absent: [A.word(.nx)]
        case .revision(let revisions): revisions.flatMap { [A.word(.ifrev), A(String($0))] }
        }
    }
}

extension StoreOperation where A: Hashable & Sendable {
    /// For a (un)subscription: what it is about, and whether it subscribes.
    public var subscription: (topic: Topic<A>, subscribing: Bool)? {
        switch self {
        case .subscribe(let key): (.key(key), true)
        case .unsubscribe(let key): (.key(key), false)
        case .psubscribe(let prefix): (.prefix(prefix), true)
        case .punsubscribe(let prefix): (.prefix(prefix), false)
        default: nil
        }
    }

    /// The (un)subscription of `topic`.
    public static func subscription(_ topic: Topic<A>, subscribing: Bool) -> Self {
        switch topic {
        case .key(let key): subscribing ? .subscribe(key: key) : .unsubscribe(key: key)
        case .prefix(let prefix): subscribing ? .psubscribe(prefix: prefix) : .punsubscribe(prefix: prefix)
        }
    }
}

/// A command and the typed reading of its reply: what both clients send
/// (`BlockingStoreClient.send`, `StoreConnection.send`, `ClusterStoreConnection.send`).
/// The reply read is kv-stored's (a Redis store's replies are first brought to that shape by
/// `RedisFunctions.ReplyShape`); a store error becomes a `KVError` by `KVError.storeReply`.
public struct StoreCommand<A: CommandArgument, Reply> {
    public let operation: StoreOperation<A>
    private let decode: (RESPValue) throws(KVError) -> Reply

    public init(_ operation: StoreOperation<A>, reply decode: @escaping (RESPValue) throws(KVError) -> Reply) {
        self.operation = operation
        self.decode = decode
    }

    /// Reads the store's reply to this command.
    public func reply(_ value: RESPValue) throws(KVError) -> Reply { try decode(value) }

    /// `result` read as this command's reply.
    public func reply(_ result: Result<RESPValue, KVError>) -> Result<Reply, KVError> {
        result.flatMap { value in Result { () throws(KVError) in try decode(value) } }
    }
}

extension StoreCommand: @unchecked Sendable where A: Sendable {}

// MARK: - The commands

extension StoreCommand where Reply == ByteBuffer? {
    /// The value stored under `key`, or nil.
    public static func get(_ key: A) -> Self {
        Self(.get(key: key)) { reply throws(KVError) in
            switch reply {
            case .bulkString(let value): return value
            case .null: return nil
            default: throw KVError.storeReply(reply)
            }
        }
    }
}

extension StoreCommand where Reply == Void {
    public static func set(_ key: A, value: A, ttl: TTL?) -> Self {
        Self(.set(key: key, value: value, ttl: ttl)) { reply throws(KVError) in
            guard case .simpleString = reply else { throw KVError.storeReply(reply) }
        }
    }

    /// Acknowledged once every change applied after it is delivered.
    public static func subscribe(_ key: A) -> Self { Self(.subscribe(key: key), reply: pushed) }
    public static func unsubscribe(_ key: A) -> Self { Self(.unsubscribe(key: key), reply: pushed) }

    /// Succeeds when the store answers.
    public static var ping: Self {
        Self(.other([A("PING")])) { reply throws(KVError) in
            guard case .simpleString = reply else { throw KVError.storeReply(reply) }
        }
    }

    static func pushed(_ reply: RESPValue) throws(KVError) {
        guard case .push = reply else { throw KVError.storeReply(reply) }
    }
}

extension RESPValue {
    /// The answer to an unsubscribe that no connection holds, given without asking a store: a
    /// subscription held nowhere is already over, and a store acknowledges with a push.
    static let unsubscribedHere = RESPValue.push([])
}

extension StoreCommand where Reply == Bool {
    /// Deletes `key`; whether it existed.
    public static func delete(_ key: A) -> Self {
        Self(.delete(key: key)) { reply throws(KVError) in
            guard case .integer(let n) = reply else { throw KVError.storeReply(reply) }
            return n > 0
        }
    }
}

extension StoreCommand where Reply == VersionedValue? {
    /// `KVGET`: the value of `key` with its revision and remaining TTL, or nil.
    public static func versionedGet(_ key: A) -> Self {
        Self(.versionedGet(key: key)) { reply throws(KVError) in
            switch reply {
            case .null: return nil
            case .array(let items) where items.count == 3:
                guard case .bulkString(let value) = items[0], case .integer(let revision) = items[1], case .integer(let ttl) = items[2], revision > 0
                else { throw KVError.storeReply(reply) }
                return VersionedValue(value: Array(value.readableBytesView), revision: UInt64(revision), ttlMilliseconds: ttl < 0 ? nil : Int64(ttl))
            default: throw KVError.storeReply(reply)
            }
        }
    }
}

extension StoreCommand where Reply == WriteResult {
    /// `KVSET`: stores `value` when `precondition` holds (checked and written atomically by the
    /// store); the new revision, or `-CONFLICT <current>`.
    public static func versionedSet(_ key: A, value: A, ttl: TTL?, precondition: WritePrecondition) -> Self {
        Self(.versionedSet(key: key, value: value, ttl: ttl, precondition: precondition)) { reply throws(KVError) in
            if case .integer(let revision) = reply, revision > 0 { return .applied(revision: UInt64(revision)) }
            return try conflict(reply)
        }
    }

    /// `KVDEL`: deletes `key` when `precondition` holds; `[deleted, revision]`, or `-CONFLICT <current>`.
    public static func versionedDelete(_ key: A, precondition: WritePrecondition) -> Self {
        Self(.versionedDelete(key: key, precondition: precondition)) { reply throws(KVError) in
            if case .array(let items) = reply, items.count == 2, case .integer = items[0], case .integer(let revision) = items[1], revision >= 0 {
                return .applied(revision: UInt64(revision))
            }
            return try conflict(reply)
        }
    }

    private static func conflict(_ reply: RESPValue) throws(KVError) -> WriteResult {
        if case .error(let text) = reply {
            let words = String(buffer: text).split(separator: " ")
            if words.count == 2, words[0] == "CONFLICT", let current = UInt64(words[1]) { return .conflict(current: current) }
        }
        throw KVError.storeReply(reply)
    }
}

extension StoreCommand where Reply == SyncReply {
    /// `KVSYNC`: the changes a subscriber at `since` (of `epoch`) missed, or the current state.
    public static func sync(_ key: A, since: UInt64?, epoch: String?, initial: Bool) -> Self {
        Self(.sync(key: key, since: since, epoch: epoch, initial: initial), reply: SyncReply.init(reply:))
    }
}

extension StoreCommand where Reply == Void, A: Hashable & Sendable {
    /// Subscribes to (or with `subscribing` false, unsubscribes from) a key or a prefix.
    public static func subscription(_ topic: Topic<A>, subscribing: Bool = true) -> Self {
        Self(.subscription(topic, subscribing: subscribing), reply: pushed)
    }
}

extension StoreCommand where Reply == PrefixSyncReply {
    /// `KVPSYNC`: the changes under `prefix` a subscriber at `since` (of `epoch`) missed, or the current state.
    public static func prefixSync(_ prefix: A, since: UInt64?, epoch: String?, initial: Bool) -> Self {
        Self(.prefixSync(prefix: prefix, since: since, epoch: epoch, initial: initial), reply: PrefixSyncReply.init(reply:))
    }
}

extension StoreCommand where Reply == KeyListing {
    /// `KVLIST`: one page of the keys under `query.prefix` (docs/protocol.md, "Listing keys").
    public static func list(_ query: ListingQuery) -> Self {
        Self(.list(prefix: A(bytes: query.prefix), after: query.after.map { A(bytes: $0) }, limit: query.limit, values: query.values)) {
            reply throws(KVError) in try KeyListing(reply: reply, values: query.values)
        }
    }
}

extension KeyListing {
    /// `[revision | null, next | null, items]`, each item a key, or with `values`
    /// `[key, value, revision, pttl]` (pttl -1: no TTL).
    init(reply: RESPValue, values: Bool) throws(KVError) {
        guard case .array(let fields) = reply, fields.count == 3, case .array(let entries) = fields[2] else { throw KVError.storeReply(reply) }
        var revision: UInt64?
        switch fields[0] {
        case .integer(let at) where at >= 0: revision = UInt64(at)
        case .null: revision = nil
        default: throw KVError.storeReply(reply)
        }
        var next: [UInt8]?
        switch fields[1] {
        case .bulkString(let bytes): next = Array(bytes.readableBytesView)
        case .null: next = nil
        default: throw KVError.storeReply(reply)
        }
        var items: [Item] = []
        items.reserveCapacity(entries.count)
        for entry in entries {
            if !values, case .bulkString(let key) = entry {
                items.append(Item(key: Array(key.readableBytesView)))
                continue
            }
            guard values, case .array(let parts) = entry, parts.count == 4, case .bulkString(let key) = parts[0], case .bulkString(let value) = parts[1],
                  case .integer(let at) = parts[2], at > 0, case .integer(let pttl) = parts[3]
            else { throw KVError.storeReply(reply) }
            items.append(Item(key: Array(key.readableBytesView), value: Array(value.readableBytesView), revision: UInt64(at),
                              ttlMilliseconds: pttl < 0 ? nil : Int64(pttl)))
        }
        self.init(revision: revision, next: next, items: items)
    }
}

extension StoreCommand where Reply == [UInt8] {
    /// kv-stored's metrics, in the Prometheus text format.
    public static var metrics: Self {
        Self(.other([A("KVMETRICS")])) { reply throws(KVError) in
            guard case .bulkString(let text) = reply else { throw KVError.storeReply(reply) }
            return Array(text.readableBytesView)
        }
    }
}

extension StoreCommand where Reply == RESPValue {
    /// Any command about no key, its reply as it comes (tools and tests).
    public static func other(_ words: [A]) -> Self { Self(.other(words)) { $0 } }
}

// MARK: - Replies

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

    /// `[mode, epoch, revision, [[kind, revision, value?]…]]`.
    init(reply: RESPValue) throws(KVError) {
        guard case .array(let items) = reply, items.count == 4, let modeText = items[0].string, let mode = Mode(rawValue: modeText),
              let epoch = items[1].string, case .integer(let revision) = items[2], revision >= 0, case .array(let entries) = items[3]
        else { throw KVError.storeReply(reply) }
        var changes: [Change] = []
        for entry in entries {
            guard case .array(let fields) = entry, fields.count >= 2, let kindText = fields[0].string, case .integer(let at) = fields[1], at >= 0 else {
                throw KVError.storeReply(reply)
            }
            if kindText == "absent" {
                changes.append(Change(kind: nil, revision: UInt64(at), value: nil))
                continue
            }
            guard let kind = ChangeKind(rawValue: kindText) else { throw KVError.storeReply(reply) }
            var value: ByteBuffer?
            if kind == .set {
                guard fields.count == 3, case .bulkString(let bytes) = fields[2] else { throw KVError.storeReply(reply) }
                value = bytes
            }
            changes.append(Change(kind: kind, revision: UInt64(at), value: value))
        }
        self.init(mode: mode, epoch: epoch, revision: UInt64(revision), changes: changes)
    }

    init(mode: Mode, epoch: String, revision: UInt64, changes: [Change]) {
        self.mode = mode
        self.epoch = epoch
        self.revision = revision
        self.changes = changes
    }
}

/// `KVPSYNC`'s reply: how a subscriber of every key under a prefix is exactly up to date at
/// `revision`. A state (`initial`, or a reset) is every live key under the prefix as a set.
public struct PrefixSyncReply: Sendable, Equatable {
    public var mode: SyncReply.Mode
    public var epoch: String
    public var revision: UInt64
    public var changes: [StoreChange]

    /// `[mode, epoch, revision, [[kind, revision, key, value?]…]]`.
    init(reply: RESPValue) throws(KVError) {
        guard case .array(let items) = reply, items.count == 4, let modeText = items[0].string, let mode = SyncReply.Mode(rawValue: modeText),
              let epoch = items[1].string, case .integer(let revision) = items[2], revision >= 0, case .array(let entries) = items[3]
        else { throw KVError.storeReply(reply) }
        var changes: [StoreChange] = []
        changes.reserveCapacity(entries.count)
        for entry in entries {
            guard case .array(let fields) = entry, fields.count >= 3, let kindText = fields[0].string, let kind = ChangeKind(rawValue: kindText),
                  case .integer(let at) = fields[1], at > 0, case .bulkString(let key) = fields[2], fields.count == (kind == .set ? 4 : 3)
            else { throw KVError.storeReply(reply) }
            var value: ByteBuffer?
            if kind == .set {
                guard case .bulkString(let bytes) = fields[3] else { throw KVError.storeReply(reply) }
                value = bytes
            }
            changes.append(StoreChange(key: key, kind: kind, revision: UInt64(at), value: value))
        }
        self.mode = mode
        self.epoch = epoch
        self.revision = UInt64(revision)
        self.changes = changes
    }
}

// MARK: - Errors

extension KVError {
    /// A reply that is not the command's: the store's error, said as the API says it. The one
    /// place a store's answer becomes a client's error.
    public static func storeReply(_ reply: RESPValue) -> KVError {
        guard case .error(let text) = reply else { return KVError(.storageError, "the store sent an unexpected reply") }
        // kv-stored's --max-memory and Redis's maxmemory both answer writes with OOM.
        if text.readableBytesView.starts(with: "OOM ".utf8) {
            return KVError(.storageFull, "the store is full (its memory limit is reached): writes are refused until keys are deleted or expire; reads and deletes still work")
        }
        // kv_list's refusal of an `after` that is not one of its cursors: the client's mistake.
        // KVPSYNC's refusal of a state too large for one reply.
        if text.readableBytesView.starts(with: "TOOMANY ".utf8) { return KVError(.invalidRequest, String(String(buffer: text).dropFirst(8))) }
        let badCursor = "BADCURSOR "
        if text.readableBytesView.starts(with: badCursor.utf8) { return KVError(.invalidRequest, String(String(buffer: text).dropFirst(badCursor.count))) }
        return KVError(.storageError, "the store answered: \(String(buffer: text))")
    }

    /// Prefix subscriptions need kv-stored's change feed; Redis publishes each key's changes on
    /// a sharded channel, which has no patterns (docs/scaling.md).
    public static let prefixSubscriptionOnRedis = KVError(
        .invalidRequest, "prefix subscriptions are not available on a Redis store yet (they are on kv-stored): subscribe to keys, or list the prefix")

    /// Any failure on the way to the store (a closed channel, a refused connection): a
    /// `KVError` stays as it is, anything else means the store could not be reached.
    public static func storeFailure(_ error: any Error) -> KVError {
        (error as? KVError) ?? KVError(.storageUnavailable, "storage unavailable: \(error)")
    }
}
