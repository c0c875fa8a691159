/// An open-addressing hash set of entries, looked up by raw key bytes.
///
/// Written by hand rather than using `Dictionary` because a lookup must not allocate (the key
/// arrives as a slice of the read buffer) and a slot must cost 8 bytes (one reference): at a
/// million keys `Dictionary<[UInt8], …>` costs roughly twice the memory. Linear probing with
/// backward-shift deletion, so there are no tombstones; load stays at or below 3/4.
/// Hashing is SipHash with a per-process seed (`Hasher`), so clients cannot force collisions.
struct KeyTable: Sendable {
    private var slots: [Entry?]
    private(set) var count = 0

    init(minimumCapacity: Int = 16) {
        var capacity = 16
        while capacity * 3 / 4 < minimumCapacity { capacity *= 2 }
        slots = Array(repeating: nil, count: capacity)
    }

    private var mask: Int { slots.count - 1 }

    static func hash(_ key: UnsafeRawBufferPointer) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: key)
        return hasher.finalize()
    }

    /// The slot holding `key`, or the empty slot where it would go.
    private func probe(_ key: UnsafeRawBufferPointer) -> (index: Int, found: Bool) {
        var i = Self.hash(key) & mask
        while let entry = slots[i] {
            if entry.hasKey(key) { return (i, true) }
            i = (i + 1) & mask
        }
        return (i, false)
    }

    func find(_ key: UnsafeRawBufferPointer) -> Entry? {
        let (i, found) = probe(key)
        return found ? slots[i] : nil
    }

    /// Inserts `entry`, replacing and returning the entry with the same key if there was one.
    @discardableResult
    mutating func upsert(_ entry: Entry) -> Entry? {
        let (i, found) = entry.withKey { probe($0) }
        if found {
            let old = slots[i]
            slots[i] = entry
            return old
        }
        slots[i] = entry
        count += 1
        if count > slots.count * 3 / 4 { resize(to: slots.count * 2) }
        return nil
    }

    /// Removes and returns the entry for `key`.
    @discardableResult
    mutating func remove(_ key: UnsafeRawBufferPointer) -> Entry? {
        let (index, found) = probe(key)
        guard found else { return nil }
        let removed = slots[index]
        var hole = index
        var j = index
        // Backward shift: move later members of the probe run into the hole when their home allows.
        while true {
            j = (j + 1) & mask
            guard let candidate = slots[j] else { break }
            let home = candidate.withKey { Self.hash($0) } & mask
            let distanceToHole = (hole - home) & mask
            let distanceToHere = (j - home) & mask
            if distanceToHole < distanceToHere {
                slots[hole] = candidate
                hole = j
            }
        }
        slots[hole] = nil
        count -= 1
        if slots.count > 16 && count < slots.count / 8 { resize(to: slots.count / 2) }
        return removed
    }

    private mutating func resize(to capacity: Int) {
        let old = slots
        slots = Array(repeating: nil, count: capacity)
        for case let entry? in old {
            var i = entry.withKey { Self.hash($0) } & mask
            while slots[i] != nil { i = (i + 1) & mask }
            slots[i] = entry
        }
    }

    /// Every entry, in no particular order (INFO and tests).
    func forEach(_ body: (Entry) throws -> Void) rethrows {
        for case let entry? in slots { try body(entry) }
    }

    /// Bytes used by the slot array itself.
    var slotBytes: Int { slots.count * MemoryLayout<Entry?>.stride }
}
