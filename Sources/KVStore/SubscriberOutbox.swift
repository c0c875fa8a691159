import DequeModule
import KVCore
import NIOConcurrencyHelpers

/// The output-limit policy for one subscriber connection, as a pure state machine.
///
/// Changes queue here until the connection can write them. A client that stops reading makes
/// the queue grow, and then:
/// * above `conflateBytes`, superseded changes are dropped: for each key only the newest pending
///   change is kept (a subscriber sees state, so an intermediate value may be skipped, never the
///   final one; per-key order is preserved);
/// * if the queue is still above `maxBytes` after that, the subscriber is cut off (Redis's
///   `client-output-buffer-limit pubsub` does the same, without conflating first). A queue of
///   one change is never over the limit, so one large value always gets through.
public struct OutboxBuffer: Sendable {
    public struct Limits: Sendable, Equatable {
        public var conflateBytes: Int
        public var maxBytes: Int

        public init(conflateBytes: Int = 1 << 20, maxBytes: Int = 64 << 20) {
            self.conflateBytes = conflateBytes
            self.maxBytes = maxBytes
        }
    }

    public enum AppendResult: Equatable, Sendable {
        /// The first pending change: the connection should be woken to drain.
        case wake
        /// Queued behind others; a drain is already due.
        case queued
        /// Over the hard limit even after conflating: the connection must be closed.
        case overflow
        /// Already overflowed; the change is dropped.
        case dropped
    }

    public let limits: Limits
    private var pending = Deque<ChangeEvent>()
    public private(set) var pendingBytes = 0
    /// Changes dropped because a newer change of the same key superseded them.
    public private(set) var conflatedCount = 0
    public private(set) var overflowed = false
    /// Conflate again only once the queue has doubled since the last pass (amortised O(1)).
    private var nextConflation: Int

    public init(limits: Limits) {
        self.limits = limits
        self.nextConflation = limits.conflateBytes
    }

    public var isEmpty: Bool { pending.isEmpty }
    public var count: Int { pending.count }

    public mutating func append(_ event: ChangeEvent) -> AppendResult {
        if overflowed { return .dropped }
        let wasEmpty = pending.isEmpty
        pending.append(event)
        pendingBytes += event.byteCost
        if pendingBytes > nextConflation {
            conflate()
            nextConflation = max(limits.conflateBytes, pendingBytes * 2)
        }
        if pendingBytes > limits.maxBytes {
            conflate()  // always before giving up on a subscriber, whatever the doubling guard says
        }
        if pendingBytes > limits.maxBytes && pending.count > 1 {
            overflowed = true
            pending.removeAll()
            pendingBytes = 0
            return .overflow
        }
        return wasEmpty ? .wake : .queued
    }

    /// Keeps the newest change of each key, in the order of those newest changes.
    private mutating func conflate() {
        var seen = Set<[UInt8]>()
        var kept: [ChangeEvent] = []
        for event in pending.reversed() where seen.insert(event.entry.keyBytes).inserted {
            kept.append(event)
        }
        conflatedCount += pending.count - kept.count
        pending = Deque(kept.reversed())
        pendingBytes = pending.reduce(0) { $0 + $1.byteCost }
    }

    /// Takes up to `maxBytes` worth of changes (at least one, if any), oldest first.
    public mutating func take(maxBytes: Int) -> [ChangeEvent] {
        var taken: [ChangeEvent] = []
        var bytes = 0
        while let first = pending.first, taken.isEmpty || bytes + first.byteCost <= maxBytes {
            pending.removeFirst()
            bytes += first.byteCost
            pendingBytes -= first.byteCost
            taken.append(first)
        }
        if pendingBytes < limits.conflateBytes { nextConflation = limits.conflateBytes }
        return taken
    }
}

/// A connection's `ChangeSubscriber`: an `OutboxBuffer` behind its own small lock, so the store
/// can enqueue under its lock without waiting for the connection, plus a wake-up callback that
/// schedules a drain on the connection's event loop.
public final class SubscriberOutbox: ChangeSubscriber, Sendable {
    private let buffer: NIOLockedValueBox<OutboxBuffer>
    private let wake: @Sendable () -> Void
    private let overflow: @Sendable () -> Void
    private let conflated: @Sendable (Int) -> Void

    /// `wake` and `overflow` are called from whichever thread delivers; they should hop to the
    /// connection's event loop. `conflated` is told how many changes a conflation pass dropped.
    public init(
        limits: OutboxBuffer.Limits,
        wake: @escaping @Sendable () -> Void,
        overflow: @escaping @Sendable () -> Void,
        conflated: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.buffer = NIOLockedValueBox(OutboxBuffer(limits: limits))
        self.wake = wake
        self.overflow = overflow
        self.conflated = conflated
    }

    public func deliver(_ event: ChangeEvent) {
        let (result, dropped) = buffer.withLockedValue { buffer in
            let before = buffer.conflatedCount
            let result = buffer.append(event)
            return (result, buffer.conflatedCount - before)
        }
        if dropped > 0 { conflated(dropped) }
        switch result {
        case .wake: wake()
        case .overflow: overflow()
        case .queued, .dropped: break
        }
    }

    public func take(maxBytes: Int) -> [ChangeEvent] {
        buffer.withLockedValue { $0.take(maxBytes: maxBytes) }
    }

    public var conflatedCount: Int { buffer.withLockedValue { $0.conflatedCount } }
}
