import DequeModule
import KVCore

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
/// The history keeps its own copy of each change's key and value, packed one after another in
/// chunks, rather than a reference to the entry. A reference kept every superseded entry alive
/// until its change left the history, 100,000 writes later: each write then freed an entry
/// nobody had touched for that long, a cache miss on the write path (with `-P 16` SETs on 100k
/// keys, 20% of kv-stored's throughput, docs/BENCHMARKS.md). Copying a few dozen bytes to the
/// end of a chunk is cheap, a replaced entry is freed while it is still in cache, and dropping
/// the oldest change reads only this history's own, sequential memory.
///
/// Written by hand because no package in use keeps variable-sized byte records in first-in,
/// first-out order without moving them: chunks are dropped whole, never compacted, so no write
/// waits for a large copy.
struct ChangeHistory: Sendable {
    let limits: HistoryLimits
    private var records = Deque<Record>()
    /// The keys and values of `records`, in order; `chunks[0]` is chunk number `firstChunk`.
    private var chunks = Deque<[UInt8]>()
    private var firstChunk = 0
    /// An emptied chunk of the standard size, kept for the next one (no allocation per chunk).
    private var spare: [UInt8]?
    private var bytes = 0
    /// Every change with a revision above this one is held (0 on new data; the revision at
    /// start after loading a log, whose older changes were never in memory).
    private(set) var floor: UInt64 = 0

    /// The size of a chunk. A key and value of more than a quarter of it get a chunk of their
    /// own, of their exact size, so the space left unused at a chunk's end stays under a quarter.
    static let chunkBytes = 64 << 10

    /// One change: its key, then its value for a `set`, at `offset` in chunk number `chunk`.
    private struct Record {
        let revision: UInt64
        let chunk: Int
        /// Below `chunkBytes`: only a standard chunk takes a record at an offset other than 0.
        let offset: UInt32
        let keyCount: UInt32
        let valueCount: UInt32
        let kind: ChangeKind

        /// As `ChangeEvent.byteCost` counts the change.
        var byteCost: Int { Int(keyCount) + Int(valueCount) + 64 }
    }

    init(limits: HistoryLimits) {
        self.limits = limits
    }

    var count: Int { records.count }
    var byteCount: Int { bytes }

    mutating func append(_ change: ChangeEvent) {
        guard limits.maxChanges > 0 else {
            floor = change.revision
            return
        }
        let entry = change.entry
        let keyCount = entry.keyCount, valueCount = change.kind == .set ? entry.valueCount : 0
        let (chunk, offset) = place(keyCount + valueCount)
        entry.withKey { chunks[chunk - firstChunk].append(contentsOf: $0) }
        if valueCount > 0 { entry.withValue { chunks[chunk - firstChunk].append(contentsOf: $0) } }
        // Both counts come from an entry, whose key and value lengths are UInt32 already.
        let record = Record(revision: change.revision, chunk: chunk, offset: UInt32(truncatingIfNeeded: offset),
                            keyCount: UInt32(truncatingIfNeeded: keyCount), valueCount: UInt32(truncatingIfNeeded: valueCount),
                            kind: change.kind)
        records.append(record)
        bytes += record.byteCost
        while records.count > limits.maxChanges || (bytes > limits.maxBytes && records.count > 1) {
            dropOldest()
        }
    }

    /// Drops the oldest changes until `bytes` of them are gone or none is left (the memory limit
    /// needs room: the history is a cache for resumes, which become resets without it).
    mutating func shed(_ needed: Int) {
        var freed = 0
        while freed < needed, let first = records.first {
            freed += first.byteCost
            dropOldest()
        }
    }

    /// Nothing at or below `revision` is held (after loading a log).
    mutating func forget(through revision: UInt64) {
        while let first = records.first, first.revision <= revision { dropOldest() }
        floor = max(floor, revision)
    }

    /// The changes of `key` after revision `since`, oldest first; nil when the history no longer
    /// reaches back that far.
    func changes(of key: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        changes(after: since) { $0.elementsEqual(key) }
    }

    /// The changes of every key that starts with `prefix` after revision `since`, oldest first;
    /// nil when the history no longer reaches back that far.
    func changes(withPrefix prefix: UnsafeRawBufferPointer, after since: UInt64) -> [ChangeEvent]? {
        changes(after: since) { $0.starts(with: prefix) }
    }

    // MARK: - Internals

    /// The chunk and offset where `count` more bytes go, starting a chunk when the last is full.
    private mutating func place(_ count: Int) -> (chunk: Int, offset: Int) {
        if let last = chunks.last, last.capacity >= Self.chunkBytes, last.count + count <= Self.chunkBytes {
            return (firstChunk + chunks.count - 1, last.count)
        }
        var chunk: [UInt8]
        if count <= Self.chunkBytes / 4, let reused = spare {
            chunk = reused
            spare = nil
        } else {
            chunk = []
            chunk.reserveCapacity(count <= Self.chunkBytes / 4 ? Self.chunkBytes : count)
        }
        chunks.append(chunk)
        return (firstChunk + chunks.count - 1, 0)
    }

    /// Removes the oldest change, and the chunks no remaining change lies in.
    private mutating func dropOldest() {
        let dropped = records.removeFirst()
        bytes -= dropped.byteCost
        floor = dropped.revision
        let firstKept = records.first?.chunk ?? firstChunk + chunks.count
        while firstChunk < firstKept, var chunk = chunks.popFirst() {
            firstChunk += 1
            if chunk.capacity >= Self.chunkBytes && chunk.capacity < 2 * Self.chunkBytes {
                chunk.removeAll(keepingCapacity: true)
                spare = chunk
            }
        }
    }

    /// The changes after revision `since` whose key `concerns`, oldest first. Walks back from
    /// the newest change only as far as `since`.
    private func changes(after since: UInt64, where concerns: (UnsafeRawBufferPointer) -> Bool) -> [ChangeEvent]? {
        guard since >= floor else { return nil }
        var found: [ChangeEvent] = []
        var index = records.endIndex
        while index > records.startIndex {
            index -= 1
            let record = records[index]
            if record.revision <= since { break }
            let offset = Int(record.offset), keyCount = Int(record.keyCount), valueCount = Int(record.valueCount)
            chunks[record.chunk - firstChunk].withUnsafeBytes { chunk in
                let key = UnsafeRawBufferPointer(rebasing: chunk[offset..<offset + keyCount])
                guard concerns(key) else { return }
                let value = UnsafeRawBufferPointer(rebasing: chunk[offset + keyCount..<offset + keyCount + valueCount])
                let entry = Entry.make(key: key, value: value, revision: record.revision, deadline: 0)
                found.append(ChangeEvent(kind: record.kind, revision: record.revision, entry: entry))
            }
        }
        return found.reversed()
    }
}
