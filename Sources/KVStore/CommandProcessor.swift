import KVCore
import KVMetrics
import NIOCore
import RESP

/// What a connection knows about itself between commands.
public struct ConnectionState: Sendable {
    public let id: Int
    public var version: RESPVersion = .v2
    public var name: String = ""
    /// Keys this connection is subscribed to.
    public var subscriptions: Set<[UInt8]> = []
    /// Prefixes this connection watches (`PSUBSCRIBE`), each with the pattern it wrote.
    public var prefixSubscriptions: [[UInt8]: [UInt8]] = [:]
    /// Set by QUIT: close once the reply is written.
    public var closeAfterReply = false
    /// A write ran since the replies were last sent: the log must be committed before they are.
    public var needsCommit = false

    public init(id: Int) {
        self.id = id
    }

    /// RESP2 connections with subscriptions accept only pub/sub commands (as in Redis).
    var inSubscriberMode: Bool { version == .v2 && (!subscriptions.isEmpty || !prefixSubscriptions.isEmpty) }

    /// Channels and patterns, as Redis counts them in (un)subscribe replies.
    var subscriptionCount: Int { subscriptions.count + prefixSubscriptions.count }
}

/// Executes kv-stored's commands (the RESP subset documented in docs/protocol.md) and writes
/// each reply. It has no I/O of its own: the connection handler feeds it commands and flushes
/// what it wrote, so every command's behaviour is testable without a socket.
public struct CommandProcessor: Sendable {
    public let store: Store
    public let limits: Limits
    public let statistics: ServerStatistics
    /// Shown by INFO server.
    public let socketPath: String
    /// The append-only log, when kv-stored persists (shown by INFO persistence).
    public let log: AppendLog?
    /// How the log was loaded at startup.
    public let recovery: LogRecovery.Report?
    /// The data's identity, which resuming subscribers name (`KVSYNC … EPOCH`): kept across a
    /// clean restart, new after anything that may have lost or replaced revisions (`CleanStop`).
    public let epoch: String
    /// Renders `KVMETRICS` (nil: metrics are not kept, as in tests).
    public let metrics: StoreMetrics?
    /// Where each `SCAN` in progress stands.
    public let scanCursors = ScanCursors()

    /// kv-stored's own version (INFO's `kv_stored_version`): the project's.
    public static let serverVersion = KvServerVersion.current
    /// What `redis_version` reports, so tools that gate features on it treat us as modern.
    public static let compatibleRedisVersion = "7.0.0"

    public init(store: Store, limits: Limits, statistics: ServerStatistics, socketPath: String,
                log: AppendLog? = nil, recovery: LogRecovery.Report? = nil, epoch: String = LogRecovery.newEpoch(), metrics: StoreMetrics? = nil) {
        self.metrics = metrics
        self.store = store
        self.limits = limits
        self.statistics = statistics
        self.socketPath = socketPath
        self.log = log
        self.recovery = recovery
        self.epoch = epoch
    }

