import Testing
@testable import KVStore

@Suite("Key table")
struct KeyTableTests {
    @Test("random inserts, replacements and removals agree with a Dictionary model")
    func model() {
        var table = KeyTable()
        var model: [[UInt8]: UInt64] = [:]
        var rng = SystemRandomNumberGenerator()
        var revision: UInt64 = 0
        for _ in 0..<60_000 {
            let key = Array(String(Int.random(in: 0..<3000, using: &rng)).utf8)
            if Int.random(in: 0..<3, using: &rng) == 0 {
                let removed = key.withUnsafeBytes { table.remove($0) }
                #expect((removed?.revision) == model.removeValue(forKey: key))
            } else {
                revision += 1
                let entry = key.withUnsafeBytes { k in [UInt8]().withUnsafeBytes { Entry.make(key: k, value: $0, revision: revision, deadline: 0) } }
                let old = table.upsert(entry)
                #expect(old?.revision == model.updateValue(revision, forKey: key))
            }
        }
        #expect(table.count == model.count)
        for (key, revision) in model {
            #expect(key.withUnsafeBytes { table.find($0) }?.revision == revision)
        }
        var seen = 0
        table.forEach { _ in seen += 1 }
        #expect(seen == model.count)
        for key in model.keys { _ = key.withUnsafeBytes { table.remove($0) } }
        #expect(table.count == 0)
    }

    @Test("prefetch hints read slots as bare references and change nothing, on full, sparse and wrapping probes")
    func prefetchHints() {
        // prefetchEntry reads a slot's reference as a word, 0 for an empty slot.
        #expect(KeyTable.slotIsOneReference)
        var table = KeyTable()
        var entries: [Entry] = []
        for i in 0..<5_000 {
            let entry = Array("key:\(i)".utf8).withUnsafeBytes { k in Array("v".utf8).withUnsafeBytes { Entry.make(key: k, value: $0, revision: UInt64(i + 1), deadline: 0) } }
            table.upsert(entry)
            entries.append(entry)
        }
        // Hashes of present keys, of absent keys, and every home slot (the probe wraps at the end).
        let hashes = entries.map { entry in entry.withKey { KeyTable.hash($0) } } + (0..<UInt32(20_000)).map { $0 &* 2_654_435_761 }
        for hash in hashes {
            table.prefetchSlot(hash: hash)
            table.prefetchEntry(hash: hash)
        }
        #expect(table.count == 5_000)
        for entry in entries {
            #expect(entry.withKey { table.find($0) }.map { $0 === entry } == true)
        }
    }
}
