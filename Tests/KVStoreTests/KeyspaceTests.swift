import KVCore
import Testing
@testable import KVStore

@Suite("Keyspace reads and writes")
struct KeyspaceWriteTests {
    @Test("a written value is read back; every write takes the next revision")
    func setGet() throws {
        var ks = Keyspace(clock: ManualClock())
        _ = ks.set("a", "1")
        _ = ks.set("b", "2")
        _ = ks.set("a", "1")  // an equal value is still a change
        #expect(ks.get("a") == "1")
        #expect(ks.get("missing") == nil)
        #expect(ks.revision == 3)
        #expect(ks.count == 2)
        let entry = try #require(Array("a".utf8).withUnsafeBytes { ks.lookup($0) })
        #expect(entry.revision == 3)
    }

    @Test("deleting an existing key is a change; deleting a missing key is not")
    func delete() {
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: ManualClock())
        ks.subscribe("a", feed)
        _ = ks.set("a", "1")
        #expect(ks.delete("a") == true)
        #expect(ks.delete("a") == false)
        #expect(ks.get("a") == nil)
        #expect(ks.revision == 2)
        #expect(feed.summary == ["set a=1 @1", "deleted a @2"])
    }

    @Test("NX writes only absent keys, XX only present ones")
    func conditions() {
        var ks = Keyspace(clock: ManualClock())
        #expect(!ks.set("a", "1", condition: .ifPresent).applied)
        #expect(ks.get("a") == nil)
        #expect(ks.set("a", "1", condition: .ifAbsent).applied)
        #expect(!ks.set("a", "2", condition: .ifAbsent).applied)
        #expect(ks.get("a") == "1")
        let outcome = ks.set("a", "3", condition: .ifPresent)
        #expect(outcome.applied)
        #expect(outcome.previous.map { String(decoding: $0.valueBytes, as: UTF8.self) } == "1")
        #expect(ks.revision == 2)
    }

    @Test("keys and values are arbitrary bytes of any size")
    func bytes() throws {
        var ks = Keyspace(clock: ManualClock())
        let key: [UInt8] = [0, 255, 13, 10]
        let value = [UInt8](repeating: 7, count: 3 << 20)
        _ = key.withUnsafeBytes { k in value.withUnsafeBytes { v in ks.set(k, value: v) } }
        let entry = try #require(key.withUnsafeBytes { ks.lookup($0) })
        #expect(entry.keyBytes == key)
        #expect(entry.valueBytes == value)
        #expect(ks.datasetBytes == key.count + value.count)
    }
}

