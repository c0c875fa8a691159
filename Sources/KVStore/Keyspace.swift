import KVCore
import KVSystem

/// How a write treats the key's TTL.
public enum Expiry: Sendable, Equatable {
    /// No TTL: the key never expires, and any TTL it had is cleared (Redis `SET`).
    case none
    /// Keep the TTL the key already has (Redis `KEEPTTL`).
    case keep
    /// Expire this many milliseconds from now (`PX`, `EX`).
    case after(milliseconds: Int64)
    /// Expire at this Unix time in milliseconds (`PXAT`, `EXAT`).
    case atUnixMilliseconds(Int64)
}

/// When a write applies (Redis `NX` / `XX`, and kv-stored's compare-and-set on revisions).
public enum SetCondition: Sendable, Equatable {
    case always
    case ifAbsent
    case ifPresent
    /// The key's current revision is one of these; 0 stands for "absent".
    case ifRevision([UInt64])

    /// Whether a key whose live entry is `current` meets the condition.
    func holds(for current: Entry?) -> Bool {
        switch self {
        case .always: true
        case .ifAbsent: current == nil
        case .ifPresent: current != nil
        case .ifRevision(let revisions): revisions.contains(current?.revision ?? 0)
        }
    }
}

public struct SetOutcome: Sendable {
    /// False when the condition did not hold, or the memory limit refused the write; nothing changed then.
    public var applied: Bool
    /// The live entry the key had before (for `SET … GET`, and the revision a failed condition met).
    public var previous: Entry?
    /// The write would have taken the data past `Keyspace.maxMemoryBytes`.
    public var overMemory = false
}

/// What a conditional delete did.
public enum DeleteOutcome: Sendable, Equatable {
    /// The key existed and was deleted, by the change with this revision.
    case deleted(revision: UInt64)
    /// The key did not exist (and the condition allowed that): nothing changed.
    case absent
    /// The condition did not hold: nothing changed. The key's revision, 0 when absent.
    case conflict(current: UInt64)
}

/// Counters for INFO.
public struct KeyspaceStats: Sendable, Equatable {
    public var hits = 0
    public var misses = 0
    public var expiredKeys = 0
    public var changes = 0
}

/// The keyspace: every key, its value, revision and deadline, and who watches it.
///
/// As in Redis's `db.c`, there is one read path (`lookup`, which never returns an expired
/// entry), one write path (`set`/`remove` through `replace`), and one notify path (`notify`).
/// Nothing else touches the table. Not thread-safe: its owner serialises access (`Store`).
public struct Keyspace: Sendable {
    public let clock: any StoreClock
    private var table = KeyTable()
    /// The same keys in order, for listing by prefix.
    private var order = SortedKeys()
    /// While a log loads, the order is left alone and built once at the end (`endRestore`).
    private var orderDeferred = false
    private var expiries = ExpiryQueue()
    private var feed = ChangeFeed()
    private var history: ChangeHistory
    /// The revision of the latest change; every set, delete of an existing key and expiry takes the next one.
    public private(set) var revision: UInt64 = 0
    public private(set) var stats = KeyspaceStats()
    /// Sum of key and value bytes of live entries.
    public private(set) var datasetBytes = 0
    /// The most memory the data may use (`usedMemoryBytes`), or nil for no limit (kv-stored's
    /// `--max-memory`). A write that would take it past this is refused; one that shrinks the
    /// data is not, nor is any delete, and nothing stored is ever evicted (Redis's
    /// `maxmemory-policy noeviction`).
    public var maxMemoryBytes: Int?
    /// Where every change is recorded for durability (kv-stored's append-only log), in the same
    /// order, under the same lock; nil for a memory-only keyspace.
    public var recorder: (any ChangeRecorder)?
    /// Told, for each key removed by expiry, how late the removal was (nanoseconds from its
    /// deadline): kv-stored's expiry-lag histogram. Called under the owner's lock.
    public var expiryLagObserver: (@Sendable (Int64) -> Void)?

    public init(clock: any StoreClock = SystemClock(), history: HistoryLimits = HistoryLimits()) {
        self.clock = clock
        self.history = ChangeHistory(limits: history)
    }

