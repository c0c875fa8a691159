import KVCore

/// A connection's subscriptions, keys and prefixes, with how many are prefixes: the limit on
/// prefix subscriptions is checked on every prefix `subscribe`, and counting them by walking
/// the set cost up to one step per subscription (10,000 by default) each time.
struct TopicSet: Sequence {
    private var topics = Set<Topic<[UInt8]>>()
    private(set) var prefixCount = 0

    var count: Int { topics.count }

    func contains(_ topic: Topic<[UInt8]>) -> Bool { topics.contains(topic) }

    @discardableResult
    mutating func insert(_ topic: Topic<[UInt8]>) -> Bool {
        let inserted = topics.insert(topic).inserted
        if inserted && topic.isPrefix { prefixCount += 1 }
        return inserted
    }

    @discardableResult
    mutating func remove(_ topic: Topic<[UInt8]>) -> Topic<[UInt8]>? {
        let removed = topics.remove(topic)
        if removed != nil && topic.isPrefix { prefixCount -= 1 }
        return removed
    }

    mutating func removeAll() {
        topics.removeAll()
        prefixCount = 0
    }

    func makeIterator() -> Set<Topic<[UInt8]>>.Iterator { topics.makeIterator() }
}