@Suite("Keyspace expiry")
struct KeyspaceExpiryTests {
    @Test("a key is gone once its TTL elapses, even before the timer runs")
    func lazyExpiry() {
        let clock = ManualClock()
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: clock)
        ks.subscribe("a", feed)
        _ = ks.set("a", "1", expiry: .after(milliseconds: 100))
        clock.advance(milliseconds: 99)
        #expect(ks.get("a") == "1")
        clock.advance(milliseconds: 1)
        #expect(ks.get("a") == nil)
        #expect(feed.summary == ["set a=1 @1", "expired a @2"])
        #expect(ks.stats.expiredKeys == 1)
    }

    @Test("active expiry removes keys at their deadlines, in deadline order, and publishes each")
    func activeExpiry() {
        let clock = ManualClock()
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: clock)
        for key in ["a", "b", "c"] { ks.subscribe(key, feed) }
        _ = ks.set("c", "3", expiry: .after(milliseconds: 30))
        _ = ks.set("a", "1", expiry: .after(milliseconds: 10))
        _ = ks.set("b", "2", expiry: .after(milliseconds: 20))
        #expect(ks.nextDeadline() == clock.monotonicNanoseconds() + 10_000_000)
        #expect(ks.expireDue() == 0)
        clock.advance(milliseconds: 20)
        #expect(ks.expireDue() == 2)
        #expect(ks.count == 1)
        clock.advance(milliseconds: 10)
        #expect(ks.expireDue(limit: 1) == 1)
        #expect(ks.nextDeadline() == nil)
        #expect(Array(feed.summary.suffix(3)) == ["expired a @4", "expired b @5", "expired c @6"])
    }

    @Test("a plain write clears the TTL; KEEPTTL keeps it; a new TTL replaces it")
    func ttlRule() throws {
        let clock = ManualClock()
        var ks = Keyspace(clock: clock)
        _ = ks.set("a", "1", expiry: .after(milliseconds: 100))
        _ = ks.set("a", "2")
        clock.advance(milliseconds: 200)
        #expect(ks.expireDue() == 0)
        #expect(ks.get("a") == "2")

        _ = ks.set("b", "1", expiry: .after(milliseconds: 100))
        _ = ks.set("b", "2", expiry: .keep)
        let entry = try #require(Array("b".utf8).withUnsafeBytes { ks.lookup($0) })
        #expect(ks.remainingMilliseconds(of: entry) == 100)
        clock.advance(milliseconds: 100)
        #expect(ks.expireDue() == 1)
        #expect(ks.get("b") == nil)

        _ = ks.set("c", "1", expiry: .after(milliseconds: 100))
        _ = ks.set("c", "2", expiry: .after(milliseconds: 1000))
        clock.advance(milliseconds: 500)
        #expect(ks.expireDue() == 0)
        #expect(ks.get("c") == "2")
    }

    @Test("an absolute deadline in the past expires the key at once")
    func pastDeadline() {
        let clock = ManualClock()
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: clock)
        ks.subscribe("a", feed)
        _ = ks.set("a", "1")
        _ = ks.set("a", "2", expiry: .atUnixMilliseconds(clock.unixMilliseconds() - 1))
        #expect(ks.get("a") == nil)
        _ = ks.set("b", "2", expiry: .atUnixMilliseconds(clock.unixMilliseconds()))
        #expect(ks.get("b") == nil)
        _ = ks.set("c", "3", expiry: .atUnixMilliseconds(clock.unixMilliseconds() + 50))
        clock.advance(milliseconds: 50)
        #expect(ks.get("c") == nil)
        #expect(feed.summary == ["set a=1 @1", "expired a @2"])
    }

    /// Issue 15, finding 5: `SET k v EXAT 20000000000` overflowed the nanosecond deadline and
    /// ended kv-stored on an arithmetic trap.
    @Test("deadlines far in the future, written or read back from the log, are capped at 100 years instead of overflowing")
    func farDeadlines() throws {
        let clock = ManualClock()
        var ks = Keyspace(clock: clock)
        let hundredYears = TTL.maxMilliseconds
        for (key, at) in [("exat", Int64(20_000_000_000) * 1000), ("max", Int64.max), ("year9999", 253_402_300_799_000)] {
            _ = ks.set(key, "1", expiry: .atUnixMilliseconds(at))
            let entry = try #require(Array(key.utf8).withUnsafeBytes { ks.lookup($0) })
            #expect(ks.remainingMilliseconds(of: entry) == hundredYears, "\(key)")
        }
        _ = ks.set("min", "1", expiry: .atUnixMilliseconds(Int64.min))
        #expect(ks.get("min") == nil, "a deadline long past expires the key")
        Array("restored".utf8).withUnsafeBytes { k in
            Array("1".utf8).withUnsafeBytes { v in ks.restoreSet(k, value: v, revision: 100, deadlineUnixMilliseconds: Int64.max) }
        }
        let restored = try #require(Array("restored".utf8).withUnsafeBytes { ks.lookup($0) })
        #expect(ks.remainingMilliseconds(of: restored) == hundredYears)
        Array("old".utf8).withUnsafeBytes { k in
            Array("1".utf8).withUnsafeBytes { v in ks.restoreSet(k, value: v, revision: 101, deadlineUnixMilliseconds: Int64.min) }
        }
        #expect(ks.get("old") == nil)
    }

    @Test("a key that expires and is deleted at about the same moment yields one event")
    func expireThenDelete() {
        let clock = ManualClock()
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: clock)
        ks.subscribe("a", feed)
        _ = ks.set("a", "1", expiry: .after(milliseconds: 5))
        clock.advance(milliseconds: 5)
        #expect(ks.delete("a") == false)
        #expect(ks.expireDue() == 0)
        #expect(feed.summary == ["set a=1 @1", "expired a @2"])
    }

    @Test("PERSIST clears the TTL without a change")
    func persist() {
        let clock = ManualClock()
        let feed = RecordingSubscriber()
        var ks = Keyspace(clock: clock)
        ks.subscribe("a", feed)
        _ = ks.set("a", "1", expiry: .after(milliseconds: 5))
        #expect(ks.persist("a") == true)
        #expect(ks.persist("a") == false)
        #expect(ks.persist("missing") == false)
        clock.advance(milliseconds: 10)
        #expect(ks.expireDue() == 0)
        #expect(ks.get("a") == "1")
        #expect(ks.expiringCount == 0)
        #expect(feed.summary == ["set a=1 @1"])
    }

    @Test("rewriting a key with a long TTL over and over does not grow the expiry queue without bound")
    func staleItemsAreSwept() {
        var ks = Keyspace(clock: ManualClock())
        for i in 0..<100_000 { _ = ks.set("a", String(i), expiry: .after(milliseconds: TTL.maxMilliseconds)) }
        #expect(ks.expiringCount == 1)
        #expect(ks.count == 1)
        #expect(ks.nextDeadline() != nil)
    }
}