    public var count: Int { table.count }
    public var expiringCount: Int { expiries.liveCount }
    public var subscriptionCount: Int { feed.subscriptionCount }
    public var watchedKeyCount: Int { feed.keyCount }
    public var prefixSubscriptionCount: Int { feed.prefixSubscriptionCount }
    public var watchedPrefixCount: Int { feed.prefixCount }
    /// Memory of the index structures (table slots), for INFO.
    public var indexBytes: Int { table.slotBytes + order.bytes }
    /// What `maxMemoryBytes` bounds: keys and values, the index, and the changes kept for
    /// resuming subscribers. Connection buffers have limits of their own.
    public var usedMemoryBytes: Int { datasetBytes + indexBytes + history.byteCount }
    /// Changes held for resuming subscribers, their bytes, and the revision they reach back to.
    public var historyFigures: (changes: Int, bytes: Int, floor: UInt64) { (history.count, history.byteCount, history.floor) }

    // MARK: - Read path

    /// The live entry for `key`, or nil. An entry whose deadline has passed is expired here
    /// (removed and published) before the timer gets to it, so no reader ever sees it.
    public mutating func lookup(_ key: UnsafeRawBufferPointer) -> Entry? {
        lookup(key, hash: KeyTable.hash(key))
    }

    private mutating func lookup(_ key: UnsafeRawBufferPointer, hash: UInt32) -> Entry? {
        guard let entry = table.find(key, hash: hash) else {
            stats.misses += 1
            return nil
        }
        let now = entry.deadline != 0 ? clock.monotonicNanoseconds() : 0
        if entry.deadline != 0 && entry.deadline <= now {
            expiryLagObserver?(now - entry.deadline)
            expire(entry)
            stats.misses += 1
            return nil
        }
        stats.hits += 1
        return entry
    }

    /// A page of keys in order (kv-stored's `KVLIST`), taken in one go: a consistent snapshot
    /// at `revision`.
    public struct Listing {
        /// Live entries, each with its milliseconds left (nil without a TTL).
        public var entries: [(entry: Entry, remainingMilliseconds: Int64?)] = []
        /// Where the next page starts (after this key), or nil when the listing is complete.
        public var next: [UInt8]?
        public var revision: UInt64 = 0
    }

    /// Up to `limit` live keys starting with `prefix`, in bytewise order, after `after` (or from
    /// the first). At most `budget` keys are looked at (expired ones not yet removed are skipped
    /// but count), so a call's work is bounded whatever the data; a page cut short by the budget
    /// has a `next` all the same.
    public func list(prefix: UnsafeRawBufferPointer, after: UnsafeRawBufferPointer?, limit: Int, budget: Int) -> Listing {
        var listing = Listing(revision: revision)
        guard limit > 0 else { return listing }
        // Start at the prefix itself (inclusive), or after `after` when that is further on.
        let fromAfter = after.map { SortedKeys.compare($0, prefix) >= 0 } ?? false
        let start = fromAfter ? after : prefix
        let now = clock.monotonicNanoseconds()
        var visited = 0
        // A full page says `next` only if a key under the prefix follows, so a listing that
        // ends on a full page is not followed by an empty one.
        var full: [UInt8]?
        order.forEach(from: start, inclusive: !fromAfter) { key in
            guard key.count >= prefix.count, SortedKeys.compare(UnsafeRawBufferPointer(rebasing: key.prefix(prefix.count)), prefix) == 0 else {
                return false  // past the prefix: the listing is complete
            }
            if let full {
                listing.next = full
                return false
            }
            visited += 1
            if let entry = table.find(key), entry.deadline == 0 || entry.deadline > now {
                listing.entries.append((entry, remainingMilliseconds(of: entry)))
            }
            if listing.entries.count == limit {
                full = Array(key)
            } else if visited >= budget {
                listing.next = Array(key)
                return false
            }
            return true
        }
        return listing
    }

    /// Milliseconds left before `key` expires (rounded up), nil when it has no TTL.
    /// The caller has looked the entry up, so it is live.
    public func remainingMilliseconds(of entry: Entry) -> Int64? {
        guard entry.deadline != 0 else { return nil }
        let left = entry.deadline - clock.monotonicNanoseconds()
        return max(0, (left + 999_999) / 1_000_000)
    }

    // MARK: - Write path

