import KVCore
import NIOCore
import RESP
import Testing
@testable import KVClient

@Suite("Client pieces")
struct ClientPiecesTests {
    @Test("reconnect backoff starts at 50 ms, doubles, stays at 2 s, and resets on success")
    func backoff() {
        var backoff = ReconnectBackoff()
        let delays = (0..<8).map { _ in backoff.failed() }
        #expect(delays == [50, 100, 200, 400, 800, 1600, 2000, 2000])
        backoff.succeeded()
        #expect(backoff.failed() == 50)
        var many = ReconnectBackoff()
        for _ in 0..<1000 { _ = many.failed() }
        #expect(many.failed() == 2000)
    }

    @Test("change-feed pushes parse into changes; other pushes do not")
    func changes() {
        func push(_ parts: [String]) -> [RESPValue] { parts.map { .bulkString(ByteBuffer(string: $0)) } }
        let set = StoreChange(push: push(["message", "k", "set:9:{\"a\":1}"]))
        #expect(set == StoreChange(key: ByteBuffer(string: "k"), kind: .set, revision: 9, value: ByteBuffer(string: "{\"a\":1}")))
        #expect(StoreChange(push: push(["message", "k", "expired:10"]))?.kind == .expired)
        #expect(StoreChange(push: push(["message", "k", "bogus"])) == nil)
        #expect(StoreChange(push: push(["subscribe", "k", "1"])) == nil)
    }
}

@Suite("Store addresses (--store)")
struct StoreAddressTests {
    @Test("kv-stored socket paths, redis:// and redis+unix:// (and valkey) addresses, and bad ones")
    func parse() throws {
        #expect(try StoreAddress.parse("/run/kvserver/kv-stored.sock") == .kvStored(path: "/run/kvserver/kv-stored.sock"))
        #expect(try StoreAddress.parse("redis://10.0.0.5:6380") == .redis(.tcp(host: "10.0.0.5", port: 6380)))
        #expect(try StoreAddress.parse("redis://cache.internal") == .redis(.tcp(host: "cache.internal", port: 6379)))
        #expect(try StoreAddress.parse("valkey://[::1]:7000/") == .redis(.tcp(host: "::1", port: 7000)))
        #expect(try StoreAddress.parse("redis+unix:///run/redis/redis.sock") == .redis(.unix(path: "/run/redis/redis.sock")))
        #expect(try StoreAddress.parse("redis://[::1]:7000").description == "redis://[::1]:7000")
        for bad in ["redis://:6379", "redis://host:0", "redis://host:port", "redis+unix://relative.sock", ""] {
            #expect(throws: KVError.self, "\(bad)") { try StoreAddress.parse(bad) }
        }
    }
}
