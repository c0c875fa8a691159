import KVClient
import KVCore
import NIOCore

// The tests' shorthand for the commands both clients send (`StoreCommand`).

extension BlockingStoreClient {
    func get(_ key: [UInt8]) throws(KVError) -> ByteBuffer? { try send(.get(key)) }
    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?) throws(KVError) { try send(.set(key, value: value, ttl: ttl)) }
    @discardableResult
    func delete(_ key: [UInt8]) throws(KVError) -> Bool { try send(.delete(key)) }
    func versionedGet(_ key: [UInt8]) throws(KVError) -> VersionedValue? { try send(.versionedGet(key)) }
    func set(_ key: [UInt8], value: [UInt8], ttl: TTL?, precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try send(.versionedSet(key, value: value, ttl: ttl, precondition: precondition))
    }
    func delete(_ key: [UInt8], precondition: WritePrecondition) throws(KVError) -> WriteResult {
        try send(.versionedDelete(key, precondition: precondition))
    }
}

extension StoreConnection {
    func get(_ key: ByteBuffer) async throws(KVError) -> ByteBuffer? { try await request(.get(key)) }
    func set(_ key: ByteBuffer, value: ByteBuffer, ttl: TTL?) async throws(KVError) { try await request(.set(key, value: value, ttl: ttl)) }
    @discardableResult
    func delete(_ key: ByteBuffer) async throws(KVError) -> Bool { try await request(.delete(key)) }
    func subscribe(_ key: ByteBuffer) async throws(KVError) { try await request(.subscribe(key)) }
    func unsubscribe(_ key: ByteBuffer) async throws(KVError) { try await request(.unsubscribe(key)) }
}
