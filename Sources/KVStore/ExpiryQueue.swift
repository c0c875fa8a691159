import HeapModule

/// Deadline-ordered index of the entries that have a TTL: the active-expiry half of Redis's
/// `expire.c`, but exact instead of sampled — the earliest deadline is always at hand.
///
/// Items are never removed from the middle: when an entry is replaced, deleted or persisted its
/// `deadline` changes, and an item whose deadline no longer matches its entry is stale and
/// skipped when it surfaces. Stale items are counted and swept when they outnumber live ones,
/// so rewriting one key with a long TTL over and over cannot grow memory without bound.
struct ExpiryQueue: Sendable {
    struct Item: Comparable, Sendable {
        let deadline: Int64
        let entry: Entry

        static func < (a: Item, b: Item) -> Bool { a.deadline < b.deadline }
        static func == (a: Item, b: Item) -> Bool { a.deadline == b.deadline && a.entry === b.entry }

        var isLive: Bool { entry.deadline == deadline }
    }

    private var heap = Heap<Item>()
    private(set) var staleCount = 0

    var itemCount: Int { heap.count }
    var liveCount: Int { heap.count - staleCount }

    mutating func add(_ entry: Entry) {
        heap.insert(Item(deadline: entry.deadline, entry: entry))
    }

    /// Records that a queued item of an entry no longer counts (its deadline was cleared).
    mutating func markStale() {
        staleCount += 1
        if staleCount > 1024 && staleCount > heap.count / 2 {
            heap = Heap(heap.unordered.filter(\.isLive))
            staleCount = 0
        }
    }

    /// The earliest live deadline, dropping stale items that sit in front of it.
    mutating func nextDeadline() -> Int64? {
        while let top = heap.min {
            if top.isLive { return top.deadline }
            heap.removeMin()
            staleCount -= 1
        }
        return nil
    }

    /// Removes and returns the entry with the earliest deadline if that deadline is at or before `now`.
    mutating func popDue(now: Int64) -> Entry? {
        guard let deadline = nextDeadline(), deadline <= now else { return nil }
        return heap.removeMin().entry
    }
}
