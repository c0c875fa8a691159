import Testing
@testable import KVStore

@Suite("Keys in order (no sockets)")
struct SortedKeysTests {
    private func keys(_ sorted: SortedKeys, after: [UInt8]? = nil) -> [[UInt8]] {
        var listed: [[UInt8]] = []
        if let after {
            after.withUnsafeBytes { a in sorted.forEach(from: a) { listed.append(Array($0)); return true } }
        } else {
            sorted.forEach(from: nil) { listed.append(Array($0)); return true }
        }
        return listed
    }

    /// Every chunk's kept key count is what it holds, and none holds more than `maxRecords`.
    private func expectChunksWithin(_ sorted: SortedKeys, maxRecords: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let counts = sorted.recordCounts
        #expect(counts.kept == counts.read, sourceLocation: sourceLocation)
        #expect(counts.kept.allSatisfy { $0 <= maxRecords }, "largest chunk: \(counts.kept.max() ?? 0) keys", sourceLocation: sourceLocation)
    }

    @Test("30,000 random inserts and removes across chunk splits (by bytes and by keys) and emptied chunks: always bytewise order, each key once, from any point",
          arguments: [(64, 64), (2048, 8)])
    func randomAgainstSorted(chunkBytes: Int, maxRecords: Int) {
        var sorted = SortedKeys(chunkBytes: chunkBytes, maxRecords: maxRecords)
        var reference = Set<[UInt8]>()
        var generator = SystemRandomNumberGenerator()
        for step in 0..<30_000 {
            // Keys over a small alphabet: shared prefixes, the empty key, 0xff and 0x00 bytes, and
            // now and then a long one (longer than a chunk).
            var key = (0..<Int.random(in: 0...6, using: &generator)).map { _ in UInt8.random(in: 0x61...0x64, using: &generator) }
            if step % 7 == 0 { key.append(0xff) }
            if step % 5 == 0 { key.append(0x00) }  // equal to a shorter key in the search's 8-byte prefix
            if step % 1000 == 0 { key += [UInt8](repeating: 0x62, count: 300) }
            let insert = reference.count < 200 || Bool.random(using: &generator)
            if insert && !reference.contains(key) {
                key.withUnsafeBytes { sorted.insert($0) }
                reference.insert(key)
            } else if !insert {
                key.withUnsafeBytes { sorted.remove($0) }
                reference.remove(key)
            }
        }
        let expected = reference.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(keys(sorted) == expected)
        #expect(sorted.count == reference.count)
        expectChunksWithin(sorted, maxRecords: maxRecords)
        for start in [[], [0x61], [0x62, 0x63], [0xff], [0x64, 0x64, 0x64, 0x64, 0x64, 0x64, 0x64]] as [[UInt8]] {
            #expect(keys(sorted, after: start) == expected.filter { start.lexicographicallyPrecedes($0) }, "after \(start)")
        }
        // Everything removed: nothing left, in any chunk.
        for key in expected { key.withUnsafeBytes { sorted.remove($0) } }
        #expect(keys(sorted).isEmpty && sorted.count == 0 && sorted.encodedBytes == 0)
    }

    @Test("an order built in one pass from sorted keys (a load) lists them all, and takes inserts and removes as one built key by key",
          arguments: [(64, 64), (1024, 8)])
    func builtThenChanged(chunkBytes: Int, maxRecords: Int) {
        var generator = SystemRandomNumberGenerator()
        func randomKey() -> [UInt8] {
            (0..<Int.random(in: 0...8, using: &generator)).map { _ in UInt8.random(in: 0x61...0x64, using: &generator) }
        }
        var reference = Set<[UInt8]>()
        for _ in 0..<3_000 { reference.insert(randomKey()) }
        var builder = SortedKeys.Builder(chunkBytes: chunkBytes, maxRecords: maxRecords)
        for key in reference.sorted(by: { $0.lexicographicallyPrecedes($1) }) { key.withUnsafeBytes { builder.append($0) } }
        var sorted = builder.keys
        #expect(keys(sorted) == reference.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(sorted.count == reference.count)
        expectChunksWithin(sorted, maxRecords: maxRecords)
        for _ in 0..<6_000 {
            let key = randomKey()
            if Bool.random(using: &generator), !reference.contains(key) {
                key.withUnsafeBytes { sorted.insert($0) }
                reference.insert(key)
            } else {
                key.withUnsafeBytes { sorted.remove($0) }
                reference.remove(key)
            }
        }
        #expect(keys(sorted) == reference.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(sorted.count == reference.count)
    }

    @Test("keys added in order that differ in their last bytes (a bulk load) are read at most a chunk's key limit at a time")
    func inOrderKeysBounded() {
        var sorted = SortedKeys()
        let added = (0..<20_000).map { Array("key:\(String(1_000_000_000_000 + $0).dropFirst())".utf8) }
        for key in added { key.withUnsafeBytes { sorted.insert($0) } }
        // 3 bytes a key: by bytes alone a 1 KiB chunk would hold 340 of them.
        expectChunksWithin(sorted, maxRecords: SortedKeys.defaultMaxRecords)
        #expect(sorted.recordCounts.kept.count >= 20_000 / SortedKeys.defaultMaxRecords)
        #expect(keys(sorted) == added)
    }

    @Test("keys that differ only past 8 bytes, or only by trailing zero bytes, are found in their chunk")
    func searchPastThePrefix() {
        var sorted = SortedKeys(chunkBytes: 64, maxRecords: 4)
        var added: [[UInt8]] = []
        for i in 0..<500 {
            added.append(Array("longprefix/\(i)".utf8))
            added.append(Array("ab".utf8) + [UInt8](repeating: 0, count: i % 9))
        }
        let unique = Array(Set(added))
        for key in unique.shuffled() { key.withUnsafeBytes { sorted.insert($0) } }
        #expect(keys(sorted) == unique.sorted { $0.lexicographicallyPrecedes($1) })
        let removed = Set(unique.shuffled().prefix(300))
        for key in removed { key.withUnsafeBytes { sorted.remove($0) } }
        #expect(keys(sorted) == unique.filter { !removed.contains($0) }.sorted { $0.lexicographicallyPrecedes($1) })
        expectChunksWithin(sorted, maxRecords: 4)
    }

    @Test("keys of one hierarchy take a few bytes each")
    func frontCoding() {
        var sorted = SortedKeys()
        for i in 0..<10_000 { Array("app/user/\(100_000 + i)/profile".utf8).withUnsafeBytes { sorted.insert($0) } }
        // 26-byte keys: the shared part is not stored again.
        #expect(sorted.encodedBytes < 10_000 * 14, "\(sorted.encodedBytes) bytes")
        #expect(keys(sorted).count == 10_000)
    }
}
