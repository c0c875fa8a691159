import KVCore
import Testing
@testable import KVStore

private func event(_ key: String, _ value: String, revision: UInt64) -> ChangeEvent {
    let entry = Array(key.utf8).withUnsafeBytes { k in Array(value.utf8).withUnsafeBytes { Entry.make(key: k, value: $0, revision: revision, deadline: 0) } }
    return ChangeEvent(kind: .set, revision: revision, entry: entry)
}

private func describe(_ events: [ChangeEvent]) -> [String] {
    events.map { "\(String(decoding: $0.entry.keyBytes, as: UTF8.self))@\($0.revision)" }
}

@Suite("Subscriber output limit")
struct ConflatingQueueTests {
    @Test("the first pending change wakes the connection; later ones queue behind it")
    func wake() {
        var outbox = ConflatingQueue<ChangeEvent>(limits: .init(conflateBytes: 1 << 20, maxBytes: 4 << 20))
        #expect(outbox.append(event("a", "1", revision: 1)) == .wake)
        #expect(outbox.append(event("a", "2", revision: 2)) == .queued)
        #expect(describe(outbox.take(maxBytes: 1 << 20)) == ["a@1", "a@2"])
        #expect(outbox.append(event("a", "3", revision: 3)) == .wake)
    }

    @Test("above the conflation threshold only the newest change of each key is kept")
    func conflation() {
        // Each event costs 64 + key + value bytes; the threshold is crossed by the fifth.
        var outbox = ConflatingQueue<ChangeEvent>(limits: .init(conflateBytes: 300, maxBytes: 10_000))
        let keys = ["a", "b", "a", "c", "a", "b"]
        for (i, key) in keys.enumerated() { _ = outbox.append(event(key, "v", revision: UInt64(i + 1))) }
        let delivered = describe(outbox.take(maxBytes: 1 << 20))
        // Per key the last change survives, and per key the order is the order of revisions.
        #expect(delivered.contains("a@5") && delivered.contains("b@6") && delivered.contains("c@4"))
        #expect(!delivered.contains("a@1") && !delivered.contains("a@3"))
        #expect(outbox.conflatedCount >= 2)
        #expect(!outbox.overflowed)
    }

    @Test("a queue still over the hard limit after conflation overflows and drops what follows")
    func overflow() {
        var outbox = ConflatingQueue<ChangeEvent>(limits: .init(conflateBytes: 200, maxBytes: 400))
        var results: [ConflatingQueue<ChangeEvent>.AppendResult] = []
        for i in 0..<10 { results.append(outbox.append(event("k\(i)", "v", revision: UInt64(i + 1)))) }
        #expect(results.contains(.overflow))
        #expect(results.last == .dropped)
        #expect(outbox.overflowed)
        #expect(outbox.isEmpty)
    }

    @Test("one change is never over the limit, however large its value")
    func oneLargeValue() {
        var outbox = ConflatingQueue<ChangeEvent>(limits: .init(conflateBytes: 100, maxBytes: 200))
        let big = String(repeating: "x", count: 10_000)
        #expect(outbox.append(event("k", big, revision: 1)) == .wake)
        #expect(outbox.append(event("k", big, revision: 2)) == .queued)  // conflated to the newest
        #expect(describe(outbox.take(maxBytes: 10)) == ["k@2"])
    }

    @Test("take hands out at most the requested bytes but always at least one change")
    func take() {
        var outbox = ConflatingQueue<ChangeEvent>(limits: .init())
        for i in 0..<5 { _ = outbox.append(event("k\(i)", "v", revision: UInt64(i + 1))) }
        #expect(outbox.take(maxBytes: 1).count == 1)
        #expect(outbox.take(maxBytes: 140).count == 2)
        #expect(outbox.take(maxBytes: 1 << 20).count == 2)
        #expect(outbox.take(maxBytes: 1 << 20).isEmpty)
    }
}

/// A minimal element: a key (or none) and a size.
private struct Item: Conflatable, Equatable {
    var name: String
    var key: String?
    var byteCost: Int
    var conflationKey: [UInt8]? { key.map { Array($0.utf8) } }
}

@Suite("Conflating queue with unkeyed elements")
struct UnkeyedConflationTests {
    @Test("elements without a key are never dropped by conflation, and keep their place")
    func unkeyedSurvive() {
        // The threshold is crossed by the fourth element, when "a2" supersedes "a1".
        var queue = ConflatingQueue<Item>(limits: .init(conflateBytes: 350, maxBytes: 10_000))
        let items = [
            Item(name: "reply1", key: nil, byteCost: 100), Item(name: "a1", key: "a", byteCost: 100),
            Item(name: "reply2", key: nil, byteCost: 100), Item(name: "a2", key: "a", byteCost: 100),
        ]
        for item in items { _ = queue.append(item) }
        #expect(queue.take(maxBytes: 1 << 20).map(\.name) == ["reply1", "reply2", "a2"])
        #expect(queue.conflatedCount == 1)
    }
}
