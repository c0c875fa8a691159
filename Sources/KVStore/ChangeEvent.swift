import KVCore

/// One change of one key, as the keyspace publishes it.
public struct ChangeEvent: Conflatable {
    public let kind: ChangeKind
    /// The global revision this change took.
    public let revision: UInt64
    /// The entry written (`set`) or removed (`deleted`, `expired`): it carries the key and,
    /// for `set`, the value, shared with the keyspace rather than copied.
    public let entry: Entry

    /// The bytes this event occupies in a subscriber's output buffer (the output-limit currency).
    public var byteCost: Int { entry.keyCount + (kind == .set ? entry.valueCount : 0) + 64 }

    /// Changes of one key supersede each other.
    public var conflationKey: [UInt8]? { entry.keyBytes }
}

/// A change as one subscription receives it: through its key (a `message` push), or through a
/// prefix pattern the key matched (a `pmessage` push naming the pattern).
public struct ChangePush: Conflatable {
    public let event: ChangeEvent
    /// The pattern as the subscriber wrote it, for a prefix subscription.
    public let pattern: [UInt8]?

    public init(_ event: ChangeEvent, pattern: [UInt8]? = nil) {
        self.event = event
        self.pattern = pattern
    }

    public var byteCost: Int { event.byteCost + (pattern?.count ?? 0) }

    /// Changes of one key through one subscription supersede each other. Made only when a
    /// slow subscriber's queue is conflated: a tag, the pattern's length and bytes, the key.
    public var conflationKey: [UInt8]? {
        guard let pattern else { return [0] + event.entry.keyBytes }
        let length = UInt32(truncatingIfNeeded: pattern.count)
        return [1, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + pattern + event.entry.keyBytes
    }
}

/// Receives change events of the keys and prefixes it subscribed to.
///
/// `deliver` is called by the keyspace's owner while it holds the keyspace, in revision order,
/// so it must only enqueue (see `SubscriberOutbox`), never block or call back into the store.
public protocol ChangeSubscriber: AnyObject, Sendable {
    func deliver(_ push: ChangePush)
}
