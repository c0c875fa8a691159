import KVCore

/// Which subscribers watch which keys and which prefixes. Owned by `Keyspace`, whose notify path
/// is the only caller of `publish`, so pushes for one key leave in the order the changes were
/// applied.
struct ChangeFeed: Sendable {
    private struct Watchers: Sendable {
        var byID: [ObjectIdentifier: any ChangeSubscriber] = [:]
    }

    private var watchers: [[UInt8]: Watchers] = [:]
    private var prefixes = PrefixWatchers()
    /// Number of (key, subscriber) pairs.
    private(set) var subscriptionCount = 0

    var keyCount: Int { watchers.count }
    var prefixCount: Int { prefixes.count }
    var prefixSubscriptionCount: Int { prefixes.subscriptionCount }
    var isEmpty: Bool { watchers.isEmpty && prefixes.isEmpty }

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

    /// Watches every key that starts with `prefix`; its changes are pushed naming `pattern`.
    /// Returns false when `subscriber` already watched `prefix`.
    mutating func subscribe(prefix: [UInt8], pattern: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        prefixes.add(prefix, pattern: pattern, subscriber)
    }

    /// Returns false when `subscriber` did not watch `prefix`.
    mutating func unsubscribe(prefix: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        prefixes.remove(prefix, subscriber)
    }

    func publish(_ event: ChangeEvent) {
        if !watchers.isEmpty, let w = watchers[event.entry.keyBytes] {
            let push = ChangePush(event)
            for subscriber in w.byID.values { subscriber.deliver(push) }
        }
        guard !prefixes.isEmpty else { return }
        event.entry.withKey { key in
            prefixes.forEachMatch(key) { watch in
                for (subscriber, pattern) in watch.byID.values { subscriber.deliver(ChangePush(event, pattern: pattern)) }
            }
        }
    }
}

/// The prefix subscriptions, found for a changed key in one pass over the key's bytes: for
/// each distinct prefix length, a hash of the key's first bytes (carried from one length to
/// the next, never restarted) is looked up. A write costs at most the key's length in hashing
/// and one lookup per distinct length, however many prefixes are watched, instead of every
/// pattern matched against every key. Swift's `Hasher` is seeded per process, so nobody can
/// choose prefixes that collide.
struct PrefixWatchers: Sendable {
    struct Watch: Sendable {
        let prefix: [UInt8]
        /// Each subscriber, with the pattern it wrote.
        var byID: [ObjectIdentifier: (subscriber: any ChangeSubscriber, pattern: [UInt8])] = [:]
    }

    /// Hash of a prefix → the watched prefixes with that hash (nearly always one).
    private var byHash: [Int: [Watch]] = [:]
    /// The distinct lengths of the watched prefixes, shortest first, with how many prefixes have each.
    private var lengths: [Int] = []
    private var prefixesOfLength: [Int: Int] = [:]
    /// How many watched prefixes start with each byte: a key whose first byte starts none (and
    /// no empty prefix is watched) is done without hashing anything, the common case of keys
    /// far from every watched prefix.
    private var prefixesStartingWith = [Int](repeating: 0, count: 256)
    private(set) var count = 0
    private(set) var subscriptionCount = 0

    var isEmpty: Bool { count == 0 }

    /// The hash `forEachMatch` computes for a key's first `prefix.count` bytes.
    static func hash<Bytes: Sequence<UInt8>>(_ prefix: Bytes) -> Int {
        var hasher = Hasher()
        for byte in prefix { hasher.combine(byte) }
        return hasher.finalize()
    }

    mutating func add(_ prefix: [UInt8], pattern: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        let hash = Self.hash(prefix)
        var bucket = byHash[hash] ?? []
        let index = bucket.firstIndex { $0.prefix == prefix } ?? {
            bucket.append(Watch(prefix: prefix))
            count += 1
            if let first = prefix.first { prefixesStartingWith[Int(first)] += 1 }
            prefixesOfLength[prefix.count, default: 0] += 1
            if prefixesOfLength[prefix.count] == 1 { lengths.insert(prefix.count, at: lengths.firstIndex { $0 > prefix.count } ?? lengths.endIndex) }
            return bucket.count - 1
        }()
        let added = bucket[index].byID.updateValue((subscriber, pattern), forKey: ObjectIdentifier(subscriber)) == nil
        if added { subscriptionCount += 1 }
        byHash[hash] = bucket
        return added
    }

    mutating func remove(_ prefix: [UInt8], _ subscriber: any ChangeSubscriber) -> Bool {
        let hash = Self.hash(prefix)
        guard var bucket = byHash[hash], let index = bucket.firstIndex(where: { $0.prefix == prefix }),
              bucket[index].byID.removeValue(forKey: ObjectIdentifier(subscriber)) != nil
        else { return false }
        subscriptionCount -= 1
        if bucket[index].byID.isEmpty {
            bucket.remove(at: index)
            count -= 1
            if let first = prefix.first { prefixesStartingWith[Int(first)] -= 1 }
            prefixesOfLength[prefix.count, default: 1] -= 1
            if prefixesOfLength[prefix.count] == 0 {
                prefixesOfLength[prefix.count] = nil
                lengths.removeAll { $0 == prefix.count }
            }
        }
        byHash[hash] = bucket.isEmpty ? nil : bucket
        return true
    }

    /// Calls `body` with each watched prefix `key` starts with.
    func forEachMatch(_ key: UnsafeRawBufferPointer, _ body: (Watch) -> Void) {
        var hasher = Hasher()
        var hashed = 0
        for length in lengths {
            guard length <= key.count else { break }
            if length > 0, prefixesStartingWith[Int(key[0])] == 0 { break }  // no longer prefix can start it either
            while hashed < length {
                hasher.combine(key[hashed])
                hashed += 1
            }
            let copy = hasher
            guard let bucket = byHash[copy.finalize()] else { continue }
            for watch in bucket where watch.prefix.count == length && watch.prefix.elementsEqual(key[0..<length]) { body(watch) }
        }
    }
}