    /// Starts loading what looking up these keys will touch (`KeyTable.hash` of each), so a burst
    /// of pipelined commands waits for its cache misses together instead of one after another.
    /// A hint only: nothing is read or changed.
    func prefetch(hashes: some Collection<UInt32>) {
        for hash in hashes { table.prefetchSlot(hash: hash) }
        for hash in hashes { table.prefetchEntry(hash: hash) }
    }

    /// Writes `value` under `key` when `condition` holds. This is the one place a value is stored.
    ///
    /// The TTL rule (as Redis `SET`): a write with `.none` clears any TTL the key had; `.keep`
    /// carries it over; `.after`/`.atUnixMilliseconds` set a new one. A deadline that has already
    /// passed (an `atUnixMilliseconds` in the past) makes the write an immediate expiry of the key.
    /// Every applied write is a change with a new revision, even when the value is equal.
    ///
    /// With `returningPrevious` false, an applied write's outcome carries no previous entry, and
    /// an overwrite may put the new value into the old entry's allocation (`rewriteInPlace`).
    public mutating func set(
        _ key: UnsafeRawBufferPointer,
        value: UnsafeRawBufferPointer,
        expiry: Expiry = .none,
        condition: SetCondition = .always,
        returningPrevious: Bool = true
    ) -> SetOutcome {
        let hash = KeyTable.hash(key)
        var previous = lookup(key, hash: hash)
        guard condition.holds(for: previous) else { return SetOutcome(applied: false, previous: previous) }
        if let maxMemoryBytes {
            let growth = key.count + value.count - (previous.map { $0.keyCount + $0.valueCount } ?? 0)
            let excess = usedMemoryBytes + growth - maxMemoryBytes
            if growth > 0 && excess > 0 {
                // The resume history gives way first (a cache of copies); the data is never evicted.
                history.shed(excess)
                if usedMemoryBytes + growth > maxMemoryBytes {
                    return SetOutcome(applied: false, previous: previous, overMemory: true)
                }
            }
        }
        // The clock is read only for a TTL: a write without one does not need the time.
        let deadline: Int64
        switch expiry {
        case .none: deadline = 0
        case .keep: deadline = previous?.deadline ?? 0
        case .after(let ms): deadline = Self.deadline(now: clock.monotonicNanoseconds(), afterMilliseconds: ms)
        case .atUnixMilliseconds(let at):
            let now = clock.monotonicNanoseconds()
            guard let delta = Self.millisecondsUntil(at, from: clock.unixMilliseconds()) else {
                if let previous { expire(previous) }
                return SetOutcome(applied: true, previous: previous)
            }
            deadline = Self.deadline(now: now, afterMilliseconds: delta)
        }
        let revision = nextRevision()
        let mayRewrite = previous != nil && !returningPrevious
        if mayRewrite { previous = nil }  // this function's own reference would make the entry look shared
        let entry = (mayRewrite ? rewriteInPlace(key, hash: hash, value: value, revision: revision, deadline: deadline) : nil)
            ?? insert(key, hash: hash, value: value, revision: revision, deadline: deadline)
        datasetBytes += entry.keyCount + entry.valueCount
        if deadline != 0 { expiries.add(entry) }
        notify(.set, revision: revision, entry: entry)
        return SetOutcome(applied: true, previous: previous)
    }

    /// Puts the new value of `key` into its current entry's allocation, when nothing but the
    /// table holds that entry (no subscriber's queue, no reader between the lock and its reply,
    /// no expiry queue) and the allocation is at most a quarter (plus 64 bytes) larger than key
    /// and value, so memory stays as accounted; nil otherwise. Saves a malloc, and a free of an entry over 1 KiB, which glibc
    /// sends through its general bins: under `-P 16` SETs of 1 KiB values, `_int_free` alone
    /// was 16.5% of kv-stored's time.
    private mutating func rewriteInPlace(_ key: UnsafeRawBufferPointer, hash: UInt32, value: UnsafeRawBufferPointer,
                                         revision: UInt64, deadline: Int64) -> Entry? {
        let needed = key.count + value.count
        guard let old = table.soleEntry(key, hash: hash), needed <= old.byteCapacity, old.byteCapacity - needed <= needed / 4 + 64 else {
            return nil
        }
        forget(old)
        old.rewrite(value: value, revision: revision, deadline: deadline)
        return old
    }

