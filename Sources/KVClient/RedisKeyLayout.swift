/// Where KvServer's data lives in a Redis/Valkey keyspace (docs/scaling.md, "Layout").
///
/// A key `k` belongs to one of 16384 *groups*, `g = CRC16(k) mod 16384`. Its value is the hash
/// `kv:{g}:k` (fields `v`: the value's JSON text, `r`: its revision); the group's hash `kv:{g}`
/// holds the group's last revision (`n`) and its epoch (`e`). The hash tag `{g}` puts both, and
/// the key's change channel (named like its hash), in one cluster slot, so a write, its revision
/// and its change event are one atomic function call even on a cluster, and a key's own braces
/// never matter: Redis takes the tag from the *first* `{…}`, which is always ours.
///
/// Revisions are per group rather than global (a global counter would put every write in one
/// slot): a key's revisions still only grow, across deletions too, because its group's counter
/// outlives it.
public enum RedisKeyLayout {
    public static let groups = 16384

    public static func group(of key: [UInt8]) -> Int { Int(CRC16.xmodem(key)) % groups }

    /// `kv:{g}:` for `key`: the prefix of its hash and its channel.
    static func prefix(group: Int) -> [UInt8] { Array("kv:{\(group)}:".utf8) }

    /// The hash holding `key` (also its change channel).
    public static func dataKey(_ key: [UInt8]) -> [UInt8] { names(of: key).data }

    /// The hash holding the revision counter and epoch of `key`'s group.
    public static func groupKey(_ key: [UInt8]) -> [UInt8] { names(of: key).group }

    /// Both, from one hash of the key.
    public static func names(of key: [UInt8]) -> (data: [UInt8], group: [UInt8]) {
        let group = group(of: key)
        return (prefix(group: group) + key, Array("kv:{\(group)}".utf8))
    }

    /// The KvServer key a data key or channel names, or nil for anything else.
    public static func key(of dataKey: [UInt8]) -> [UInt8]? {
        // "kv:{" digits "}:" key
        guard dataKey.starts(with: Array("kv:{".utf8)) else { return nil }
        var i = 4
        while i < dataKey.count, dataKey[i] >= UInt8(ascii: "0"), dataKey[i] <= UInt8(ascii: "9") { i += 1 }
        guard i > 4, i + 1 < dataKey.count, dataKey[i] == UInt8(ascii: "}"), dataKey[i + 1] == UInt8(ascii: ":") else { return nil }
        return Array(dataKey[(i + 2)...])
    }

    /// The cluster slot of `key`'s hash, group and channel (a table: one CRC16 per lookup).
    public static func slot(ofKey key: [UInt8]) -> Int { groupSlots[group(of: key)] }

    private static let groupSlots: [Int] = (0..<groups).map { slot(of: Array("{\($0)}".utf8)) }

    /// The cluster slot of a Redis key or channel: CRC16 of its hash tag (the text between the
    /// first `{` and the first `}` after it, when not empty), else of the whole name.
    public static func slot(of name: [UInt8]) -> Int {
        if let open = name.firstIndex(of: UInt8(ascii: "{")),
           let close = name[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            return Int(CRC16.xmodem(name[(open + 1)..<close])) % 16384
        }
        return Int(CRC16.xmodem(name)) % 16384
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0): Redis Cluster's key-to-slot hash. A dozen
/// lines, and no package in the mirror provides it.
enum CRC16 {
    private static let table: [UInt16] = (0..<256).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    static func xmodem<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int(UInt8(crc >> 8) ^ byte)] }
        return crc
    }
}
