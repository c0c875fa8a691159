import KVCore

/// Which subscribers watch which keys. Owned by `Keyspace`, whose notify path is the only caller
/// of `publish`, so pushes for one key leave in the order the changes were applied.
struct ChangeFeed: Sendable {
    private struct Watchers: Sendable {
        var byID: [ObjectIdentifier: any ChangeSubscriber] = [:]
    }

    private var watchers: [[UInt8]: Watchers] = [:]
    /// Number of (key, subscriber) pairs.
    private(set) var subscriptionCount = 0

    var keyCount: Int { watchers.count }
    var isEmpty: Bool { watchers.isEmpty }

    /// Returns false when `subscriber` already watched `key`.
    mutating func subscribe(key: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        let id = ObjectIdentifier(subscriber)
        let added = watchers[key, default: Watchers()].byID.updateValue(subscriber, forKey: id) == nil
        if added { subscriptionCount += 1 }
        return added
    }

    /// Returns false when `subscriber` did not watch `key`.
    mutating func unsubscribe(key: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        let id = ObjectIdentifier(subscriber)
        guard var w = watchers[key], w.byID.removeValue(forKey: id) != nil else { return false }
        watchers[key] = w.byID.isEmpty ? nil : w
        subscriptionCount -= 1
        return true
    }

    func publish(_ event: ChangeEvent) {
        guard !watchers.isEmpty, let w = watchers[event.entry.keyBytes] else { return }
        for subscriber in w.byID.values { subscriber.deliver(event) }
    }
}
