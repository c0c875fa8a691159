import DequeModule

/// How many recent changes kv-stored keeps for subscribers that resume (`KVSYNC … SINCE`).
public struct HistoryLimits: Sendable, Equatable {
    /// Most changes kept.
    public var maxChanges: Int
    /// Most bytes kept (keys and values of the changes, as `ChangeEvent.byteCost` counts them).
    public var maxBytes: Int

    public init(maxChanges: Int = 100_000, maxBytes: Int = 64 << 20) {
        self.maxChanges = maxChanges
        self.maxBytes = maxBytes
    }
}

/// The most recent changes of the whole keyspace, oldest first, within `HistoryLimits`; owned by
/// `Keyspace`, whose notify path appends every change in revision order.
///
/// Entries are immutable and shared with the keyspace, so a change of a key that is still
/// live costs no copy of its value; a superseded value is kept alive until its change leaves.
struct ChangeHistory: Sendable {
    let limits: HistoryLimits
    private var changes = Deque<ChangeEvent>()
    private var bytes = 0
    /// Every change with a revision above this one is held (0 on new data; the revision at
    /// start after loading a log, whose older changes were never in memory).
    private(set) var floor: UInt64 = 0

    init(limits: HistoryLimits) {
        self.limits = limits
    }

    var count: Int { changes.count }
    var byteCount: Int { bytes }

    mutating func append(_ change: ChangeEvent) {
        guard limits.maxChanges > 0 else {
            floor = change.revision
            return
        }
        changes.append(change)
        bytes += change.byteCost
        while changes.count > limits.maxChanges || (bytes > limits.maxBytes && changes.count > 1) {
            let dropped = changes.removeFirst()
            bytes -= dropped.byteCost
            floor = dropped.revision
        }
    }

    /// Drops the oldest changes until `bytes` of them are gone or none is left (the memory limit
    /// needs room: the history is a cache for resumes, which become resets without it).
    mutating func shed(_ needed: Int) {
        var freed = 0
        while freed < needed, let first = changes.first {
            changes.removeFirst()
            bytes -= first.byteCost
            freed += first.byteCost
            floor = first.revision
        }
    }

    /// Nothing at or below `revision` is held (after loading a log).
    mutating func forget(through revision: UInt64) {
        while let first = changes.first, first.revision <= revision {
            bytes -= first.byteCost
            changes.removeFirst()
        }
        floor = max(floor, revision)
    }

    /// The changes of `key` after revision `since`, oldest first; nil when the history no longer
    /// reaches back that far.
    func changes(of key: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        changes(after: since) { $0.hasKey(key) }
    }

    /// The changes of every key that starts with `prefix` after revision `since`, oldest first;
    /// nil when the history no longer reaches back that far.
    func changes(withPrefix prefix: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        changes(after: since) { entry in entry.withKey { $0.starts(with: prefix) } }
    }

    /// The changes after revision `since` whose entry `concerns`, oldest first. Walks back from
    /// the newest change only as far as `since`.
    private func changes(after since: UInt64, where concerns: (Entry) -> Bool) -> [ChangeEvent]? {
        guard since >= floor else { return nil }
        var found: [ChangeEvent] = []
        var index = changes.endIndex
        while index > changes.startIndex {
            index -= 1
            let change = changes[index]
            if change.revision <= since { break }
            if concerns(change.entry) { found.append(change) }
        }
        return found.reversed()
    }
}
