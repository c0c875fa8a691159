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
/// read in order, so a chunk also holds at most `maxRecords` keys: every insert reads its chunk
/// up to the key's place. Adding or removing a key rewrites one chunk.
struct SortedKeys: Sendable {
    /// A chunk's first key, whole, and how many keys the chunk holds.
    private struct Head {
        var first: [UInt8] { didSet { prefix = Self.prefix(of: first) } }
        /// The first key's first 8 bytes as a big-endian number (zeros past its end): a key
        /// whose prefix is below it sorts below the first key, one above it above. The search
        /// reads these from one array, and follows a first key only when they are equal (in
        /// 2M keys, following them all cost a cache miss at each step).
        private(set) var prefix: UInt64
        var records: Int

        init(first: [UInt8], records: Int) {
            self.first = first
            self.prefix = Self.prefix(of: first)
            self.records = records
        }

        static func prefix(of key: some Collection<UInt8>) -> UInt64 {
            var value: UInt64 = 0, taken = 0
            for byte in key.prefix(8) {
                value = value << 8 | UInt64(byte)
                taken += 1
            }
            return taken == 0 ? 0 : value << (8 * (8 - taken))
        }
    }

    private var heads: [Head] = []
    /// Each chunk's keys: per key, LEB128 shared length, LEB128 suffix length, suffix bytes.
    private var chunks: [[UInt8]] = []
    private let chunkBytes: Int
    private let maxRecords: Int
    private(set) var count = 0
    /// Bytes of the encoded chunks, for INFO.
    private(set) var encodedBytes = 0

    static let defaultChunkBytes = 1024
    /// Keys that share all but their last bytes (`key:000000000001`, `…002`) take 3 bytes each,
    /// so a 1 KiB chunk held 340 of them, and adding keys in order (a bulk load) read all 340
    /// for each: `locate` was a third of the time of loading 1M such keys.
    static let defaultMaxRecords = 64

    init(chunkBytes: Int = SortedKeys.defaultChunkBytes, maxRecords: Int = SortedKeys.defaultMaxRecords) {
        self.chunkBytes = max(64, chunkBytes)
        self.maxRecords = max(4, maxRecords)
    }

    /// Memory held, estimated without walking the chunks: the encoded keys with the spare room
    /// arrays keep as they grow (a half on average), and per chunk its array headers and first key.
    var bytes: Int { encodedBytes + encodedBytes / 2 + heads.count * 112 }