@Suite("Change feed")
struct ChangeFeedTests {
    @Test("subscribers get only their keys' changes, in revision order, until they unsubscribe")
    func ordering() {
        let a = RecordingSubscriber(), b = RecordingSubscriber()
        var ks = Keyspace(clock: ManualClock())
        ks.subscribe("x", a)
        ks.subscribe("x", b)
        ks.subscribe("y", b)
        for i in 0..<200 { _ = ks.set(i % 2 == 0 ? "x" : "y", String(i)) }
        #expect(a.events.count == 100)
        #expect(a.events.map(\.revision) == a.events.map(\.revision).sorted())
        #expect(b.events.count == 200)
        #expect(ks.subscriptionCount == 3)
        ks.unsubscribe(Array("x".utf8), b)
        _ = ks.set("x", "last")
        #expect(a.events.count == 101)
        #expect(b.events.count == 200)
        #expect(ks.watchedKeyCount == 2)
    }
}

@Suite("Keyspace overwrites in place")
struct KeyspaceRewriteTests {
    // An entry replaced by a new one is still alive while the new one is allocated, so the
    // same allocation after an overwrite means the old one took the new value.

    @Test("an overwrite of an entry only the table holds reuses its allocation, with the new value, revision and TTL")
    func reused() {
        let clock = ManualClock()
        var ks = Keyspace(clock: clock)
        _ = ks.set("k", String(repeating: "a", count: 100), returningPrevious: false)
        let first = ks.allocation("k")
        let used = ks.usedMemoryBytes
        _ = ks.set("k", String(repeating: "b", count: 90), returningPrevious: false)
        let second = ks.allocation("k"), value = ks.get("k")
        let revision = Array("k".utf8).withUnsafeBytes { ks.lookup($0) }?.revision
        #expect(second == first && value == String(repeating: "b", count: 90) && revision == 2)
        #expect(ks.usedMemoryBytes == used - 10 + (1 + 90 + 64), "the data at its new size, and the change in the history")
        // Far smaller than the allocation: a new entry, so memory stays as accounted.
        _ = ks.set("k", "c", expiry: .after(milliseconds: 10), returningPrevious: false)
        let third = ks.allocation("k"), small = ks.get("k")
        #expect(third != first && small == "c")
        clock.advance(milliseconds: 11)
        let expired = ks.get("k")
        #expect(expired == nil, "the TTL of the write holds")
    }

    @Test("an entry held elsewhere is never written over: by a reader, a subscriber's queue, SET … GET, the expiry queue")
    func heldElsewhere() {
        var ks = Keyspace(clock: ManualClock())
        _ = ks.set("k", "one", returningPrevious: false)
        // A reader between the lock and its reply.
        let held = Array("k".utf8).withUnsafeBytes { ks.lookup($0) }
        _ = ks.set("k", "two", returningPrevious: false)
        #expect(held.map { String(decoding: $0.valueBytes, as: UTF8.self) } == "one" && held?.revision == 1)
        // A subscriber's queue.
        let subscriber = RecordingSubscriber()
        ks.subscribe("k", subscriber)
        _ = ks.set("k", "333", returningPrevious: false)
        _ = ks.set("k", "444", returningPrevious: false)
        #expect(subscriber.summary == ["set k=333 @3", "set k=444 @4"])
        // SET … GET keeps the previous entry for its reply.
        _ = ks.set("k2", "old", returningPrevious: false)
        let replaced = ks.set("k2", "new", returningPrevious: true)
        #expect(replaced.previous.map { String(decoding: $0.valueBytes, as: UTF8.self) } == "old")
        // The expiry queue.
        _ = ks.set("k3", "ttl", expiry: .after(milliseconds: 1000), returningPrevious: false)
        let timed = ks.allocation("k3")
        _ = ks.set("k3", "now", returningPrevious: false)
        let after = ks.allocation("k3"), value = ks.get("k3")
        #expect(after != timed && value == "now")
    }
}

