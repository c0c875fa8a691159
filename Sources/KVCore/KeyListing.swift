/// What a client asks for when it lists keys (docs/http.md and docs/websocket.md, "Listing
/// keys"): one page of the keys that start with `prefix`, in bytewise order. Both APIs read
/// their fields into this, so both check them by the same rules.
public struct ListingQuery: Sendable, Equatable {
    /// The most keys one page holds, and the number when the client does not say.
    public static let maxLimit = 1000, defaultLimit = 100

    /// Bytes every listed key starts with; empty: every key.
    public var prefix: [UInt8]
    /// Where the page starts: the `next` of the page before (on kv-stored, any key: the page
    /// starts after it). Nil: from the start.
    public var after: [UInt8]?
    public var limit: Int
    /// Each item with its value, revision and expiry, not only its key.
    public var values: Bool

    /// Checks the fields: prefix and `after` are UTF-8 and no longer than a key may be, `limit`
    /// is 1…`maxLimit`.
    public init(prefix: [UInt8], after: [UInt8]? = nil, limit: Int = ListingQuery.defaultLimit, values: Bool = false, limits: Limits) throws(KVError) {
        try Self.check(prefix, name: "prefix", limits: limits)
        if let after { try Self.check(after, name: "after", limits: limits) }
        guard (1...Self.maxLimit).contains(limit) else {
            throw KVError(.invalidRequest, "limit must be an integer from 1 to \(Self.maxLimit)")
        }
        self.prefix = prefix
        self.after = after
        self.limit = limit
        self.values = values
    }

    private static func check(_ bytes: [UInt8], name: String, limits: Limits) throws(KVError) {
        guard bytes.count <= limits.maxKeyBytes else {
            throw KVError(.tooLarge, "\(name) is \(bytes.count) bytes, the key limit is \(limits.maxKeyBytes)")
        }
        let invalid = bytes.withUnsafeBytes { UTF8Validation.firstInvalidOffset($0) }
        if let invalid { throw KVError(.invalidKey, "\(name) is not valid UTF-8 (byte \(invalid))") }
    }
}

/// One page of a listing, as the store answered it.
public struct KeyListing: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var key: [UInt8]
        /// With `values`: the value's JSON text, its revision, and the milliseconds it has left
        /// (nil without a TTL).
        public var value: [UInt8]?
        public var revision: UInt64?
        public var ttlMilliseconds: Int64?

        public init(key: [UInt8], value: [UInt8]? = nil, revision: UInt64? = nil, ttlMilliseconds: Int64? = nil) {
            self.key = key
            self.value = value
            self.revision = revision
            self.ttlMilliseconds = ttlMilliseconds
        }
    }

    /// The store's revision when the page was taken; nil on a Redis store, which has none
    /// for the whole keyspace.
    public var revision: UInt64?
    /// What to pass as `after` for the next page; nil once the listing is complete.
    public var next: [UInt8]?
    public var items: [Item]

    public init(revision: UInt64?, next: [UInt8]?, items: [Item]) {
        self.revision = revision
        self.next = next
        self.items = items
    }

    /// The page without the keys `visible` refuses: what a client whose access rules cover
    /// only part of the prefix is shown. `next` stays, so the listing goes on past them.
    public func filtered(_ visible: ([UInt8]) -> Bool) -> KeyListing {
        KeyListing(revision: revision, next: next, items: items.filter { visible($0.key) })
    }

    /// The page as both APIs answer it: `{"keys":[…],"next":…,"revision":…}`, or with values
    /// `{"items":[{"key","value","rev","expiresAt"?}…],…}`. `now` (Unix ms) turns a remaining
    /// TTL into `expiresAt`. A key that is not UTF-8 (possible only for keys written by a
    /// Redis client straight to the store) is shown with U+FFFD in place of its bad bytes.
    public func json(values: Bool, now: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(items.reduce(64) { $0 + $1.key.count + ($1.value?.count ?? 0) + 48 })
        out += Array((values ? #"{"items":["# : #"{"keys":["#).utf8)
        for (index, item) in items.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            let key = JSONText.quoted(String(decoding: item.key, as: UTF8.self))
            guard values else {
                out += key
                continue
            }
            out += Array(#"{"key":"#.utf8) + key
            if let value = item.value { out += Array(#","value":"#.utf8) + value }
            if let revision = item.revision { out += Array(#","rev":\#(revision)"#.utf8) }
            if let ttl = item.ttlMilliseconds { out += Array(#","expiresAt":\#(now + ttl)"#.utf8) }
            out.append(UInt8(ascii: "}"))
        }
        out += Array(#"],"next":"#.utf8)
        out += next.map { JSONText.quoted(String(decoding: $0, as: UTF8.self)) } ?? Array("null".utf8)
        if let revision { out += Array(#","revision":\#(revision)"#.utf8) }
        out.append(UInt8(ascii: "}"))
        return out
    }
}
