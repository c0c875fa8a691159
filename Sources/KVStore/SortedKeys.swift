#if canImport(Glibc)
import Glibc
#endif

/// Every key of the table in bytewise order (shorter first on a common prefix), for listing
/// keys by prefix, kept beside the hash table.
///
/// It holds keys, not entries: overwriting a key (most writes) does not touch it, and it keeps
/// no replaced value alive. Keys are front-coded in chunks of about `chunkBytes`: each key is
/// stored as the length it shares with the key before it and the bytes after that, so keys of
/// one hierarchy (`app/user/41`, `app/user/42`) take a few bytes each. A chunk's first key is
/// also kept whole, for the binary search that finds a key's chunk; within a chunk keys are
/// read in order. Adding or removing a key rewrites one chunk.
struct SortedKeys: Sendable {
    /// Each chunk's first key, whole.
    private var firsts: [[UInt8]] = []
    /// Each chunk's keys: per key, LEB128 shared length, LEB128 suffix length, suffix bytes.
    private var chunks: [[UInt8]] = []
    private let chunkBytes: Int
    private(set) var count = 0
    /// Bytes of the encoded chunks, for INFO.
    private(set) var encodedBytes = 0

    static let defaultChunkBytes = 1024

    init(chunkBytes: Int = SortedKeys.defaultChunkBytes) {
        self.chunkBytes = max(64, chunkBytes)
    }

    /// Memory held, estimated without walking the chunks: the encoded keys, and per chunk its
    /// array headers, its first key and spare room.
    var bytes: Int { encodedBytes + firsts.count * (96 + chunkBytes / 2) }

    /// One key of a chunk, as read in order.
    private struct Record {
        var start: Int
        var end: Int
    }

    /// Calls `body` with each key of `chunk` in order (the buffer is reused: copy to keep),
    /// and where its record lies; stops when `body` returns false.
    private func decode(_ chunk: Int, _ body: (UnsafeRawBufferPointer, Record) -> Bool) {
        var key = KeyScratch()
        defer { key.release() }
        forEachRecord(chunk) { shared, suffix, record in
            key.replace(after: shared, with: suffix)
            return body(key.bytes, record)
        }
    }