@Suite("Keyspace change history")
struct ChangeHistoryTests {
    func revisions(_ ks: Keyspace, _ key: String, after since: UInt64) -> [UInt64]? {
        Array(key.utf8).withUnsafeBytes { ks.changes(of: $0, after: since) }?.map(\.revision)
    }

    @Test("the history keeps the newest changes within its byte budget, and knows how far back it reaches")
    func byteBudget() {
        // Each change costs its key and value plus 64 bytes: 1 + 100 + 64 = 165 here.
        var ks = Keyspace(clock: ManualClock(), history: HistoryLimits(maxChanges: 1000, maxBytes: 500))
        let value = String(repeating: "v", count: 100)
        for _ in 0..<5 { _ = ks.set("k", value) }
        #expect(ks.historyFigures.changes == 3 && ks.historyFigures.bytes == 495 && ks.historyFigures.floor == 2)
        #expect(revisions(ks, "k", after: 2) == [3, 4, 5])
        #expect(revisions(ks, "k", after: 1) == nil, "revision 2 has left the history")
        // A single change over the budget is still kept: a resume right before it can replay it.
        _ = ks.set("k", String(repeating: "w", count: 1000))
        #expect(ks.historyFigures.changes == 1 && revisions(ks, "k", after: 5) == [6])
    }

    @Test("changes loaded from a log are not in the history: resuming from before them is a reset")
    func restored() {
        var ks = Keyspace(clock: ManualClock())
        Array("k".utf8).withUnsafeBytes { k in Array("1".utf8).withUnsafeBytes { v in ks.restoreSet(k, value: v, revision: 7, deadlineUnixMilliseconds: nil) } }
        #expect(revisions(ks, "k", after: 6) == nil)
        #expect(revisions(ks, "k", after: 7) == [])
        _ = ks.set("k", "2")
        #expect(revisions(ks, "k", after: 7) == [8])
    }

    @Test("the history's copies replay every change exactly, across chunks, values of every size and drops of the oldest")
    func copiesAcrossChunks() {
        // Sizes around the chunk's quarter (own chunk) and whole (bigger than a chunk), and
        // small ones that share chunks; limits that drop by count and by bytes in turn.
        let chunk = ChangeHistory.chunkBytes
        let sizes = [0, 1, 40, chunk / 4, chunk / 4 + 1, chunk - 3, chunk + 7, 300, 2 * chunk]
        var ks = Keyspace(clock: ManualClock(), history: HistoryLimits(maxChanges: 50, maxBytes: 3 * chunk))
        var model: [(revision: UInt64, key: String, kind: ChangeKind, value: String)] = []
        for i in 0..<600 {
            let key = "k\(i % 7)", prefixKey = i % 7 < 3
            let name = prefixKey ? "p/" + key : key
            if i % 11 == 10, ks.delete(name) {
                model.append((ks.revision, name, .deleted, ""))
            } else {
                let value = String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: sizes[i % sizes.count])
                _ = ks.set(name, value)
                model.append((ks.revision, name, .set, value))
            }
            let floor = ks.historyFigures.floor
            let kept = model.filter { $0.revision > floor }
            #expect(ks.historyFigures.changes == kept.count)
            #expect(ks.historyFigures.bytes == kept.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 64 })
            // Every few writes, every key's replay from the floor and from halfway is the model's.
            guard i % 5 == 0 else { continue }
            for since in [floor, (floor + ks.revision) / 2] {
                for name in Set(model.map(\.key)) {
                    let replay = Array(name.utf8).withUnsafeBytes { ks.changes(of: $0, after: since) }
                    let expected = kept.filter { $0.key == name && $0.revision > since }
                    #expect(replay?.map(\.revision) == expected.map(\.revision))
                    #expect(replay?.map(\.kind) == expected.map(\.kind))
                    #expect(replay?.map { String(decoding: $0.entry.valueBytes, as: UTF8.self) } == expected.map(\.value))
                }
                let prefixed = Array("p/".utf8).withUnsafeBytes { ks.changes(withPrefix: $0, after: since) }
                #expect(prefixed?.map(\.revision) == kept.filter { $0.key.hasPrefix("p/") && $0.revision > since }.map(\.revision))
            }
        }
        #expect(ks.historyFigures.floor > 100, "the oldest changes were dropped all along")
    }

    @Test("with no history, only a subscriber already up to date can resume")
    func none() {
        var ks = Keyspace(clock: ManualClock(), history: HistoryLimits(maxChanges: 0, maxBytes: 0))
        _ = ks.set("k", "1")
        #expect(revisions(ks, "k", after: 0) == nil && revisions(ks, "k", after: 1) == [])
    }
}

