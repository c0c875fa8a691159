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

    @Test("30,000 random inserts and removes across chunk splits and emptied chunks: always bytewise order, each key once, from any point", arguments: [64, 2048])
    func randomAgainstSorted(chunkBytes: Int) {
        var sorted = SortedKeys(chunkBytes: chunkBytes)
        var reference = Set<[UInt8]>()
        var generator = SystemRandomNumberGenerator()
        for step in 0..<30_000 {
            // Keys over a small alphabet: shared prefixes, the empty key, 0xff bytes, and now and
            // then a long one (longer than a chunk).
            var key = (0..<Int.random(in: 0...6, using: &generator)).map { _ in UInt8.random(in: 0x61...0x64, using: &generator) }
            if step % 7 == 0 { key.append(0xff) }
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
        for start in [[], [0x61], [0x62, 0x63], [0xff], [0x64, 0x64, 0x64, 0x64, 0x64, 0x64, 0x64]] as [[UInt8]] {
            #expect(keys(sorted, after: start) == expected.filter { start.lexicographicallyPrecedes($0) }, "after \(start)")
        }
        // Everything removed: nothing left, in any chunk.
        for key in expected { key.withUnsafeBytes { sorted.remove($0) } }
        #expect(keys(sorted).isEmpty && sorted.count == 0 && sorted.encodedBytes == 0)
    }

    @Test("an order built in one pass from sorted keys (a load) lists them all, and takes inserts and removes as one built key by key", arguments: [64, 1024])
    func builtThenChanged(chunkBytes: Int) {
        var generator = SystemRandomNumberGenerator()
        func randomKey() -> [UInt8] {
            (0..<Int.random(in: 0...8, using: &generator)).map { _ in UInt8.random(in: 0x61...0x64, using: &generator) }
        }
        var reference = Set<[UInt8]>()
        for _ in 0..<3_000 { reference.insert(randomKey()) }
        var builder = SortedKeys.Builder(chunkBytes: chunkBytes)
        for key in reference.sorted(by: { $0.lexicographicallyPrecedes($1) }) { key.withUnsafeBytes { builder.append($0) } }
        var sorted = builder.keys
        #expect(keys(sorted) == reference.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(sorted.count == reference.count)
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

    @Test("keys of one hierarchy take a few bytes each")
    func frontCoding() {
        var sorted = SortedKeys()
        for i in 0..<10_000 { Array("app/user/\(100_000 + i)/profile".utf8).withUnsafeBytes { sorted.insert($0) } }
        // 26-byte keys: the shared part is not stored again.
        #expect(sorted.encodedBytes < 10_000 * 14, "\(sorted.encodedBytes) bytes")
        #expect(keys(sorted).count == 10_000)
    }
}
