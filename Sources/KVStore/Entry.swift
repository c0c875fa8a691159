/// The fixed part of an entry, stored in front of its key and value bytes.
public struct EntryHeader: Sendable {
    /// The revision of the change that wrote this entry.
    public internal(set) var revision: UInt64
    /// Monotonic deadline in nanoseconds (`StoreClock`), or 0 for "never expires".
    /// Mutable only under the keyspace's owner; 0 also marks an entry that left the keyspace,
    /// which is how the expiry queue recognises stale items.
    var deadline: Int64
    var keyCount: UInt32
    var valueCount: UInt32
}

/// One key and its value in a single allocation: a header, the key bytes, then the value bytes.
///
/// One allocation per key (instead of a dictionary slot plus two arrays) is what keeps
/// kv-stored's memory per key near redis-server's. Key, value and revision never change while
/// anything but the key table holds the entry, so an entry may be read from any thread (a
/// change event carries it to subscribers without copying the value); `deadline` is only
/// touched by the keyspace's owner. The one exception, `rewrite`, is for an entry the table
/// alone holds, checked under the `Store` lock, where every other reference is taken.
///
/// `@unchecked Sendable` holds because of that split: the bytes are shared freely while they
/// cannot change, and `deadline` is read and written only under the `Store` lock.
public struct Entry: @unchecked Sendable {
    final class Storage: ManagedBuffer<EntryHeader, UInt8> {}
    private(set) var storage: Storage

    /// Makes an entry holding copies of `key` and `value`.
    static func make(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, revision: UInt64, deadline: Int64) -> Entry {
        let buffer = Storage.create(minimumCapacity: key.count + value.count) { _ in
            EntryHeader(revision: revision, deadline: deadline, keyCount: UInt32(key.count), valueCount: UInt32(value.count))
        }
        let storage = unsafeDowncast(buffer, to: Storage.self)
        storage.withUnsafeMutablePointerToElements { bytes in
            if let base = key.baseAddress { (bytes).initialize(from: base.assumingMemoryBound(to: UInt8.self), count: key.count) }
            if let base = value.baseAddress {
                (bytes + key.count).initialize(from: base.assumingMemoryBound(to: UInt8.self), count: value.count)
            }
        }
        return Entry(storage: storage)
    }

    /// True when nothing but this reference holds the entry. Meaningful under the `Store` lock:
    /// every other reference to a table's entry is taken under it.
    mutating func isOnlyReference() -> Bool { isKnownUniquelyReferenced(&storage) }

    /// Bytes the allocation holds for key and value (at least what they took when it was made).
    var byteCapacity: Int { storage.capacity }

    /// Puts `value`, after the key, and `revision` and `deadline` into this allocation. Only for
    /// an entry nothing else holds (`isOnlyReference`, under the lock) with room (`byteCapacity`).
    func rewrite(value: UnsafeRawBufferPointer, revision: UInt64, deadline: Int64) {
        let keyCount = self.keyCount
        storage.withUnsafeMutablePointers { header, bytes in
            header.pointee.revision = revision
            header.pointee.deadline = deadline
            header.pointee.valueCount = UInt32(value.count)
            if let base = value.baseAddress {
                (bytes + keyCount).update(from: base.assumingMemoryBound(to: UInt8.self), count: value.count)
            }
        }
    }

    /// True when both are the same entry (not merely equal bytes).
    static func === (a: Entry, b: Entry) -> Bool { a.storage === b.storage }

    // Header reads go through the pointer: `ManagedBuffer.header` is a class stored property,
    // and its dynamic exclusivity check showed up in every key comparison of a lookup.
    public var revision: UInt64 { storage.withUnsafeMutablePointerToHeader { $0.pointee.revision } }
    var deadline: Int64 {
        get { storage.withUnsafeMutablePointerToHeader { $0.pointee.deadline } }
        nonmutating set { storage.withUnsafeMutablePointerToHeader { $0.pointee.deadline = newValue } }
    }
    public var keyCount: Int { Int(storage.withUnsafeMutablePointerToHeader { $0.pointee.keyCount }) }
    public var valueCount: Int { Int(storage.withUnsafeMutablePointerToHeader { $0.pointee.valueCount }) }

    public func withKey<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        let count = keyCount
        return try storage.withUnsafeMutablePointerToElements { try body(UnsafeRawBufferPointer(start: $0, count: count)) }
    }

    public func withValue<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        let offset = keyCount, count = valueCount
        return try storage.withUnsafeMutablePointerToElements { try body(UnsafeRawBufferPointer(start: $0 + offset, count: count)) }
    }

    public var keyBytes: [UInt8] { withKey { Array($0) } }
    public var valueBytes: [UInt8] { withValue { Array($0) } }

    func hasKey(_ key: UnsafeRawBufferPointer) -> Bool {
        guard key.count == keyCount else { return false }
        return withKey { own in
            guard let a = own.baseAddress, let b = key.baseAddress else { return true }  // both empty
            return memcmp(a, b, key.count) == 0
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
import KVSystem
#endif