    /// Stores a new entry for `key`, replacing the one it had, if any.
    private mutating func insert(_ key: UnsafeRawBufferPointer, hash: UInt32, value: UnsafeRawBufferPointer,
                                 revision: UInt64, deadline: Int64) -> Entry {
        let entry = Entry.make(key: key, value: value, revision: revision, deadline: deadline)
        if let old = table.upsert(entry, hash: hash) { forget(old) } else { entry.withKey { order.insert($0) } }
        return entry
    }

    /// The monotonic deadline `milliseconds` after `now`, at most 100 years ahead (the front
    /// ends' own TTL limit). Deadlines are Int64 nanoseconds, which reach only ~292 years: an
    /// `EXAT` in year 2600 (or a log record saying so) must be capped, not overflow, or one
    /// command would end the process. Nobody can observe the difference before then.
    static func deadline(now: Int64, afterMilliseconds milliseconds: Int64) -> Int64 {
        now + min(max(milliseconds, 1), TTL.maxMilliseconds) * 1_000_000
    }

    /// Milliseconds from Unix time `now` until `at`, saturated; nil when `at` is not after `now`.
    static func millisecondsUntil(_ at: Int64, from now: Int64) -> Int64? {
        guard at > now else { return nil }
        let delta = at.subtractingReportingOverflow(now)
        return delta.overflow ? Int64.max : delta.partialValue
    }

    /// Deletes `key`. Returns false (and changes nothing, publishes nothing) when it did not exist.
    @discardableResult
    public mutating func delete(_ key: UnsafeRawBufferPointer) -> Bool {
        delete(key, condition: .always) != .absent
    }

    /// Deletes `key` when `condition` holds for it (`.ifAbsent` makes a delete that only
    /// succeeds, changing nothing, when there is nothing to delete).
    public mutating func delete(_ key: UnsafeRawBufferPointer, condition: SetCondition) -> DeleteOutcome {
        let entry = lookup(key)
        guard condition.holds(for: entry) else { return .conflict(current: entry?.revision ?? 0) }
        guard let entry else { return .absent }
        remove(entry, kind: .deleted)
        return .deleted(revision: revision)
    }

    // MARK: - History

    /// What a subscriber resuming after revision `since` missed of `key`, oldest first; nil when
    /// the history no longer reaches back that far (or `since` lies in the future).
    public func changes(of key: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        guard since <= revision else { return nil }
        return history.changes(of: key, after: since)
    }

    /// What a subscriber of `prefix` resuming after revision `since` missed, oldest first; nil
    /// when the history no longer reaches back that far (or `since` lies in the future).
    public func changes(withPrefix prefix: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        guard since <= revision else { return nil }
        return history.changes(withPrefix: prefix, after: since)
    }

    /// Clears the TTL of `key`. Not a change of the value: no revision, no event (as Redis
    /// `PERSIST` touches no value). Returns false when the key is missing or had no TTL.
    public mutating func persist(_ key: UnsafeRawBufferPointer) -> Bool {
        guard let entry = lookup(key), entry.deadline != 0 else { return false }
        entry.deadline = 0
        expiries.markStale()
        recorder?.recordPersist(key: key)
        return true
    }

    // MARK: - Active expiry

    /// The earliest deadline of any key, for the owner's timer.
    public mutating func nextDeadline() -> Int64? {
        expiries.nextDeadline()
    }

    /// Removes up to `limit` keys whose deadline has passed, publishing `expired` for each,
    /// in deadline order. Returns how many it removed.
    @discardableResult
    public mutating func expireDue(limit: Int = .max) -> Int {
        let now = clock.monotonicNanoseconds()
        var removed = 0
        while removed < limit, let entry = expiries.popDue(now: now) {
            expiryLagObserver?(now - entry.deadline)
            entry.deadline = 0  // its queue item is gone already; not stale
            remove(entry, kind: .expired, countStale: false)
            removed += 1
        }
        return removed
    }

    private mutating func expire(_ entry: Entry) {
        remove(entry, kind: .expired)
    }

    // MARK: - Subscriptions

    /// Starts delivering changes of `key` to `subscriber`. In force as soon as this returns.
    @discardableResult
    public mutating func subscribe(_ key: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        feed.subscribe(key: key, subscriber)
    }

    @discardableResult
    public mutating func unsubscribe(_ key: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        feed.unsubscribe(key: key, subscriber)
    }