    /// Reads `chunk`'s records in order: each key's length shared with the key before it, the
    /// bytes after those, and where the record lies; stops when `body` returns false.
    private func forEachRecord(_ chunk: Int, _ body: (_ shared: Int, _ suffix: UnsafeRawBufferPointer, Record) -> Bool) {
        chunks[chunk].withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress else { return }
            var offset = 0
            while offset < bytes.count {
                let start = offset
                let shared = Self.readLength(bytes, &offset)
                let suffix = Self.readLength(bytes, &offset)
                guard suffix <= bytes.count - offset else { return }  // never written so; read no further
                offset += suffix
                if !body(shared, UnsafeRawBufferPointer(start: base + offset - suffix, count: suffix), Record(start: start, end: offset)) { return }
            }
        }
    }

    /// The chunk that holds, or would hold, `key`: the last whose first key is not above it.
    private func chunkIndex(_ key: UnsafeRawBufferPointer) -> Int {
        var low = 0, high = firsts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if firsts[mid].withUnsafeBytes({ Self.compare(key, $0) }) >= 0 { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// Adds `key`, which must not be present (the table has just taken it as a new key).
    mutating func insert(_ key: UnsafeRawBufferPointer) {
        count += 1
        guard !firsts.isEmpty else {
            firsts.append(Array(key))
            chunks.append(Self.encoded(key, after: nil))
            encodedBytes += chunks[0].count
            return
        }
        let chunk = chunkIndex(key)
        // The first key above `key` (it is re-encoded after `key`), and the key before it.
        let location = locate(key, in: chunk)
        let next = location.at
        let previous = location.previous
        var rewritten: [UInt8] = []
        let cut = next?.record.start ?? chunks[chunk].count
        rewritten.reserveCapacity(chunks[chunk].count + key.count + 8)
        rewritten += chunks[chunk][..<cut]
        previous.withUnsafeBytesIfPresent { rewritten += Self.encoded(key, after: $0) }
        if let next {
            next.key.withUnsafeBytes { nextKey in
                Self.append(nextKey, after: key, to: &rewritten)
            }
            rewritten += chunks[chunk][next.record.end...]
        }
        if previous == nil { firsts[chunk] = Array(key) }
        replace(chunk, with: rewritten)
        if rewritten.count > chunkBytes { split(chunk) }
    }

    /// Removes `key`, if present.
    mutating func remove(_ key: UnsafeRawBufferPointer) {
        guard !firsts.isEmpty else { return }
        let chunk = chunkIndex(key)
        let location = locate(key, in: chunk)
        guard location.equal, let found = location.at?.record else { return }
        let previous = location.previous, next = location.following
        count -= 1
        var rewritten: [UInt8] = Array(chunks[chunk][..<found.start])
        if let next {
            if let previous {
                previous.withUnsafeBytes { before in next.key.withUnsafeBytes { Self.append($0, after: before, to: &rewritten) } }
            } else {
                next.key.withUnsafeBytes { Self.append($0, after: nil, to: &rewritten) }
                firsts[chunk] = next.key
            }
            rewritten += chunks[chunk][next.record.end...]
        }
        if rewritten.isEmpty {
            encodedBytes -= chunks[chunk].count
            chunks.remove(at: chunk)
            firsts.remove(at: chunk)
        } else {
            replace(chunk, with: rewritten)
        }
    }

    /// Where `key` lies in `chunk`: the first key not below it (`at`, nil past the end) and
    /// whether that is `key` itself, the key before it (nil when `key` would come first), and
    /// when it is `key`, the one after it.
    private struct Location {
        var previous: [UInt8]?
        var at: (key: [UInt8], record: Record)?
        var equal = false
        var following: (key: [UInt8], record: Record)?
    }

    /// Every insert and remove finds its place this way, so it avoids a comparison per key:
    /// front coding says how many bytes a key shares with the one before it, and with the
    /// length `p` the key before shares with `key` (that key being below `key`), a key sharing
    /// more than `p` is below `key` too, one sharing less is above it, and only one sharing
    /// exactly `p` needs its bytes compared, from `p` on. A comparison per key (`memcmp`) and
    /// a copy of each key made a new key cost 15 µs in a 2 KiB chunk (1M new keys: 15 s).
    private func locate(_ key: UnsafeRawBufferPointer, in chunk: Int) -> Location {
        var location = Location()
        var previous = KeyScratch()  // the last key below `key`, rebuilt in place
        defer { previous.release() }
        var hasPrevious = false
        var p = 0  // bytes `previous` shares with `key`
        forEachRecord(chunk) { sharedWritten, suffix, record in
            let suffixCount = suffix.count
            if let at = location.at {  // `key` itself came before: this is the key after it
                location.following = (Array(at.key[0..<min(sharedWritten, at.key.count)]) + suffix, record)
                return false
            }
            let shared = min(sharedWritten, previous.count)
            let below: Bool
            var common = p
            if hasPrevious && shared > p {
                below = true
            } else if hasPrevious && shared < p {
                below = false
            } else {
                // Shares exactly `p` bytes with `key`: compare the rest.
                var q = 0
                let limit = min(suffixCount, key.count - shared)
                while q < limit && suffix[q] == key[shared + q] { q += 1 }
                common = shared + q
                if q < limit {
                    below = suffix[q] < key[shared + q]
                } else {
                    below = suffixCount < key.count - shared  // a proper prefix of `key` is below it
                    location.equal = suffixCount == key.count - shared
                }
            }
            if !below {
                location.at = (Array(previous.bytes[0..<shared]) + suffix, record)
                if hasPrevious { location.previous = Array(previous.bytes) }
                return location.equal  // when it is `key`, the key after it is wanted too
            }
            previous.replace(after: shared, with: suffix)
            hasPrevious = true
            p = common
            return true
        }
        if location.at == nil && hasPrevious { location.previous = Array(previous.bytes) }
        return location
    }

    /// Builds the order of keys given in increasing order in one pass, without a search per key
    /// (a load from the log: inserting 1M keys one by one took 1.4 s of a 2 s start). Chunks
    /// are filled to three quarters, leaving room for inserts.
    struct Builder {
        private(set) var keys: SortedKeys
        private var last: [UInt8] = []

        init(chunkBytes: Int = SortedKeys.defaultChunkBytes) {
            keys = SortedKeys(chunkBytes: chunkBytes)
        }

        /// Adds `key`, which must sort after every key added before it.
        mutating func append(_ key: UnsafeRawBufferPointer) {
            let full = keys.chunks.last.map { $0.count >= keys.chunkBytes * 3 / 4 } ?? true
            if full {
                keys.firsts.append(Array(key))
                keys.chunks.append(SortedKeys.encoded(key, after: nil))
                keys.encodedBytes += keys.chunks[keys.chunks.count - 1].count
            } else {
                let index = keys.chunks.count - 1
                let before = keys.chunks[index].count
                last.withUnsafeBytes { SortedKeys.append(key, after: $0, to: &keys.chunks[index]) }
                keys.encodedBytes += keys.chunks[index].count - before
            }
            keys.count += 1
            last.removeAll(keepingCapacity: true)
            last.append(contentsOf: key)
        }
    }

    /// Each key from `start` on in order (`start` itself only when `inclusive`; every key when
    /// `start` is nil), while `body` returns true.
    func forEach(from start: UnsafeRawBufferPointer?, inclusive: Bool = false, _ body: (UnsafeRawBufferPointer) -> Bool) {
        guard !firsts.isEmpty else { return }
        var chunk = start.map(chunkIndex) ?? 0
        var going = true
        while going && chunk < chunks.count {
            decode(chunk) { current, _ in
                if let start {
                    let order = Self.compare(current, start)
                    if order < 0 || (order == 0 && !inclusive) { return true }
                }
                going = body(current)
                return going
            }
            chunk += 1
        }
    }

    private mutating func replace(_ chunk: Int, with bytes: [UInt8]) {
        encodedBytes += bytes.count - chunks[chunk].count
        chunks[chunk] = bytes
    }

    /// Splits an over-long chunk at its middle record; the second half's first key is written
    /// whole. A chunk of one (long) key stays as it is.
    private mutating func split(_ chunk: Int) {
        let half = chunks[chunk].count / 2
        var middle: (key: [UInt8], record: Record)? = nil
        decode(chunk) { current, record in
            if record.start > 0 && record.end > half {
                middle = (Array(current), record)
                return false
            }
            return true
        }
        guard let middle else { return }
        var upper = Self.encoded(middle.key, after: nil)
        upper += chunks[chunk][middle.record.end...]
        let lower = Array(chunks[chunk][..<middle.record.start])
        replace(chunk, with: lower)
        chunks.insert(upper, at: chunk + 1)
        firsts.insert(middle.key, at: chunk + 1)
        encodedBytes += upper.count
    }

    // MARK: - Encoding

    /// Bytewise order; on a common prefix the shorter first. Negative, zero or positive.
    static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let common = min(a.count, b.count)
        if common > 0, let x = a.baseAddress, let y = b.baseAddress {
            let order = memcmp(x, y, common)
            if order != 0 { return Int(order) }
        }
        return a.count - b.count
    }

    private static func encoded(_ key: some Collection<UInt8>, after previous: UnsafeRawBufferPointer?) -> [UInt8] {
        var bytes: [UInt8] = []
        Array(key).withUnsafeBytes { append($0, after: previous, to: &bytes) }
        return bytes
    }

    private static func append(_ key: UnsafeRawBufferPointer, after previous: UnsafeRawBufferPointer?, to bytes: inout [UInt8]) {
        var shared = 0
        if let previous {
            let limit = min(previous.count, key.count)
            while shared < limit && previous[shared] == key[shared] { shared += 1 }
        }
        writeLength(shared, to: &bytes)
        writeLength(key.count - shared, to: &bytes)
        bytes += key[shared...]
    }

    private static func writeLength(_ value: Int, to bytes: inout [UInt8]) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    private static func readLength(_ bytes: UnsafeRawBufferPointer, _ offset: inout Int) -> Int {
        var value = 0, shift = 0
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            value |= Int(byte & 0x7f) << shift
            if byte < 0x80 { break }
            shift += 7
        }
        return value
    }
}

/// One key being rebuilt from front-coded records, in a raw buffer that grows as needed
/// (keys may be as long as the key limit). Array operations per key (`removeSubrange`,
/// `append`) were most of an insert's cost. The owner calls `release()`.
private struct KeyScratch {
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var count = 0

    init() {
        capacity = 256
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
    }

    func release() { base.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Keeps the first `shared` bytes (at most `count`) and appends `suffix`.
    mutating func replace(after shared: Int, with suffix: UnsafeRawBufferPointer) {
        let kept = min(shared, count)
        if kept + suffix.count > capacity {
            capacity = max(kept + suffix.count, capacity * 2)
            let grown = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 1)
            grown.copyMemory(from: base, byteCount: kept)
            base.deallocate()
            base = grown
        }
        if let from = suffix.baseAddress { (base + kept).copyMemory(from: from, byteCount: suffix.count) }
        count = kept + suffix.count
    }
}

extension Optional where Wrapped == [UInt8] {
    /// `body` with the bytes, or with nil when there are none.
    func withUnsafeBytesIfPresent<R>(_ body: (UnsafeRawBufferPointer?) -> R) -> R {
        switch self {
        case .some(let bytes): bytes.withUnsafeBytes { body($0) }
        case .none: body(nil)
        }
    }
}
