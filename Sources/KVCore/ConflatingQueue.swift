/// Something that waits in a `ConflatingQueue`.
public protocol Conflatable: Sendable {
    /// Elements with the same key supersede each other (the newest wins); nil means the element
    /// is never dropped (a reply to a request, say).
    var conflationKey: [UInt8]? { get }
    /// What the element costs against the queue's limits, in bytes.
    var byteCost: Int { get }
}

/// Limits of a `ConflatingQueue`.
public struct OutputLimits: Sendable, Equatable {
    /// Above this many queued bytes, superseded elements are dropped.
    public var conflateBytes: Int
    /// Above this many bytes after conflating, the queue overflows (its consumer is cut off).
    public var maxBytes: Int

    public init(conflateBytes: Int = 1 << 20, maxBytes: Int = 64 << 20) {
        self.conflateBytes = conflateBytes
        self.maxBytes = maxBytes
    }
}

/// The output-limit policy for a subscriber, as a pure state machine (kv-stored's subscriber
/// connections and kv-ws's WebSocket sessions both use it).
///
/// Elements queue here until the consumer can write them. A client that stops reading makes
/// the queue grow, and then:
/// * above `conflateBytes`, superseded elements are dropped: for each key only the newest pending
///   element is kept (a subscriber sees state, so an intermediate value may be skipped, never the
///   final one; per-key order is preserved); elements without a key are always kept;
/// * if the queue is still above `maxBytes` after that, it overflows and the consumer is cut off
///   (Redis's `client-output-buffer-limit pubsub` does the same, without conflating first). A
///   queue of one element is never over the limit, so one large value always gets through.
///
/// Its operations are `@inlinable` so that each user's element type gets its own specialized
/// copy: generic code across the module boundary looked up type metadata at run time, a
/// twentieth of kv-ws's time when fanning a change out to 1,000 WebSocket sessions.
public struct ConflatingQueue<Element: Conflatable>: Sendable {
    public typealias Limits = OutputLimits

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
    /// False for a consumer that must see every element: it is cut off at `maxBytes` instead.
    public var conflates = true
    @usableFromInline var pending: [Element] = []
    /// Index of the oldest element still pending (elements before it were taken).
    @usableFromInline var head = 0
    public var pendingBytes: Int { queuedBytes }
    @usableFromInline var queuedBytes = 0
    /// Changes dropped because a newer change of the same key superseded them.
    public private(set) var conflatedCount = 0
    public var overflowed: Bool { cutOff }
    @usableFromInline var cutOff = false
    /// Conflate again only once the queue has doubled since the last pass (amortised O(1)).
    @usableFromInline var nextConflation: Int

    public init(limits: Limits) {
        self.limits = limits
        self.nextConflation = limits.conflateBytes
    }

    @inlinable public var isEmpty: Bool { head == pending.count }
    @inlinable public var count: Int { pending.count - head }

    @inlinable public mutating func append(_ element: Element) -> AppendResult {
        if cutOff { return .dropped }
        let wasEmpty = isEmpty
        pending.append(element)
        queuedBytes += element.byteCost
        if conflates && queuedBytes > nextConflation {
            conflate()
            nextConflation = max(limits.conflateBytes, queuedBytes * 2)
        }
        if conflates && queuedBytes > limits.maxBytes {
            conflate()  // always before giving up on a subscriber, whatever the doubling guard says
        }
        if queuedBytes > limits.maxBytes && count > 1 {
            cutOff = true
            pending.removeAll()
            head = 0
            queuedBytes = 0
            return .overflow
        }
        return wasEmpty ? .wake : .queued
    }

    /// Keeps the newest element of each key (and every element without one), in queue order.
    @usableFromInline mutating func conflate() {
        var seen = Set<[UInt8]>()
        var kept: [Element] = []
        for element in pending[head...].reversed() {
            if let key = element.conflationKey, !seen.insert(key).inserted { continue }
            kept.append(element)
        }
        conflatedCount += count - kept.count
        pending = kept.reversed()
        head = 0
        queuedBytes = pending.reduce(0) { $0 + $1.byteCost }
    }

    /// Takes up to `maxBytes` worth of elements (at least one, if any), oldest first.
    @inlinable public mutating func take(maxBytes: Int) -> [Element] {
        var taken: [Element] = []
        var bytes = 0
        while head < pending.count, taken.isEmpty || bytes + pending[head].byteCost <= maxBytes {
            let first = pending[head]
            head += 1
            bytes += first.byteCost
            queuedBytes -= first.byteCost
            taken.append(first)
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 1024)
            head = 0
        } else if head > 4096 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
        if pendingBytes < limits.conflateBytes { nextConflation = limits.conflateBytes }
        return taken
    }
}