    /// Starts delivering changes of every key starting with `prefix` to `subscriber`, each
    /// naming `pattern`. In force as soon as this returns.
    @discardableResult
    public mutating func subscribe(prefix: [UInt8], pattern: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        feed.subscribe(prefix: prefix, pattern: pattern, subscriber)
    }

    @discardableResult
    public mutating func unsubscribe(prefix: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        feed.unsubscribe(prefix: prefix, subscriber)
    }

    // MARK: - Internals of the write and notify paths

    private mutating func remove(_ entry: Entry, kind: ChangeKind, countStale: Bool = true) {
        entry.withKey {
            _ = table.remove($0)
            order.remove($0)
        }
        if countStale { forget(entry) } else { datasetBytes -= entry.keyCount + entry.valueCount }
        if kind == .expired { stats.expiredKeys += 1 }
        notify(kind, revision: nextRevision(), entry: entry)
    }

    /// Accounts for an entry leaving the table (replaced or removed).
    private mutating func forget(_ entry: Entry) {
        datasetBytes -= entry.keyCount + entry.valueCount
        if entry.deadline != 0 {
            entry.deadline = 0
            expiries.markStale()
        }
    }

    private mutating func nextRevision() -> UInt64 {
        revision += 1
        return revision
    }

    /// The one notify path: every change goes through here, in revision order.
    private mutating func notify(_ kind: ChangeKind, revision: UInt64, entry: Entry) {
        stats.changes += 1
        if let recorder {
            let deadline = kind == .set && entry.deadline != 0 ? unixMilliseconds(ofDeadline: entry.deadline) : nil
            recorder.record(kind, entry: entry, revision: revision, deadlineUnixMilliseconds: deadline)
        }
        let change = ChangeEvent(kind: kind, revision: revision, entry: entry)
        history.append(change)
        feed.publish(change)
    }

    /// A monotonic deadline as Unix milliseconds (what the log keeps: it outlives the process).
    private func unixMilliseconds(ofDeadline deadline: Int64) -> Int64 {
        Self.unixMilliseconds(ofDeadline: deadline, monotonicNow: clock.monotonicNanoseconds(), unixNow: clock.unixMilliseconds())
    }

    /// The same, from one reading of both clocks (a compaction's piece converts many).
    private static func unixMilliseconds(ofDeadline deadline: Int64, monotonicNow: Int64, unixNow: Int64) -> Int64 {
        unixNow + (deadline - monotonicNow + 999_999) / 1_000_000
    }

    // MARK: - Recovery

    /// Puts back a write read from the log: no event (nobody is subscribed while kv-stored
    /// loads), no record, and the log's own revision.
    ///
    /// A deadline that has already passed still loads, due at once: a `PERSIST` record later in
    /// the log may clear it (dropping the key here lost a key set with a TTL and then persisted,
    /// once its first deadline had passed). What is still due when the log is read is dropped
    /// by `restoreDropExpired`.
    public mutating func restoreSet(_ key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, revision: UInt64, deadlineUnixMilliseconds: Int64?) {
        restoreRevision(revision)
        let hash = KeyTable.hash(key)
        var deadline: Int64 = 0
        if let at = deadlineUnixMilliseconds {
            let now = clock.monotonicNanoseconds()
            if let left = Self.millisecondsUntil(at, from: clock.unixMilliseconds()) {
                deadline = Self.deadline(now: now, afterMilliseconds: left)
            } else {
                deadline = max(1, now)  // 0 would mean "no TTL"
            }
        }
        let entry = Entry.make(key: key, value: value, revision: revision, deadline: deadline)
        if let old = table.upsert(entry, hash: hash) { forget(old) } else if !orderDeferred { entry.withKey { order.insert($0) } }
        datasetBytes += entry.keyCount + entry.valueCount
        if deadline != 0 { expiries.add(entry) }
    }

    /// Starts a load from the log: the key order is built once, at `endRestore`.
    public mutating func beginRestore() {
        orderDeferred = true
    }

