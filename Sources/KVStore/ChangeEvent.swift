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

/// Receives change events of the keys it subscribed to.
///
/// `deliver` is called by the keyspace's owner while it holds the keyspace, in revision order,
/// so it must only enqueue (see `SubscriberOutbox`), never block or call back into the store.
public protocol ChangeSubscriber: AnyObject, Sendable {
    func deliver(_ event: ChangeEvent)
}