@Suite("Keyspace memory limit")
struct KeyspaceMemoryTests {
    @Test("past the memory limit, writes that grow the data are refused and change nothing; shrinking writes and deletes go through; nothing is evicted")
    func maxMemory() throws {
        var ks = Keyspace(clock: ManualClock(), history: HistoryLimits(maxChanges: 0, maxBytes: 0))
        let big = String(repeating: "v", count: 1000)
        _ = ks.set("a", big)
        ks.maxMemoryBytes = ks.usedMemoryBytes + 1500
        let first = ks.set("b", big)
        #expect(first.applied)
        let refused = ks.set("c", big)
        #expect(!refused.applied && refused.overMemory)
        #expect(ks.get("c") == nil && ks.get("a") == big && ks.get("b") == big, "nothing stored is lost")
        let revision = ks.revision
        let larger = ks.set("a", big + big)
        #expect(!larger.applied, "a larger value for an existing key grows the data too")
        #expect(ks.revision == revision, "a refused write is no change")
        let smaller = ks.set("a", "small")
        #expect(smaller.applied, "a smaller value frees memory")
        let deleted = ks.delete("b")
        #expect(deleted)
        let again = ks.set("c", big)
        #expect(again.applied, "room again after the delete")
    }
}

@Suite("Keyspace listing")
struct KeyspaceListingTests {
    private func listed(_ ks: Keyspace, _ prefix: String, after: String? = nil, limit: Int = 100) -> ([String], String?) {
        let listing = Array(prefix.utf8).withUnsafeBytes { p in
            after.map { Array($0.utf8) }.withUnsafeBytesIfPresent { a in ks.list(prefix: p, after: a, limit: limit, budget: limit * 10) }
        }
        return (listing.entries.map { String(decoding: $0.entry.keyBytes, as: UTF8.self) }, listing.next.map { String(decoding: $0, as: UTF8.self) })
    }

    @Test("keys restored from the log, overwritten, deleted and expired: the listing follows the table")
    func followsTheTable() {
        let clock = ManualClock()
        var ks = Keyspace(clock: clock)
        for key in ["k/3", "k/1", "k/2"] {
            Array(key.utf8).withUnsafeBytes { k in Array("v".utf8).withUnsafeBytes { ks.restoreSet(k, value: $0, revision: 1, deadlineUnixMilliseconds: nil) } }
        }
        _ = ks.set("k/2", "again")
        _ = ks.set("k/4", "soon", expiry: .after(milliseconds: 5))
        _ = ks.set("other", "x")
        _ = ks.delete("k/1")
        #expect(listed(ks, "k/") == (["k/2", "k/3", "k/4"], nil))
        clock.advance(milliseconds: 10)
        #expect(listed(ks, "k/") == (["k/2", "k/3"], nil), "expired: not listed even before the timer removes it")
        _ = ks.expireDue()
        #expect(listed(ks, "k/", limit: 1) == (["k/2"], "k/2"))
        #expect(listed(ks, "k/", after: "k/2", limit: 1) == (["k/3"], nil), "a full page with no key after it under the prefix ends the listing")
        #expect(listed(ks, "k/", after: "k/3") == ([], nil))
        #expect(listed(ks, "k/", after: "a") == (["k/2", "k/3"], nil), "an AFTER before the prefix starts at the prefix")
    }
}