    /// Ends a load from the log: drops what expired (`restoreDropExpired`) and builds the key
    /// order from the table in one pass (sorted once, instead of a search per key loaded).
    public mutating func endRestore() {
        restoreDropExpired()
        guard orderDeferred else { return }
        var entries: [Entry] = []
        entries.reserveCapacity(table.count)
        table.forEach { entries.append($0) }
        entries.sort { a, b in a.withKey { x in b.withKey { y in SortedKeys.compare(x, y) < 0 } } }
        var builder = SortedKeys.Builder()
        for entry in entries { entry.withKey { builder.append($0) } }
        order = builder.keys
        orderDeferred = false
    }

    /// Ends a load from the log: drops, silently as `restoreRemove`, every key whose deadline
    /// has passed (while kv-stored was down, or while it loaded). Returns how many.
    @discardableResult
    public mutating func restoreDropExpired() -> Int {
        let now = clock.monotonicNanoseconds()
        var dropped = 0
        while let entry = expiries.popDue(now: now) {
            entry.deadline = 0  // its queue item is gone already; not stale
            entry.withKey { removeSilently($0) }
            dropped += 1
        }
        return dropped
    }

    /// Puts back a delete or expiry read from the log (silently, as `restoreSet`).
    public mutating func restoreRemove(_ key: UnsafeRawBufferPointer, revision: UInt64) {
        restoreRevision(revision)
        removeSilently(key)
    }

    /// Takes `key` out of the table and the order: no revision, no event, no record.
    private mutating func removeSilently(_ key: UnsafeRawBufferPointer) {
        guard let entry = table.remove(key) else { return }
        if !orderDeferred { order.remove(key) }
        forget(entry)
    }

    /// Puts back the revision counter (recorded after a compacted snapshot, or carried by a
    /// change). Changes loaded from a log are not in the history: resuming from before them
    /// gets a reset.
    public mutating func restoreRevision(_ revision: UInt64) {
        self.revision = max(self.revision, revision)
        history.forget(through: self.revision)
    }

    /// One piece of a compaction's walk (`CompactionWalk`): the keys after `after` in key order
    /// (from the first when nil), at most `keys` of them looked at, and the live entries among
    /// them written at or before revision `through`, each with its deadline as Unix
    /// milliseconds. `next` is the key to go on after, nil when the walk is complete.
    ///
    /// A key that exists throughout a walk is met exactly once, whatever changes between pieces
    /// (the order is the keys', not the table's slots, which move as it grows and shrinks). An
    /// entry written after `through` is left out: its write is in the log after the snapshot's
    /// point, and replaying it there makes the key right. Entries are immutable, so the pieces
    /// may be written out later from another thread; deadlines are read here, under the lock.
    public func compactionPiece(after: [UInt8]?, through: UInt64, keys: Int) -> (entries: [(entry: Entry, deadlineUnixMilliseconds: Int64?)], next: [UInt8]?) {
        let keys = max(1, keys)
        var entries: [(entry: Entry, deadlineUnixMilliseconds: Int64?)] = []
        entries.reserveCapacity(keys)
        var next: [UInt8]?
        var visited = 0
        let monotonicNow = clock.monotonicNanoseconds(), unixNow = clock.unixMilliseconds()
        func visit(_ start: UnsafeRawBufferPointer?) {
            order.forEach(from: start) { key in
                visited += 1
                if let entry = table.find(key), entry.revision <= through {
                    let deadline = entry.deadline
                    if deadline == 0 {
                        entries.append((entry, nil))
                    } else if deadline > monotonicNow {
                        entries.append((entry, Self.unixMilliseconds(ofDeadline: deadline, monotonicNow: monotonicNow, unixNow: unixNow)))
                    }
                }
                if visited >= keys {
                    next = Array(key)
                    return false
                }
                return true
            }
        }
        if let after { after.withUnsafeBytes { visit($0) } } else { visit(nil) }
        return (entries, next)
    }

    /// Puts back a cleared TTL read from the log.
    public mutating func restorePersist(_ key: UnsafeRawBufferPointer) {
        guard let entry = table.find(key, hash: KeyTable.hash(key)), entry.deadline != 0 else { return }
        entry.deadline = 0
        expiries.markStale()
    }

    /// Every live entry (tests, INFO). Expired-but-not-yet-removed entries are skipped.
    public func forEachLive(_ body: (Entry) throws -> Void) rethrows {
        let now = clock.monotonicNanoseconds()
        try table.forEach { entry in
            if entry.deadline == 0 || entry.deadline > now { try body(entry) }
        }
    }
}