    /// Each chunk's key count as kept, and as read from the chunk (for tests).
    var recordCounts: (kept: [Int], read: [Int]) {
        (heads.map(\.records), chunks.indices.map { chunk in
            var read = 0
            forEachRecord(chunk) { _, _, _ in
                read += 1
                return true
            }
            return read
        })
    }

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
        let prefix = Head.prefix(of: key)
        var low = 0, high = heads.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            let notBelow = prefix != heads[mid].prefix
                ? prefix > heads[mid].prefix
                : heads[mid].first.withUnsafeBytes { Self.compare(key, $0) } >= 0
            if notBelow { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// Adds `key`, which must not be present (the table has just taken it as a new key).
    mutating func insert(_ key: UnsafeRawBufferPointer) {
        count += 1
        guard !heads.isEmpty else {
            heads.append(Head(first: Array(key), records: 1))
            chunks.append(Self.encoded(key, after: nil))
            encodedBytes += chunks[0].count
            return
        }
        let chunk = chunkIndex(key)
        // The first key above `key` (it is re-encoded after `key`), and the key before it.
        let location = locate(key, in: chunk)
        let next = location.at
        let previous = location.previous
        // Only the records from `key`'s place to the end of the key after it change: they are
        // replaced in place (the chunk's tail moves), not copied into a new chunk.
        var records: [UInt8] = []
        previous.withUnsafeBytesIfPresent { Self.append(key, after: $0, to: &records) }
        var end = chunks[chunk].count
        if let next {
            next.key.withUnsafeBytes { Self.append($0, after: key, to: &records) }
            end = next.record.end
        }
        rewrite(chunk, from: next?.record.start ?? end, to: end, with: records)
        if previous == nil { heads[chunk].first = Array(key) }
        heads[chunk].records += 1
        if chunks[chunk].count > chunkBytes || heads[chunk].records > maxRecords { split(chunk) }
    }

    /// Removes `key`, if present.
    mutating func remove(_ key: UnsafeRawBufferPointer) {
        guard !heads.isEmpty else { return }
        let chunk = chunkIndex(key)
        let location = locate(key, in: chunk)
        guard location.equal, let found = location.at?.record else { return }
        let previous = location.previous, next = location.following
        count -= 1
        heads[chunk].records -= 1
        // `key`'s record, and the next key's (re-encoded after the key before `key`), are
        // replaced in place.
        var records: [UInt8] = []
        if let next {
            if let previous {
                previous.withUnsafeBytes { before in next.key.withUnsafeBytes { Self.append($0, after: before, to: &records) } }
            } else {
                next.key.withUnsafeBytes { Self.append($0, after: nil, to: &records) }
                heads[chunk].first = next.key
            }
        }
        let end = next?.record.end ?? found.end
        if found.start == 0 && end == chunks[chunk].count && records.isEmpty {
            encodedBytes -= chunks[chunk].count
            chunks.remove(at: chunk)
            heads.remove(at: chunk)
        } else {
            rewrite(chunk, from: found.start, to: end, with: records)
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
    /// are filled to three quarters (of their bytes or of their keys), leaving room for inserts.
    struct Builder {
        private(set) var keys: SortedKeys
        private var last: [UInt8] = []

        init(chunkBytes: Int = SortedKeys.defaultChunkBytes, maxRecords: Int = SortedKeys.defaultMaxRecords) {
            keys = SortedKeys(chunkBytes: chunkBytes, maxRecords: maxRecords)
        }

        /// Adds `key`, which must sort after every key added before it.
        mutating func append(_ key: UnsafeRawBufferPointer) {
            let index = keys.chunks.count - 1
            let full = index < 0 || keys.chunks[index].count >= keys.chunkBytes * 3 / 4 || keys.heads[index].records >= keys.maxRecords * 3 / 4
            if full {
                keys.heads.append(Head(first: Array(key), records: 1))
                keys.chunks.append(SortedKeys.encoded(key, after: nil))
                keys.encodedBytes += keys.chunks[index + 1].count
            } else {
                let before = keys.chunks[index].count
                last.withUnsafeBytes { SortedKeys.append(key, after: $0, to: &keys.chunks[index]) }
                keys.heads[index].records += 1
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
        guard !heads.isEmpty else { return }
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

    /// Replaces the bytes `start..<end` of `chunk` with `records`, in place.
    private mutating func rewrite(_ chunk: Int, from start: Int, to end: Int, with records: [UInt8]) {
        encodedBytes += records.count - (end - start)
        chunks[chunk].replaceSubrange(start..<end, with: records)
    }

    /// Splits an over-long or over-full chunk at its middle record, by bytes or by keys,
    /// whichever comes first; the second half's first key is written whole. A chunk of one
    /// (long) key stays as it is.
    private mutating func split(_ chunk: Int) {
        let half = chunks[chunk].count / 2, halfRecords = heads[chunk].records / 2
        var middle: (key: [UInt8], record: Record, index: Int)? = nil
        var index = 0
        decode(chunk) { current, record in
            if record.start > 0 && (record.end > half || index >= halfRecords) {
                middle = (Array(current), record, index)
                return false
            }
            index += 1
            return true
        }
        guard let middle else { return }
        var upper = Self.encoded(middle.key, after: nil)
        upper += chunks[chunk][middle.record.end...]
        let lower = Array(chunks[chunk][..<middle.record.start])
        replace(chunk, with: lower)
        chunks.insert(upper, at: chunk + 1)
        heads.insert(Head(first: middle.key, records: heads[chunk].records - middle.index), at: chunk + 1)
        heads[chunk].records = middle.index
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
