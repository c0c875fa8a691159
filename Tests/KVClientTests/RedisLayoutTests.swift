import KVClient
import NIOCore
import RESP
import Testing

/// The Redis layout and command translation, without a server.
@Suite("Redis layout and translation")
struct RedisLayoutTests {
    @Test("slots are Redis Cluster's: CRC16/XMODEM of the first non-empty {tag}, else of the name")
    func slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        #expect(RedisKeyLayout.slot(of: Array("123456789".utf8)) == 0x31C3 % 16384)
        #expect(RedisKeyLayout.slot(of: Array("foo".utf8)) == 12182)
        #expect(RedisKeyLayout.slot(of: Array("{user1000}.following".utf8)) == RedisKeyLayout.slot(of: Array("user1000".utf8)))
        #expect(RedisKeyLayout.slot(of: Array("foo{}{bar}".utf8)) != RedisKeyLayout.slot(of: Array("bar".utf8)), "an empty first tag: the whole name")
        #expect(RedisKeyLayout.slot(of: Array("foo{{bar}}zap".utf8)) == RedisKeyLayout.slot(of: Array("{bar".utf8)))
    }

    @Test("a key's hash and its group's hash share a slot, whatever braces the key holds; the key reads back from its hash's name")
    func layout() {
        for text in ["k", "{k}", "}{", "{}", "a{b}c", "", "ключ", String(repeating: "{", count: 100)] {
            let key = Array(text.utf8)
            let data = RedisKeyLayout.dataKey(key), group = RedisKeyLayout.groupKey(key)
            #expect(RedisKeyLayout.slot(of: data) == RedisKeyLayout.slot(of: group), "\(text)")
            #expect(RedisKeyLayout.key(of: data) == key, "\(text)")
        }
        for notOurs in ["k", "kv:{}:k", "kv:{12}k", "kv:{x}:k", "kv:{12}"] {
            #expect(RedisKeyLayout.key(of: Array(notOurs.utf8)) == nil, "\(notOurs)")
        }
    }

    @Test("kv-stored's commands become function calls with the key's hash and group, and their replies read as kv-stored's")
    func translation() {
        func words(_ command: [[UInt8]]) -> [String] { command.map { String(decoding: $0, as: UTF8.self) } }
        let key = Array("{k}".utf8)
        let data = String(decoding: RedisKeyLayout.dataKey(key), as: UTF8.self)
        let group = String(decoding: RedisKeyLayout.groupKey(key), as: UTF8.self)
        let args: ([String]) -> [[UInt8]] = { $0.map { Array($0.utf8) } }

        let set = RedisFunctions.translate(args(["SET", "{k}", "1", "PX", "500"]))
        #expect(words(set.command) == ["FCALL", "kv_set", "2", data, group, "1", "500"])
        #expect(set.routingKey == Array(data.utf8))
        #expect(set.reply.adapt(.integer(7)) == .simpleString(ByteBuffer(string: "OK")))
        #expect(words(RedisFunctions.translate(args(["KVSET", "{k}", "1", "IFREV", "3"])).command) == ["FCALL", "kv_set", "2", data, group, "1", "0", "IFREV", "3"])
        #expect(words(RedisFunctions.translate(args(["KVDEL", "{k}", "NX"])).command) == ["FCALL", "kv_del", "2", data, group, "NX"])
        let get = RedisFunctions.translate(args(["GET", "{k}"]))
        #expect(words(get.command) == ["FCALL_RO", "kv_get", "1", data])
        #expect(get.reply.adapt(.array([.bulkString(ByteBuffer(string: "1")), .integer(3), .integer(-1)])) == .bulkString(ByteBuffer(string: "1")))
        #expect(get.reply.adapt(.null) == .null)
        #expect(RedisFunctions.translate(args(["DEL", "{k}"])).reply.adapt(.array([.integer(1), .integer(9)])) == .integer(1))
        #expect(words(RedisFunctions.translate(args(["KVSYNC", "{k}", "SINCE", "4", "EPOCH", "e", "INITIAL"])).command)
                == ["FCALL", "kv_sync", "2", data, group, "4", "e", "1"])
        #expect(words(RedisFunctions.translate(args(["KVSYNC", "{k}"])).command) == ["FCALL", "kv_sync", "2", data, group, "", "", "0"])
        #expect(words(RedisFunctions.translate(args(["SUBSCRIBE", "{k}"])).command) == ["SSUBSCRIBE", data])
        let ping = RedisFunctions.translate(args(["PING"]))
        #expect(words(ping.command) == ["PING"] && ping.routingKey == nil)
    }

    @Test("pushes: a sharded message is the key's change; an expiry event is the key's expiry without a revision; others are nothing")
    func pushes() {
        let data = ByteBuffer(bytes: RedisKeyLayout.dataKey(Array("a b".utf8)))
        let set = RedisFunctions.change(fromPush: [.bulkString(ByteBuffer(string: "smessage")), .bulkString(data), .bulkString(ByteBuffer(string: "set:5:[1]"))])
        #expect(set == StoreChange(key: ByteBuffer(string: "a b"), kind: .set, revision: 5, value: ByteBuffer(string: "[1]")))
        let expired = RedisFunctions.change(fromPush: [.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: RedisFunctions.expiredChannel)), .bulkString(data)])
        #expect(expired == StoreChange(key: ByteBuffer(string: "a b"), kind: .expired, revision: 0, value: nil))
        #expect(RedisFunctions.change(fromPush: [.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: RedisFunctions.expiredChannel)), .bulkString(ByteBuffer(string: "other"))]) == nil)
        #expect(RedisFunctions.change(fromPush: [.bulkString(ByteBuffer(string: "message")), .bulkString(data), .bulkString(ByteBuffer(string: "set:5:[1]"))]) == nil)
    }
}
