import NIOConcurrencyHelpers

/// A compaction's pass over the keyspace, in key order, a piece at a time (`Keyspace.compactionPiece`).
///
/// Taking every entry under one lock held writes up for about 40 ms at 1M keys (the worst
/// write latency of a compaction, docs/BENCHMARKS.md); a piece of `keysPerPiece` keys holds
/// them up for a fraction of a millisecond. The snapshot this gives is fuzzy: a key changed
/// while the walk goes on may be met before or after its change, or not at all. The compacted
/// log is still exact because the walk keeps only entries written at or before the snapshot's
/// revision, and every later change is in the log after the snapshot's offset, which the
/// compaction copies after the snapshot.
public struct CompactionWalk: Sendable {
    public let through: UInt64
    public let keysPerPiece: Int
    private var after: [UInt8]?
    private var finished = false
    /// The longest a piece took to read (the keyspace's clock): how long the walk held up the
    /// loop it ran on, and so any write waiting there (INFO `aof_last_rewrite_longest_piece_us`).
    public private(set) var longestPieceNanoseconds: Int64 = 0

    public init(through: UInt64, keysPerPiece: Int) {
        self.through = through
        self.keysPerPiece = keysPerPiece
    }

    /// The next piece from `keyspace`, nil once the walk is complete.
    public mutating func next(in keyspace: Keyspace) -> LogSnapshot.Piece? {
        guard !finished else { return nil }
        let started = keyspace.clock.monotonicNanoseconds()
        let piece = keyspace.compactionPiece(after: after, through: through, keys: keysPerPiece)
        longestPieceNanoseconds = max(longestPieceNanoseconds, keyspace.clock.monotonicNanoseconds() - started)
        after = piece.next
        finished = piece.next == nil
        return piece.entries
    }
}

extension Store {
    /// Keys looked at per piece of a compaction's walk: a fraction of a millisecond on the event
    /// loop at 1M keys. With 1,024, p99 while compacting was 1.0 ms against 0.7 (docs/BENCHMARKS.md).
    public static let compactionKeysPerPiece = 256

    /// The start of a compaction: the revision and the log's length (`logOffset`, read under
    /// the same lock, so the two agree), and the walk that reads the keyspace in pieces.
    public func compactionSnapshot(keysPerPiece: Int = Store.compactionKeysPerPiece, logOffset: () -> Int) -> LogSnapshot {
        let (revision, offset) = withKeyspace { ($0.revision, logOffset()) }
        let walk = NIOLockedValueBox(CompactionWalk(through: revision, keysPerPiece: keysPerPiece))
        // Each piece is taken on the store's event loop, not on the compaction's thread: that
        // thread runs at the lowest CPU priority, and holding the keyspace lock there let it be
        // preempted with the lock held (pieces of 0.6 ms took up to 24 ms, and writes waited).
        return LogSnapshot(revision: revision, logOffset: offset, nextPiece: { [self] in
            try timerLoop.submit {
                walk.withLockedValue { walk in self.withKeyspace { walk.next(in: $0) } }
            }.wait()
        }, longestPieceNanoseconds: { walk.withLockedValue { $0.longestPieceNanoseconds } })
    }
}
