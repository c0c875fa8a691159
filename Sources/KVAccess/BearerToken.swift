import Crypto
import ExtrasBase64

/// Static bearer tokens: minted at random, stored in the access file only as their SHA-256.
public enum BearerToken {
    /// Every minted token starts so, which tells it from a JWT at a glance (and in a leak scan).
    public static let prefix = "kv_"

    /// A new token: 256 random bits from the system's CSPRNG, base64url without padding.
    public static func mint() -> String {
        let key = SymmetricKey(size: .bits256)
        let bytes = key.withUnsafeBytes { Array($0) }
        return prefix + Base64.encodeToString(bytes: bytes, options: [.base64UrlAlphabet, .omitPaddingCharacter])
    }

    /// The SHA-256 of a token's text, in lowercase hex: what the access file stores.
    public static func hashHex(_ token: String) -> String {
        hex(digest(token))
    }

    static func digest(_ token: String) -> [UInt8] {
        var token = token
        return token.withUTF8 { bytes in
            SHA256.hash(data: UnsafeRawBufferPointer(bytes)).withUnsafeBytes { Array($0) }
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// 64 hex digits → 32 bytes; nil for anything else.
    static func digest(hex text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count == 64 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var index = 0
        while index < 64 {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// The static tokens of an access file, found by their SHA-256.
///
/// The hash table is keyed by the digest's first 8 bytes only; the full 32 bytes are then
/// compared in constant time, so how long a comparison takes says nothing about how much of a
/// stored digest a guess matched.
struct TokenTable: Sendable {
    struct Entry: Sendable {
        var digest: [UInt8]
        var identity: Identity
    }

    private var buckets: [UInt64: [Entry]] = [:]
    private(set) var count = 0

    mutating func insert(digest: [UInt8], identity: Identity) -> Bool {
        let bucket = Self.bucket(digest)
        if buckets[bucket, default: []].contains(where: { Self.constantTimeEqual($0.digest, digest) }) { return false }
        buckets[bucket, default: []].append(Entry(digest: digest, identity: identity))
        count += 1
        return true
    }

    func identity(for token: String) -> Identity? {
        let digest = BearerToken.digest(token)
        guard let entries = buckets[Self.bucket(digest)] else { return nil }
        var found: Identity?
        for entry in entries where Self.constantTimeEqual(entry.digest, digest) {
            found = entry.identity
        }
        return found
    }

    private static func bucket(_ digest: [UInt8]) -> UInt64 {
        digest.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Compares every byte whatever the first difference.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