    /// Runs one command for `connection`, appending its reply (or replies) to `out`.
    /// `args` points into the read buffer and is valid only during this call.
    public func execute(_ args: RESPArguments, connection: inout ConnectionState, subscriber: SubscriberOutbox, out: inout ByteBuffer) {
        guard let (command, spec) = Command.lookup(args) else {
            let shown = (1..<min(args.count, 9)).map { "'\(args.string($0).prefix(64))'" }.joined(separator: " ")
            out.writeRESPError("ERR unknown command '\(args.string(0).prefix(128))', with args beginning with: \(shown)")
            return
        }
        // What the table says is checked here, once; the handlers below rely on it.
        if connection.inSubscriberMode && !spec.flags.contains(.subscriberContext) {
            out.writeRESPError("ERR Can't execute '\(args.string(0).lowercased())': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
            return
        }
        guard spec.acceptsArgumentCount(args.count) else { return wrongArity(args, &out) }
        for position in spec.keyPositions(count: args.count) where args[position].count > limits.maxKeyBytes {
            return out.writeRESPError("ERR key is \(args[position].count) bytes, the limit is \(limits.maxKeyBytes)")
        }
        if spec.value > 0, spec.value < args.count, args[spec.value].count > limits.maxValueBytes {
            return out.writeRESPError("ERR value is \(args[spec.value].count) bytes, the limit is \(limits.maxValueBytes)")
        }
        if spec.flags.contains(.write) { connection.needsCommit = true }
        switch command {
        case .get: get(args, connection, &out)
        case .set: set(args, connection, &out)
        case .del: del(args, &out)
        case .exists: exists(args, &out)
        case .pttl, .ttl: ttl(args, milliseconds: command == .pttl, &out)
        case .persist: persist(args, &out)
        case .dbsize: dbsize(args, &out)
        case .scan: scan(args, &out)
        case .ping: ping(args, connection, &out)
        case .echo: echo(args, &out)
        case .hello: hello(args, &connection, &out)
        case .select: select(args, &out)
        case .subscribe: subscribe(args, &connection, subscriber, &out)
        case .unsubscribe: unsubscribe(args, &connection, subscriber, &out)
        case .psubscribe: psubscribe(args, &connection, subscriber, &out)
        case .punsubscribe: punsubscribe(args, &connection, subscriber, &out)
        case .info: info(args, &out)
        case .client: client(args, &connection, subscriber, &out)
        case .command: commandCommand(args, connection, &out)
        case .config: config(args, connection, &out)
        case .reset: reset(&connection, subscriber, &out)
        case .kvget: kvget(args, connection, &out)
        case .kvset: kvset(args, &out)
        case .kvdel: kvdel(args, &out)
        case .kvsync: kvsync(args, &out)
        case .kvpsync: kvpsync(args, &out)
        case .kvlist: kvlist(args, connection, &out)
        case .kvmetrics:
            guard let metrics else { return out.writeRESPError("ERR metrics are not kept by this kv-stored") }
            metrics.exposition(store: store, statistics: statistics, log: log).withUnsafeBytes { out.writeRESPBulkString($0) }
        case .quit:
            out.writeRESPOK()
            connection.closeAfterReply = true
        case .bgrewriteaof:
            guard let log else { return out.writeRESPError("ERR persistence is off (--persistence none): there is no log to compact") }
            if log.startCompaction() {
                out.writeRESPSimpleString("Background append only file rewriting started")
            } else {
                out.writeRESPError("ERR Background append only file rewriting already in progress")
            }
        }
    }

    private func wrongArity(_ args: RESPArguments, _ out: inout ByteBuffer) {
        out.writeRESPError("ERR wrong number of arguments for '\(args.string(0).lowercased())' command")
    }

    // MARK: - Keyspace commands

    private func get(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        let entry = store.withKeyspace { ks in ks.lookup(args[1]) }
        // The entry is immutable: copy its value out after releasing the keyspace.
        if let entry {
            entry.withValue { out.writeRESPBulkString($0) }
        } else {
            out.writeRESPNull(connection.version)
        }
    }

    private func set(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        let options: SetOptions
        switch SetOptions.parse(args, from: 3) {
        case .success(let parsed): options = parsed
        case .failure(let error): return out.writeRESPError(error.message)
        }
        let outcome = store.withKeyspace { ks in
            ks.set(args[1], value: args[2], expiry: options.expiry, condition: options.condition, returningPrevious: options.returnPrevious)
        }
        if outcome.overMemory { return Self.writeOutOfMemory(&out) }
        if options.returnPrevious {
            if let previous = outcome.previous {
                previous.withValue { out.writeRESPBulkString($0) }
            } else {
                out.writeRESPNull(connection.version)
            }
        } else if outcome.applied {
            out.writeRESPOK()
        } else {
            out.writeRESPNull(connection.version)
        }
    }

    private func del(_ args: RESPArguments, _ out: inout ByteBuffer) {
        let deleted = store.withKeyspace { ks in
            (1..<args.count).reduce(0) { n, i in n + (ks.delete(args[i]) ? 1 : 0) }
        }
        out.writeRESPInteger(deleted)
    }

    private func exists(_ args: RESPArguments, _ out: inout ByteBuffer) {
        let found = store.withKeyspace { ks in
            (1..<args.count).reduce(0) { n, i in n + (ks.lookup(args[i]) != nil ? 1 : 0) }
        }
        out.writeRESPInteger(found)
    }

    private func ttl(_ args: RESPArguments, milliseconds: Bool, _ out: inout ByteBuffer) {
        let remaining: Int64 = store.withKeyspace { ks in
            guard let entry = ks.lookup(args[1]) else { return -2 }
            guard let ms = ks.remainingMilliseconds(of: entry) else { return -1 }
            return milliseconds ? ms : (ms + 500) / 1000
        }
        out.writeRESPInteger(Int(remaining))
    }

    private func persist(_ args: RESPArguments, _ out: inout ByteBuffer) {
        let cleared = store.withKeyspace { ks in ks.persist(args[1]) }
        out.writeRESPInteger(cleared ? 1 : 0)
    }

    private func dbsize(_ args: RESPArguments, _ out: inout ByteBuffer) {
        out.writeRESPInteger(store.withKeyspace { $0.count })
    }

    // MARK: - Versioned commands (docs/protocol.md, "Versioned commands")

    /// `KVGET key` → null, or `[value, revision, pttl]` (pttl -1: no TTL).
    private func kvget(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        let found = store.withKeyspace { ks in ks.lookup(args[1]).map { ($0, ks.remainingMilliseconds(of: $0) ?? -1) } }
        guard let (entry, ttl) = found else { return out.writeRESPNull(connection.version) }
        out.writeRESPArrayHeader(count: 3)
        entry.withValue { out.writeRESPBulkString($0) }
        out.writeRESPInteger(Int(entry.revision))
        out.writeRESPInteger(Int(ttl))
    }

    /// The most keys `KVLIST` answers at once, and its default.
    static let listLimit = 1000, defaultListLimit = 100

    /// `KVLIST prefix [AFTER key] [LIMIT n] [VALUES]` → `[revision, next, items]`: the live keys
    /// starting with `prefix` in bytewise order, after `AFTER`, at most `LIMIT` (100; up to 1000)
    /// of them, each a key, or with `VALUES` a `[key, value, revision, pttl]`. `next` is the key
    /// to pass as `AFTER` for the next page, null once the listing is complete. One page is one
    /// snapshot, taken at `revision`; at most ten keys per key asked for are looked at (keys
    /// expired but not yet removed are skipped), so a page may come back short, with a `next`.
    private func kvlist(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        var after: Int?, limit = Self.defaultListLimit, values = false
        var i = 2
        while i < args.count {
            if args.matches(i, "AFTER"), i + 1 < args.count {
                guard args[i + 1].count <= limits.maxKeyBytes else {
                    return out.writeRESPError("ERR key is \(args[i + 1].count) bytes, the limit is \(limits.maxKeyBytes)")
                }
                after = i + 1
                i += 2
            } else if args.matches(i, "LIMIT"), i + 1 < args.count, let n = Int(args.string(i + 1)), (1...Self.listLimit).contains(n) {
                limit = n
                i += 2
            } else if args.matches(i, "VALUES") {
                values = true
                i += 1
            } else {
                return out.writeRESPError("ERR syntax error: KVLIST prefix [AFTER key] [LIMIT 1-\(Self.listLimit)] [VALUES]")
            }
        }
        let listing = store.withKeyspace { ks in ks.list(prefix: args[1], after: after.map { args[$0] }, limit: limit, budget: limit * 10) }
        out.writeRESPArrayHeader(count: 3)
        out.writeRESPInteger(Int(listing.revision))
        if let next = listing.next { next.withUnsafeBytes { out.writeRESPBulkString($0) } } else { out.writeRESPNull(connection.version) }
        out.writeRESPArrayHeader(count: listing.entries.count)
        for (entry, remaining) in listing.entries {
            if values { out.writeRESPArrayHeader(count: 4) }
            entry.withKey { out.writeRESPBulkString($0) }
            guard values else { continue }
            entry.withValue { out.writeRESPBulkString($0) }
            out.writeRESPInteger(Int(entry.revision))
            out.writeRESPInteger(Int(remaining ?? -1))
        }
    }

    /// Keys one SCAN call looks at, at most, whatever its COUNT (a hint, as in Redis).
    static let scanCountLimit = 1000
    /// Longest MATCH pattern that is not a plain prefix pattern, and the matching work one
    /// SCAN call may do: a glob costs up to the key's length times the pattern's per key.
    static let scanPatternLimit = 1024, scanMatchSteps = 16 << 20

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]` → `[next cursor, keys]`, as Redis's:
    /// a full iteration (from cursor 0 until 0 comes back) returns every key that exists
    /// throughout, once. kv-stored walks its keys in bytewise order and only over the range the
    /// pattern's literal prefix allows (`MATCH app/*` looks at the keys under `app/` only);
    /// COUNT (default 10, at most `scanCountLimit`) is how many keys one call looks at. Cursors
    /// are numbers standing for a key (`ScanCursors`). Every value is a string: `TYPE string`
    /// lists them all, any other type none.
    private func scan(_ args: RESPArguments, _ out: inout ByteBuffer) {
        guard let cursor = UInt64(args.string(1)) else { return out.writeRESPError("ERR invalid cursor") }
        var count = 10, pattern: GlobPattern?, typeMatches = true
        var i = 2
        while i + 1 < args.count {
            if args.matches(i, "MATCH") {
                pattern = GlobPattern(args.array(i + 1))
            } else if args.matches(i, "COUNT") {
                guard let n = Int(args.string(i + 1)), n >= 1 else { return out.writeRESPError("ERR value is not an integer or out of range") }
                count = min(n, Self.scanCountLimit)
            } else if args.matches(i, "TYPE") {
                typeMatches = args.string(i + 1).lowercased() == "string"
            } else {
                return out.writeRESPError("ERR syntax error")
            }
            i += 2
        }
        guard i == args.count else { return out.writeRESPError("ERR syntax error") }
        var after: [UInt8]?
        if cursor != 0 {
            guard let saved = scanCursors.key(for: cursor) else {
                return out.writeRESPError("ERR invalid cursor: kv-stored keeps the last \(ScanCursors.maxCursors) SCAN cursors; start again from 0")
            }
            after = saved
        }
        let (prefix, wholePattern) = pattern?.literalPrefix ?? ([], true)
        if let pattern, !wholePattern, pattern.bytes.count > Self.scanPatternLimit {
            return out.writeRESPError("ERR MATCH pattern is \(pattern.bytes.count) bytes; a pattern other than prefix* may have at most \(Self.scanPatternLimit)")
        }
        guard prefix.count <= limits.maxKeyBytes, typeMatches else {
            // No key can match: the iteration is complete.
            out.writeRESPArrayHeader(count: 2)
            out.writeRESPBulkString("0")
            out.writeRESPArrayHeader(count: 0)
            return
        }
        let listing = store.withKeyspace { ks in
            prefix.withUnsafeBytes { p in
                if let after { return after.withUnsafeBytes { ks.list(prefix: p, after: $0, limit: count, budget: count) } }
                return ks.list(prefix: p, after: nil, limit: count, budget: count)
            }
        }
        // The entries are immutable: matched after the keyspace is released.
        var keys: [Entry] = [], steps = 0, next = listing.next
        for (index, (entry, _)) in listing.entries.enumerated() {
            if let pattern, !wholePattern {
                if steps > Self.scanMatchSteps {
                    // Enough work for one call: the next goes on from this key.
                    next = index > 0 ? listing.entries[index - 1].0.keyBytes : after
                    break
                }
                guard entry.withKey({ pattern.matches($0, steps: &steps) }) else { continue }
            }
            keys.append(entry)
        }
        out.writeRESPArrayHeader(count: 2)
        out.writeRESPBulkString(next.map { String(scanCursors.save($0)) } ?? "0")
        out.writeRESPArrayHeader(count: keys.count)
        for entry in keys { entry.withKey { out.writeRESPBulkString($0) } }
    }

    /// Reads one of the condition options KVSET and KVDEL share — `NX`, `XX`, `IFREV r`
    /// (repeatable: any of them; 0 means absent) — at `i`, moving past it. False when the
    /// argument is none of them, or conflicts with a condition already read.
    private func parseCondition(_ args: RESPArguments, at i: inout Int, into condition: inout SetCondition?) -> Bool {
        switch args.string(i).uppercased() {
        case "NX", "XX":
            guard condition == nil else { return false }
            condition = args.matches(i, "NX") ? .ifAbsent : .ifPresent
        case "IFREV":
            guard i + 1 < args.count, let revision = UInt64(args.string(i + 1)) else { return false }
            switch condition {
            case nil: condition = .ifRevision([revision])
            case .ifRevision(let revisions)?: condition = .ifRevision(revisions + [revision])
            default: return false
            }
            i += 1
        default:
            return false
        }
        i += 1
        return true
    }

    private static func writeConflict(_ current: UInt64, _ out: inout ByteBuffer) {
        out.writeRESPError("CONFLICT \(current)")
    }

    /// `KVSET key value [PX ms] [NX | XX | IFREV r …]` → the write's revision, or
    /// `-CONFLICT <current revision, 0 when absent>` when the condition does not hold.
    private func kvset(_ args: RESPArguments, _ out: inout ByteBuffer) {
        var expiry = Expiry.none
        var condition: SetCondition?
        var i = 3
        while i < args.count {
            if args.matches(i, "PX"), i + 1 < args.count, case .none = expiry {
                guard let ms = args.integer(i + 1), ms > 0, ms <= TTL.maxMilliseconds else {
                    return out.writeRESPError("ERR invalid expire time in 'kvset' command")
                }
                expiry = .after(milliseconds: ms)
                i += 2
            } else if !parseCondition(args, at: &i, into: &condition) {
                return out.writeRESPError("ERR syntax error")
            }
        }
        let (outcome, revision) = store.withKeyspace { ks in
            // The previous entry is read only when the condition failed, and then it is returned.
            let outcome = ks.set(args[1], value: args[2], expiry: expiry, condition: condition ?? .always, returningPrevious: false)
            return (outcome, ks.revision)
        }
        if outcome.overMemory { return Self.writeOutOfMemory(&out) }
        guard outcome.applied else { return Self.writeConflict(outcome.previous?.revision ?? 0, &out) }
        out.writeRESPInteger(Int(revision))
    }

    /// Redis's own words for a write refused at `maxmemory`, so its clients recognise it.
    static func writeOutOfMemory(_ out: inout ByteBuffer) {
        out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
    }

    /// `KVDEL key [NX | XX | IFREV r …]` → `[1, revision of the delete]`, `[0, current revision]`
    /// when there was nothing to delete, or `-CONFLICT <current>`.
    private func kvdel(_ args: RESPArguments, _ out: inout ByteBuffer) {
        var condition: SetCondition?
        var i = 2
        while i < args.count {
            guard parseCondition(args, at: &i, into: &condition) else { return out.writeRESPError("ERR syntax error") }
        }
        let (outcome, revision) = store.withKeyspace { ks in
            let outcome = ks.delete(args[1], condition: condition ?? .always)
            return (outcome, ks.revision)
        }
        switch outcome {
        case .conflict(let current): return Self.writeConflict(current, &out)
        case .deleted(let at):
            out.writeRESPArrayHeader(count: 2)
            out.writeRESPInteger(1)
            out.writeRESPInteger(Int(at))
        case .absent:
            out.writeRESPArrayHeader(count: 2)
            out.writeRESPInteger(0)
            out.writeRESPInteger(Int(revision))
        }
    }

    /// The options KVSYNC and KVPSYNC share, from argument 2: `[SINCE revision EPOCH epoch]
    /// [INITIAL]`. Nil (with the error written) when they are not that.
    private static func syncOptions(_ args: RESPArguments, _ out: inout ByteBuffer) -> (since: UInt64?, epoch: String?, initial: Bool)? {
        var since: UInt64?, epoch: String?, initial = false
        var i = 2
        while i < args.count {
            if args.matches(i, "SINCE"), i + 1 < args.count, let revision = UInt64(args.string(i + 1)) {
                since = revision
                i += 2
            } else if args.matches(i, "EPOCH"), i + 1 < args.count {
                epoch = args.string(i + 1)
                i += 2
            } else if args.matches(i, "INITIAL") {
                initial = true
                i += 1
            } else {
                out.writeRESPError("ERR syntax error")
                return nil
            }
        }
        guard (since == nil) == (epoch == nil) else {
            out.writeRESPError("ERR SINCE and EPOCH go together")
            return nil
        }
        return (since, epoch, initial)
    }

    /// `KVSYNC key [SINCE revision EPOCH epoch] [INITIAL]` → `[mode, epoch, revision, changes]`:
    /// what a subscriber of `key` needs to be exactly up to date at `revision` (see
    /// docs/protocol.md). Modes: `live` (no SINCE: nothing, or the current state with INITIAL),
    /// `replay` (the key's changes after SINCE, from the history), `reset` (the history does not
    /// reach back to SINCE, or the epoch differs: the current state).
    private func kvsync(_ args: RESPArguments, _ out: inout ByteBuffer) {
        guard let (since, epoch, initial) = Self.syncOptions(args, &out) else { return }
        let sameData = epoch == self.epoch
        let (mode, revision, changes, state) = store.withKeyspace { ks -> (String, UInt64, [ChangeEvent], Entry??) in
            if let since, sameData, let missed = ks.changes(of: args[1], after: since) {
                return ("replay", ks.revision, missed, nil)
            }
            let state: Entry?? = since != nil || initial ? .some(ks.lookup(args[1])) : .none
            return (since == nil ? "live" : "reset", ks.revision, [], state)
        }
        out.writeRESPArrayHeader(count: 4)
        out.writeRESPBulkString(mode)
        out.writeRESPBulkString(self.epoch)
        out.writeRESPInteger(Int(revision))
        switch state {
        case .some(.some(let entry)):
            out.writeRESPArrayHeader(count: 1)
            Self.writeVersioned(.set, revision: entry.revision, entry: entry, &out)
        case .some(.none):
            out.writeRESPArrayHeader(count: 1)
            out.writeRESPArrayHeader(count: 2)
            out.writeRESPBulkString("absent")
            out.writeRESPInteger(Int(revision))
        case .none:
            out.writeRESPArrayHeader(count: changes.count)
            for change in changes { Self.writeVersioned(change.kind, revision: change.revision, entry: change.entry, &out) }
        }
    }

    /// The most keys a `KVPSYNC` answers as a prefix's current state (the state is one reply).
    static let prefixStateLimit = 10_000

    /// `KVPSYNC prefix [SINCE revision EPOCH epoch] [INITIAL]` → `[mode, epoch, revision,
    /// changes]`: `KVSYNC` for a subscriber of every key under `prefix`. Each change is `[kind,
    /// revision, key, value?]`; a state (INITIAL, or a reset) is every live key under the
    /// prefix as a `set`, at most `prefixStateLimit` of them (`-TOOMANY` beyond).
    private func kvpsync(_ args: RESPArguments, _ out: inout ByteBuffer) {
        guard let (since, epoch, initial) = Self.syncOptions(args, &out) else { return }
        let sameData = epoch == self.epoch
        let limit = Self.prefixStateLimit
        let (mode, revision, changes, state) = store.withKeyspace { ks -> (String, UInt64, [ChangeEvent], Keyspace.Listing?) in
            if let since, sameData, let missed = ks.changes(withPrefix: args[1], after: since) {
                return ("replay", ks.revision, missed, nil)
            }
            let state = since != nil || initial ? ks.list(prefix: args[1], after: nil, limit: limit + 1, budget: (limit + 1) * 10) : nil
            return (since == nil ? "live" : "reset", ks.revision, [], state)
        }
        if let state, state.entries.count > limit || state.next != nil {
            return out.writeRESPError("TOOMANY the prefix holds more than \(limit) keys: too many to send as one state; list them (KVLIST) and resume from the listing's revision instead")
        }
        out.writeRESPArrayHeader(count: 4)
        out.writeRESPBulkString(mode)
        out.writeRESPBulkString(self.epoch)
        out.writeRESPInteger(Int(revision))
        if let state {
            out.writeRESPArrayHeader(count: state.entries.count)
            for (entry, _) in state.entries { Self.writeVersioned(.set, revision: entry.revision, entry: entry, withKey: true, &out) }
        } else {
            out.writeRESPArrayHeader(count: changes.count)
            for change in changes { Self.writeVersioned(change.kind, revision: change.revision, entry: change.entry, withKey: true, &out) }
        }
    }

    /// `[kind, revision, value]` for a set, `[kind, revision]` for a deletion or expiry; with
    /// `withKey`, the key after the revision.
    private static func writeVersioned(_ kind: ChangeKind, revision: UInt64, entry: Entry, withKey: Bool = false, _ out: inout ByteBuffer) {
        out.writeRESPArrayHeader(count: (kind == .set ? 3 : 2) + (withKey ? 1 : 0))
        out.writeRESPBulkString(kind.rawValue)
        out.writeRESPInteger(Int(revision))
        if withKey { entry.withKey { out.writeRESPBulkString($0) } }
        if kind == .set { entry.withValue { out.writeRESPBulkString($0) } }
    }

    // MARK: - Change feed

    private func subscribe(_ args: RESPArguments, _ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        for i in 1..<args.count {
            let bytes = args.array(i)
            // Registered under the keyspace lock before the acknowledgement is written, so every
            // change applied after this point reaches the subscriber, after the acknowledgement.
            if connection.subscriptions.insert(bytes).inserted {
                store.withKeyspace { _ = $0.subscribe(bytes, subscriber) }
            }
            writePubSubReply("subscribe", key: args[i], count: connection.subscriptionCount, connection.version, &out)
        }
    }

    private func unsubscribe(_ args: RESPArguments, _ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        let keys: [[UInt8]] = args.count > 1 ? (1..<args.count).map { args.array($0) } : Array(connection.subscriptions)
        if keys.isEmpty {
            out.writeRESPPushHeader(count: 3, version: connection.version)
            out.writeRESPBulkString("unsubscribe")
            out.writeRESPNull(connection.version)
            out.writeRESPInteger(0)
            return
        }
        for key in keys {
            if connection.subscriptions.remove(key) != nil {
                store.withKeyspace { _ = $0.unsubscribe(key, subscriber) }
            }
            key.withUnsafeBytes { raw in
                writePubSubReply("unsubscribe", key: raw, count: connection.subscriptionCount, connection.version, &out)
            }
        }
    }

    /// `PSUBSCRIBE pattern [pattern …]`: each pattern a prefix followed by `*` (docs/protocol.md,
    /// "Prefix subscriptions"); changes of every key under it are pushed as `pmessage`. A
    /// pattern of any other shape is refused and nothing of the command is subscribed.
    private func psubscribe(_ args: RESPArguments, _ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        var prefixes: [[UInt8]] = []
        for i in 1..<args.count {
            guard let prefix = PrefixPattern.prefix(of: args[i]) else {
                return out.writeRESPError(#"ERR kv-stored's PSUBSCRIBE takes prefix patterns only: the prefix, with \ before any of *?[]\ in it, then one * (app/* watches every key starting with app/)"#)
            }
            guard prefix.count <= limits.maxKeyBytes else {
                return out.writeRESPError("ERR prefix is \(prefix.count) bytes, the key limit is \(limits.maxKeyBytes)")
            }
            prefixes.append(prefix)
        }
        for (offset, prefix) in prefixes.enumerated() {
            let pattern = args.array(offset + 1)
            // Registered under the keyspace lock before the acknowledgement is written, as SUBSCRIBE.
            connection.prefixSubscriptions[prefix] = pattern
            store.withKeyspace { _ = $0.subscribe(prefix: prefix, pattern: pattern, subscriber) }
            writePubSubReply("psubscribe", key: args[offset + 1], count: connection.subscriptionCount, connection.version, &out)
        }
    }

    /// `PUNSUBSCRIBE [pattern …]`; no pattern: all of this connection's.
    private func punsubscribe(_ args: RESPArguments, _ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        let patterns: [[UInt8]] = args.count > 1 ? (1..<args.count).map { args.array($0) } : Array(connection.prefixSubscriptions.values)
        if patterns.isEmpty {
            out.writeRESPPushHeader(count: 3, version: connection.version)
            out.writeRESPBulkString("punsubscribe")
            out.writeRESPNull(connection.version)
            out.writeRESPInteger(connection.subscriptionCount)
            return
        }
        for pattern in patterns {
            if let prefix = PrefixPattern.prefix(of: pattern), connection.prefixSubscriptions.removeValue(forKey: prefix) != nil {
                store.withKeyspace { _ = $0.unsubscribe(prefix: prefix, subscriber) }
            }
            pattern.withUnsafeBytes { raw in
                writePubSubReply("punsubscribe", key: raw, count: connection.subscriptionCount, connection.version, &out)
            }
        }
    }

    /// Drops every subscription of a connection (on close and RESET).
    /// Prefetch hints for the keys of the commands ahead in a connection's read buffer (each
    /// key's `KeyTable.hash`): `Keyspace.prefetch` under the keyspace lock.
    func prefetch(keyHashes: [UInt32]) {
        store.withKeyspace { $0.prefetch(hashes: keyHashes) }
    }

    public func dropSubscriptions(_ connection: inout ConnectionState, _ subscriber: SubscriberOutbox) {
        guard !connection.subscriptions.isEmpty || !connection.prefixSubscriptions.isEmpty else { return }
        let keys = connection.subscriptions, prefixes = connection.prefixSubscriptions.keys
        connection.subscriptions.removeAll()
        connection.prefixSubscriptions.removeAll()
        store.withKeyspace { ks in
            for key in keys { ks.unsubscribe(key, subscriber) }
            for prefix in prefixes { ks.unsubscribe(prefix: prefix, subscriber) }
        }
    }

    private func writePubSubReply(_ kind: String, key: UnsafeRawBufferPointer, count: Int, _ version: RESPVersion, _ out: inout ByteBuffer) {
        out.writeRESPPushHeader(count: 3, version: version)
        out.writeRESPBulkString(kind)
        out.writeRESPBulkString(key)
        out.writeRESPInteger(count)
    }

    /// Encodes one change as a pub/sub `message` push on the channel named after its key, or
    /// for a prefix subscription a `pmessage` naming the pattern first (as Redis does).
    public static func writeChange(_ push: ChangePush, version: RESPVersion, into out: inout ByteBuffer) {
        let event = push.event
        if let pattern = push.pattern {
            out.writeRESPPushHeader(count: 4, version: version)
            out.writeRESPBulkString("pmessage")
            pattern.withUnsafeBytes { out.writeRESPBulkString($0) }
        } else {
            out.writeRESPPushHeader(count: 3, version: version)
            out.writeRESPBulkString("message")
        }
        event.entry.withKey { out.writeRESPBulkString($0) }
        let header = ChangePayload.header(kind: event.kind, revision: event.revision)
        if event.kind == .set {
            out.writeRESPBulkHeader(length: header.utf8.count + event.entry.valueCount)
            out.writeString(header)
            event.entry.withValue { _ = out.writeBytes($0) }
            out.writeStaticString("\r\n")
        } else {
            out.writeRESPBulkString(header)
        }
    }

    // MARK: - Connection commands

    private func ping(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        guard args.count <= 2 else { return wrongArity(args, &out) }
        if connection.inSubscriberMode {
            out.writeRESPArrayHeader(count: 2)
            out.writeRESPBulkString("pong")
            if args.count == 2 { out.writeRESPBulkString(args[1]) } else { out.writeRESPBulkString("") }
        } else if args.count == 2 {
            out.writeRESPBulkString(args[1])
        } else {
            out.writeRESPSimpleString("PONG")
        }
    }

    private func echo(_ args: RESPArguments, _ out: inout ByteBuffer) {
        out.writeRESPBulkString(args[1])
    }

    private func select(_ args: RESPArguments, _ out: inout ByteBuffer) {
        if args.string(1) == "0" { out.writeRESPOK() } else { out.writeRESPError("ERR DB index is out of range") }
    }

    private func hello(_ args: RESPArguments, _ connection: inout ConnectionState, _ out: inout ByteBuffer) {
        var i = 1
        if args.count > 1 {
            switch args.string(1) {
            case "2": connection.version = .v2
            case "3": connection.version = .v3
            default:
                guard args.integer(1) != nil else {
                    return out.writeRESPError("ERR Protocol version is not an integer or out of range")
                }
                return out.writeRESPError("NOPROTO unsupported protocol version")
            }
            i = 2
        }
        while i < args.count {
            switch args.string(i).uppercased() {
            case "AUTH" where i + 2 < args.count: i += 3  // no authentication: access is the socket's file mode
            case "SETNAME" where i + 1 < args.count:
                connection.name = args.string(i + 1)
                i += 2
            default:
                return out.writeRESPError("ERR Syntax error in HELLO option '\(args.string(i))'")
            }
        }
        let v = connection.version
        out.writeRESPMapHeader(count: 7, version: v)
        out.writeRESPBulkString("server"); out.writeRESPBulkString("kv-stored")
        out.writeRESPBulkString("version"); out.writeRESPBulkString(Self.compatibleRedisVersion)
        out.writeRESPBulkString("proto"); out.writeRESPInteger(v.rawValue)
        out.writeRESPBulkString("id"); out.writeRESPInteger(connection.id)
        out.writeRESPBulkString("mode"); out.writeRESPBulkString("standalone")
        out.writeRESPBulkString("role"); out.writeRESPBulkString("master")
        out.writeRESPBulkString("modules"); out.writeRESPArrayHeader(count: 0)
    }

    private func reset(_ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        dropSubscriptions(&connection, subscriber)
        connection.version = .v2
        connection.name = ""
        out.writeRESPSimpleString("RESET")
    }

    private func client(_ args: RESPArguments, _ connection: inout ConnectionState, _ subscriber: SubscriberOutbox, _ out: inout ByteBuffer) {
        switch args.string(1).uppercased() {
        case "ID": out.writeRESPInteger(connection.id)
        case "SETNAME" where args.count == 3:
            let name = args.string(2)
            guard !name.contains(where: { $0 == " " || $0 == "\n" }) else {
                return out.writeRESPError("ERR Client names cannot contain spaces, newlines or special characters.")
            }
            connection.name = name
            out.writeRESPOK()
        case "GETNAME":
            if connection.name.isEmpty { out.writeRESPNull(connection.version) } else { out.writeRESPBulkString(connection.name) }
        case "SETINFO" where args.count == 4: out.writeRESPOK()
        case "NO-CONFLATE" where args.count == 3 && (args.matches(2, "ON") || args.matches(2, "OFF")):
            subscriber.conflates = args.matches(2, "OFF")
            out.writeRESPOK()
        case "INFO":
            out.writeRESPBulkString("id=\(connection.id) name=\(connection.name) resp=\(connection.version.rawValue) sub=\(connection.subscriptions.count)\n")
        default:
            out.writeRESPError("ERR unknown subcommand or wrong number of arguments for 'client|\(args.string(1).lowercased())'")
        }
    }

    private func commandCommand(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        let sub = args.count > 1 ? args.string(1).uppercased() : ""
        switch sub {
        case "" where args.count == 1:
            out.writeRESPArrayHeader(count: Command.table.count)
            for row in Command.table { Self.writeCommandInfo(row.spec, &out) }
        case "INFO":
            // Unknown names answer null in their place, as in Redis.
            out.writeRESPArrayHeader(count: args.count - 2)
            for i in 2..<max(2, args.count) {
                if let command = Command(name: args.string(i)) {
                    Self.writeCommandInfo(command.spec, &out)
                } else {
                    out.writeRESPNull(connection.version)
                }
            }
        case "LIST" where args.count == 2:
            out.writeRESPArrayHeader(count: Command.table.count)
            for row in Command.table { out.writeRESPBulkString(row.spec.name.description.lowercased()) }
        case "COUNT" where args.count == 2: out.writeRESPInteger(Command.table.count)
        case "DOCS": out.writeRESPMapHeader(count: 0, version: connection.version)  // redis-cli asks at start-up for hints
        default:
            out.writeRESPError("ERR unknown subcommand or wrong number of arguments for 'command|\(sub.lowercased())'")
        }
    }

    /// A row of the command table as Redis's `COMMAND INFO` gives it: name, arity, flags,
    /// first key, last key, key step.
    private static func writeCommandInfo(_ spec: Command.Spec, _ out: inout ByteBuffer) {
        out.writeRESPArrayHeader(count: 6)
        out.writeRESPBulkString(spec.name.description.lowercased())
        out.writeRESPInteger(spec.arity)
        let flags = spec.flags.names
        out.writeRESPArrayHeader(count: flags.count)
        for flag in flags { out.writeRESPSimpleString(flag) }
        out.writeRESPInteger(spec.firstKey)
        out.writeRESPInteger(spec.lastKey)
        out.writeRESPInteger(spec.keyStep)
    }

    /// The parameters redis-benchmark and redis-cli ask about, answered truthfully for kv-stored.
    private func config(_ args: RESPArguments, _ connection: ConnectionState, _ out: inout ByteBuffer) {
        guard args.matches(1, "GET") else {
            return out.writeRESPError("ERR CONFIG supports only GET in kv-stored")
        }
        let known: [(String, String)] = [
            ("save", ""), ("appendonly", log == nil ? "no" : "yes"), ("databases", "1"),
            ("maxmemory", String(store.withKeyspace { $0.maxMemoryBytes } ?? 0)), ("maxmemory-policy", "noeviction"),
            ("proto-max-bulk-len", String(max(limits.maxKeyBytes, limits.maxValueBytes))),
        ]
        var matches: [(String, String)] = []
        for pattern in (2..<args.count).map({ args.string($0).lowercased() }) {
            for (name, value) in known where (pattern == "*" || pattern == name) && !matches.contains(where: { $0.0 == name }) {
                matches.append((name, value))
            }
        }
        out.writeRESPMapHeader(count: matches.count, version: connection.version)
        for (name, value) in matches {
            out.writeRESPBulkString(name)
            out.writeRESPBulkString(value)
        }
    }

    // MARK: - INFO

    private func info(_ args: RESPArguments, _ out: inout ByteBuffer) {
        let requested = Set((1..<args.count).map { args.string($0).lowercased() })
        let all = requested.isEmpty || requested.contains("all") || requested.contains("everything") || requested.contains("default")
        let snapshot = store.withKeyspace { ks in
            (count: ks.count, expiring: ks.expiringCount, revision: ks.revision, stats: ks.stats,
             subscriptions: ks.subscriptionCount, watchedKeys: ks.watchedKeyCount, watchedPrefixes: ks.watchedPrefixCount,
             prefixSubscriptions: ks.prefixSubscriptionCount, dataset: ks.datasetBytes, index: ks.indexBytes,
             history: ks.historyFigures, usedMemory: ks.usedMemoryBytes, maxMemory: ks.maxMemoryBytes ?? 0,
             now: ks.clock.monotonicNanoseconds())
        }
        var text = ""
        func section(_ name: String, _ lines: [(String, String)]) {
            guard all || requested.contains(name.lowercased()) else { return }
            if !text.isEmpty { text += "\r\n" }
            text += "# \(name)\r\n"
            for (k, v) in lines { text += "\(k):\(v)\r\n" }
        }
        let uptime = (snapshot.now - statistics.startedAtMonotonicNanoseconds) / 1_000_000_000
        section("Server", [
            ("redis_version", Self.compatibleRedisVersion), ("kv_stored_version", Self.serverVersion),
            ("redis_mode", "standalone"), ("process_id", String(getpid())), ("unix_socket", socketPath),
            ("tcp_port", "0"), ("uptime_in_seconds", String(uptime)),
        ])
        section("Clients", [
            ("connected_clients", String(statistics.connectedClients.load(ordering: .relaxed))),
            ("pubsub_clients_keys", String(snapshot.watchedKeys)),
        ])
        let rss = ProcessMetrics.residentBytes()
        section("Memory", [
            // glibc exposes no 64-bit allocator total to Swift here, so used_memory is the RSS.
            ("used_memory", String(rss)), ("used_memory_rss", String(rss)),
            ("used_memory_dataset", String(snapshot.dataset)), ("used_memory_index", String(snapshot.index)),
            // What --max-memory bounds (Keyspace.usedMemoryBytes), and the bound.
            ("used_memory_limited", String(snapshot.usedMemory)),
            ("maxmemory", String(snapshot.maxMemory)), ("maxmemory_policy", "noeviction"),
        ])
        section("Stats", [
            ("total_connections_received", String(statistics.totalConnections.load(ordering: .relaxed))),
            ("total_commands_processed", String(statistics.totalCommands.load(ordering: .relaxed))),
            ("keyspace_hits", String(snapshot.stats.hits)), ("keyspace_misses", String(snapshot.stats.misses)),
            ("expired_keys", String(snapshot.stats.expiredKeys)), ("total_changes", String(snapshot.stats.changes)),
            ("pubsub_channels", String(snapshot.watchedKeys)), ("pubsub_subscriptions", String(snapshot.subscriptions)),
            ("pubsub_patterns", String(snapshot.watchedPrefixes)), ("pubsub_pattern_subscriptions", String(snapshot.prefixSubscriptions)),
            ("subscriber_conflated_changes", String(statistics.conflatedChanges.load(ordering: .relaxed))),
            ("subscriber_output_limit_disconnects", String(statistics.outputLimitDisconnects.load(ordering: .relaxed))),
            ("protocol_errors", String(statistics.protocolErrors.load(ordering: .relaxed))),
        ])
        let figures = log?.figures
        section("Persistence", [
            ("loading", "0"), ("aof_enabled", log == nil ? "0" : "1"),
            ("aof_fsync", log?.policy.rawValue ?? "none"), ("aof_rewrite_in_progress", figures?.compacting == true ? "1" : "0"),
            ("aof_rewrites", String(figures?.compactions ?? 0)),
            ("aof_last_rewrite_time_ms", String(figures?.lastCompactionMilliseconds ?? 0)),
            ("aof_last_rewrite_longest_piece_us", String(figures?.lastCompactionLongestPieceMicroseconds ?? 0)),
            ("aof_last_rewrite_switch_us", String(figures?.lastCompactionSwitchMicroseconds ?? 0)),
            ("aof_last_bgrewrite_status", figures?.lastCompactionFailed == true ? "err" : "ok"),
            ("aof_base_size", String(figures?.sizeAfterCompaction ?? 0)),
            ("aof_current_size", String(figures?.sizeBytes ?? 0)),
            ("aof_buffer_length", String(figures?.bufferedBytes ?? 0)),
            ("aof_pending_fsync_bytes", String(figures?.unsyncedBytes ?? 0)),
            ("aof_last_fsync_time", String(figures?.lastSyncUnixSeconds ?? 0)),
            ("aof_loaded_records", String(recovery?.records ?? 0)), ("aof_load_duration_ms", String(recovery?.milliseconds ?? 0)),
            ("data_epoch", epoch),
        ])
        let versions = [
            ("revision", String(snapshot.revision)), ("history_changes", String(snapshot.history.changes)),
            ("history_bytes", String(snapshot.history.bytes)), ("history_since_revision", String(snapshot.history.floor)),
        ]
        section("Keyspace", snapshot.count > 0
            ? [("db0", "keys=\(snapshot.count),expires=\(snapshot.expiring),avg_ttl=0")] + versions
            : versions)
        out.writeRESPBulkString(text)
    }
}

#if canImport(Glibc)
import Glibc
#endif
