import CPrefetch

/// An open-addressing hash set of entries, looked up by raw key bytes.
///
/// Written by hand rather than using `Dictionary` because a lookup must not allocate (the key
/// arrives as bytes in the read buffer) and a slot must stay small: a reference plus its key's
/// 32-bit hash, 12 bytes. The stored hashes let a probe skip non-matching slots without touching
/// their entries (each such touch is a cache miss: measured as most of the lookup time before),
/// and let resize and removal move entries without rehashing keys.
///
/// Linear probing with backward-shift deletion, so there are no tombstones; load stays at or
/// below 3/4. Hashing is SipHash with a per-process seed (`Hasher`), so clients cannot force
/// collisions.
struct KeyTable: Sendable {
    private var slots: [Entry?]
    /// The hash of each occupied slot's key (meaningless for empty slots).
    private var hashes: [UInt32]
    private(set) var count = 0

    init(minimumCapacity: Int = 16) {
        var capacity = 16
        while capacity * 3 / 4 < minimumCapacity { capacity *= 2 }
        slots = Array(repeating: nil, count: capacity)
        hashes = Array(repeating: 0, count: capacity)
    }

    private var mask: Int { slots.count - 1 }

    static func hash(_ key: UnsafeRawBufferPointer) -> UInt32 {
        var hasher = Hasher()
        hasher.combine(bytes: key)
        return UInt32(truncatingIfNeeded: hasher.finalize())
    }

    /// The slot holding `key`, or the empty slot where it would go.
    private func probe(_ key: UnsafeRawBufferPointer, hash: UInt32) -> (index: Int, found: Bool) {
        var i = Int(hash) & mask
        while let entry = slots[i] {
            if hashes[i] == hash && entry.hasKey(key) { return (i, true) }
            i = (i + 1) & mask
        }
        return (i, false)
    }

    /// The entry for `key`; `hash` is `KeyTable.hash(key)`, passed in so a write hashes once.
    func find(_ key: UnsafeRawBufferPointer, hash: UInt32) -> Entry? {
        let (i, found) = probe(key, hash: hash)
        return found ? slots[i] : nil
    }

    func find(_ key: UnsafeRawBufferPointer) -> Entry? {
        find(key, hash: Self.hash(key))
    }

    // MARK: - Prefetching for a burst of lookups

    /// First step of a lookup coming soon: starts loading the slot and stored hash where the
    /// probe for `hash` begins. A hint only: nothing is read.
    func prefetchSlot(hash: UInt32) {
        let i = Int(hash) & mask
        slots.withUnsafeBufferPointer { if let base = $0.baseAddress { kv_prefetch(base + i) } }
        hashes.withUnsafeBufferPointer { if let base = $0.baseAddress { kv_prefetch(base + i) } }
    }

    /// Second step, once the slot is in cache: starts loading the entry of the first slot in the
    /// probe whose stored hash matches. The slot's reference is read as bits, not as an `Entry`:
    /// taking a reference would retain the entry, a write to the very cache line still missing.
    func prefetchEntry(hash: UInt32) {
        slots.withUnsafeBufferPointer { slots in
            hashes.withUnsafeBufferPointer { hashes in
                guard let base = slots.baseAddress else { return }
                let raw = UnsafeRawPointer(base)
                var i = Int(hash) & mask
                for _ in 0..<Self.prefetchProbeLimit {
                    let bits = raw.load(fromByteOffset: i * MemoryLayout<Entry?>.stride, as: UInt.self)
                    guard let entry = UnsafeRawPointer(bitPattern: bits) else { return }  // an empty slot ends the probe
                    if hashes[i] == hash {
                        // The header and the key's first bytes, and what follows (a short value).
                        kv_prefetch(entry)
                        kv_prefetch(entry + 64)
                        return
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    /// Slots a prefetch looks at: most probes end within a few at load 3/4.
    private static let prefetchProbeLimit = 8

    /// Whether an `Entry?` is one pointer-sized reference, 0 for nil, as `prefetchEntry` reads it.
    static var slotIsOneReference: Bool {
        MemoryLayout<Entry?>.size == MemoryLayout<UInt>.size && MemoryLayout<Entry?>.stride == MemoryLayout<UInt>.stride
    }

    /// The entry for `key` when the table holds the only reference to it, so that it may be
    /// rewritten in place (`Entry.rewrite`); nil when absent or held elsewhere too.
    mutating func soleEntry(_ key: UnsafeRawBufferPointer, hash: UInt32) -> Entry? {
        let (i, found) = probe(key, hash: hash)
        guard found, slots[i]?.isOnlyReference() == true else { return nil }
        return slots[i]
    }

    /// Inserts `entry`, replacing and returning the entry with the same key if there was one.
    @discardableResult
    mutating func upsert(_ entry: Entry) -> Entry? {
        upsert(entry, hash: entry.withKey { Self.hash($0) })
    }

    /// `upsert` with the entry's key hash already computed.
    @discardableResult
    mutating func upsert(_ entry: Entry, hash: UInt32) -> Entry? {
        let (i, found) = entry.withKey { probe($0, hash: hash) }
        if found {
            let old = slots[i]
            slots[i] = entry
            return old
        }
        slots[i] = entry
        hashes[i] = hash
        count += 1
        if count > slots.count * 3 / 4 { resize(to: slots.count * 2) }
        return nil
    }

    /// Removes and returns the entry for `key`.
    @discardableResult
    mutating func remove(_ key: UnsafeRawBufferPointer) -> Entry? {
        let (index, found) = probe(key, hash: Self.hash(key))
        guard found else { return nil }
        let removed = slots[index]
        var hole = index
        var j = index
        // Backward shift: move later members of the probe run into the hole when their home allows.
        while true {
            j = (j + 1) & mask
            guard slots[j] != nil else { break }
            let home = Int(hashes[j]) & mask
            if (hole - home) & mask < (j - home) & mask {
                slots[hole] = slots[j]
                hashes[hole] = hashes[j]
                hole = j
            }
        }
        slots[hole] = nil
        count -= 1
        if slots.count > 16 && count < slots.count / 8 { resize(to: slots.count / 2) }
        return removed
    }

    private mutating func resize(to capacity: Int) {
        let oldSlots = slots, oldHashes = hashes
        slots = Array(repeating: nil, count: capacity)
        hashes = Array(repeating: 0, count: capacity)
        for k in oldSlots.indices {
            guard let entry = oldSlots[k] else { continue }
            var i = Int(oldHashes[k]) & mask
            while slots[i] != nil { i = (i + 1) & mask }
            slots[i] = entry
            hashes[i] = oldHashes[k]
        }
    }

    /// Every entry, in no particular order (INFO and tests).
    func forEach(_ body: (Entry) throws -> Void) rethrows {
        for case let entry? in slots { try body(entry) }
    }

    /// Bytes used by the slot arrays themselves.
    var slotBytes: Int { slots.count * (MemoryLayout<Entry?>.stride + MemoryLayout<UInt32>.stride) }
}
