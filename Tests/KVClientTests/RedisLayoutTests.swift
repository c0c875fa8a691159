import KVClient
import KVCore
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
    func translation() throws {
        func words(_ command: [[UInt8]]) -> [String] { command.map { String(decoding: $0, as: UTF8.self) } }
        let key = Array("{k}".utf8), one = Array("1".utf8)
        let data = String(decoding: RedisKeyLayout.dataKey(key), as: UTF8.self)
        let group = String(decoding: RedisKeyLayout.groupKey(key), as: UTF8.self)
        let ttl = try TTL(milliseconds: 500)

        let set = RedisFunctions.translate(StoreOperation.set(key: key, value: one, ttl: ttl))
        #expect(words(set.command) == ["FCALL", "kv_set", "2", data, group, "1", "500"])
        #expect(RedisFunctions.routingSlot(StoreOperation.set(key: key, value: one, ttl: ttl)) == RedisKeyLayout.slot(of: Array(data.utf8)))
        #expect(set.reply.adapt(.integer(7)) == .simpleString(ByteBuffer(string: "OK")))
        #expect(words(RedisFunctions.translate(StoreOperation.versionedSet(key: key, value: one, ttl: nil, precondition: .revision(in: [3]))).command)
                == ["FCALL", "kv_set", "2", data, group, "1", "0", "IFREV", "3"])
        #expect(words(RedisFunctions.translate(StoreOperation.versionedDelete(key: key, precondition: .absent)).command) == ["FCALL", "kv_del", "2", data, group, "NX"])
        let get = RedisFunctions.translate(StoreOperation.get(key: key))
        #expect(words(get.command) == ["FCALL_RO", "kv_get", "1", data])
        #expect(get.reply.adapt(.array([.bulkString(ByteBuffer(string: "1")), .integer(3), .integer(-1)])) == .bulkString(ByteBuffer(string: "1")))
        #expect(get.reply.adapt(.null) == .null)
        #expect(RedisFunctions.translate(StoreOperation.delete(key: key)).reply.adapt(.array([.integer(1), .integer(9)])) == .integer(1))
        #expect(words(RedisFunctions.translate(StoreOperation.sync(key: key, since: 4, epoch: "e", initial: true)).command)
                == ["FCALL", "kv_sync", "2", data, group, "4", "e", "1"])
        #expect(words(RedisFunctions.translate(StoreOperation.sync(key: key, since: nil, epoch: nil, initial: false)).command)
                == ["FCALL", "kv_sync", "2", data, group, "", "", "0"])
        #expect(words(RedisFunctions.translate(StoreOperation.subscribe(key: key)).command) == ["SSUBSCRIBE", data])
        let ping = StoreOperation.other([Array("PING".utf8)])
        #expect(words(RedisFunctions.translate(ping).command) == ["PING"] && RedisFunctions.routingSlot(ping) == nil)
    }

    @Test("a listing is one SCAN step of kv_list; its names become keys, those outside the prefix go, the rest are sorted; the cursor is next")
    func listingOnRedis() throws {
        func words(_ command: [[UInt8]]) -> [String] { command.map { String(decoding: $0, as: UTF8.self) } }
        let operation = StoreOperation<[UInt8]>.list(prefix: Array("a*[b]?\\/".utf8), after: nil, limit: 50, values: false)
        let command = RedisFunctions.translate(operation).command
        #expect(words(command) == ["FCALL_RO", "kv_list", "0", "0", #"kv:{*}:a\*\[b\]\?\\/*"#, "50", "0"], "glob characters match literally")
        #expect(RedisFunctions.routingSlot(operation) == nil)
        let later = StoreOperation<[UInt8]>.list(prefix: Array("p/".utf8), after: Array("1234".utf8), limit: 2, values: true)
        #expect(words(RedisFunctions.translate(later).command) == ["FCALL_RO", "kv_list", "0", "1234", "kv:{*}:p/*", "2", "1"])

        func name(_ key: String) -> RESPValue { .bulkString(ByteBuffer(bytes: RedisKeyLayout.dataKey(Array(key.utf8)))) }
        let prefixShape = RedisFunctions.translate(StoreOperation<[UInt8]>.list(prefix: Array("p/".utf8), after: nil, limit: 9, values: false)).reply
        // A name whose `*` took "12}:x" matched the pattern without being under the prefix.
        let stray = RESPValue.bulkString(ByteBuffer(string: "kv:{12}:x}:p/y"))
        let page = prefixShape.adapt(.array([.bulkString(ByteBuffer(string: "77")), .array([name("p/b"), name("p/a"), stray, name("p/ü")])]))
        let listing = try StoreCommand<[UInt8], KeyListing>.list(try ListingQuery(prefix: Array("p/".utf8), limits: Limits())).reply(page)
        #expect(listing == KeyListing(revision: nil, next: Array("77".utf8), items: ["p/a", "p/b", "p/ü"].map { KeyListing.Item(key: Array($0.utf8)) }))
        let last = prefixShape.adapt(.array([.bulkString(ByteBuffer(string: "0")), .array([])]))
        #expect(try StoreCommand<[UInt8], KeyListing>.list(try ListingQuery(prefix: [], limits: Limits())).reply(last).next == nil, "cursor 0: done")

        let valued = prefixShape.adapt(.array([.bulkString(ByteBuffer(string: "0")),
                                               .array([.array([name("p/v"), .bulkString(ByteBuffer(string: "[1]")), .integer(4), .integer(-1)])])]))
        let items = try StoreCommand<[UInt8], KeyListing>.list(try ListingQuery(prefix: [], values: true, limits: Limits())).reply(valued).items
        #expect(items == [KeyListing.Item(key: Array("p/v".utf8), value: Array("[1]".utf8), revision: 4, ttlMilliseconds: nil)])
    }

    @Test("KVLIST's words and reply on kv-stored")
    func listingOnKVStored() throws {
        let query = try ListingQuery(prefix: Array("p/".utf8), after: Array("p/a".utf8), limit: 3, values: true, limits: Limits())
        let command = StoreCommand<ByteBuffer, KeyListing>.list(query)
        #expect(command.operation.arguments.map { String(buffer: $0) } == ["KVLIST", "p/", "AFTER", "p/a", "LIMIT", "3", "VALUES"])
        let reply = RESPValue.array([.integer(12), .null, .array([.array([.bulkString(ByteBuffer(string: "p/b")), .bulkString(ByteBuffer(string: "2")),
                                                                          .integer(11), .integer(500)])])])
        #expect(try command.reply(reply) == KeyListing(revision: 12, next: nil, items: [
            KeyListing.Item(key: Array("p/b".utf8), value: Array("2".utf8), revision: 11, ttlMilliseconds: 500),
        ]))
        #expect(throws: KVError.self) { try command.reply(.array([.integer(1), .null, .array([.bulkString(ByteBuffer(string: "k"))])])) }
        #expect(throws: KVError.self) { try command.reply(.simpleString(ByteBuffer(string: "OK"))) }
        #expect(throws: KVError.self) { try ListingQuery(prefix: [], limit: 0, limits: Limits()) }
        #expect(throws: KVError.self) { try ListingQuery(prefix: [0xFF], limits: Limits()) }
    }

    @Test("the same commands in kv-stored's words (docs/protocol.md)")
    func kvStoredWords() throws {
        func words(_ operation: StoreOperation<ByteBuffer>) -> [String] { operation.arguments.map { String(buffer: $0) } }
        let key = ByteBuffer(string: "k"), value = ByteBuffer(string: "1")
        #expect(words(.get(key: key)) == ["GET", "k"])
        #expect(words(.set(key: key, value: value, ttl: nil)) == ["SET", "k", "1"])
        #expect(words(.set(key: key, value: value, ttl: try TTL(milliseconds: 500))) == ["SET", "k", "1", "PX", "500"])
        #expect(words(.versionedSet(key: key, value: value, ttl: try TTL(milliseconds: 9), precondition: .revision(in: [3, 4])))
                == ["KVSET", "k", "1", "PX", "9", "IFREV", "3", "IFREV", "4"])
        #expect(words(.versionedSet(key: key, value: value, ttl: nil, precondition: .exists)) == ["KVSET", "k", "1", "XX"])
        #expect(words(.versionedDelete(key: key, precondition: .absent)) == ["KVDEL", "k", "NX"])
        #expect(words(.sync(key: key, since: 4, epoch: nil, initial: true)) == ["KVSYNC", "k", "SINCE", "4", "EPOCH", "", "INITIAL"])
        #expect(words(.unsubscribe(key: key)) == ["UNSUBSCRIBE", "k"])
        #expect(StoreOperation.versionedSet(key: key, value: value, ttl: nil, precondition: .none).payloadBytes == 2)
    }

    @Test("replies are read by the command that asked: values, conflicts, and the store's errors in the API's words")
    func replies() throws {
        let key = ByteBuffer(string: "k")
        #expect(try StoreCommand.get(key).reply(.null) == nil)
        #expect(try StoreCommand.delete(key).reply(.integer(1)))
        #expect(try StoreCommand.versionedSet(key, value: key, ttl: nil, precondition: .none).reply(.error(ByteBuffer(string: "CONFLICT 7"))) == .conflict(current: 7))
        #expect(try StoreCommand.versionedDelete(key, precondition: .none).reply(.array([.integer(0), .integer(5)])) == .applied(revision: 5))
        #expect(try StoreCommand.versionedGet(key).reply(.array([.bulkString(key), .integer(2), .integer(-1)]))
                == VersionedValue(value: Array("k".utf8), revision: 2, ttlMilliseconds: nil))
        let full = #expect(throws: KVError.self) { try StoreCommand.set(key, value: key, ttl: nil).reply(.error(ByteBuffer(string: "OOM over the limit"))) }
        #expect(full?.code == .storageFull)
        let refused = #expect(throws: KVError.self) { try StoreCommand.get(key).reply(.error(ByteBuffer(string: "ERR no"))) }
        #expect(refused == KVError(.storageError, "the store answered: ERR no"))
        let odd = #expect(throws: KVError.self) { try StoreCommand.versionedGet(key).reply(.array([.bulkString(key), .integer(0), .integer(-1)])) }
        #expect(odd == KVError(.storageError, "the store sent an unexpected reply"))
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

/// Reading a cluster's answers, without a server.
@Suite("Redis Cluster topology")
struct ClusterTopologyTests {
    static func node(_ host: String, _ port: Int64) -> RESPValue {
        .array([.bulkString(ByteBuffer(string: host)), .integer(port), .bulkString(ByteBuffer(string: "id"))])
    }

    @Test("CLUSTER SLOTS: each slot's master; an empty host is the node asked; gaps stay unserved; garbage is nil")
    func slots() throws {
        let reply = RESPValue.array([
            .array([.integer(0), .integer(5460), Self.node("10.0.0.1", 7000), Self.node("10.0.0.4", 7003)]),
            .array([.integer(5461), .integer(10922), Self.node("", 7001)]),
            .array([.integer(10923), .integer(16382), Self.node("10.0.0.3", 7002)]),
        ])
        let map = try #require(ClusterTopology(slotsReply: reply, defaultHost: "seed"))
        #expect(map.owner(ofSlot: 0) == ClusterNode(host: "10.0.0.1", port: 7000))
        #expect(map.owner(ofSlot: 5461) == ClusterNode(host: "seed", port: 7001))
        #expect(map.owner(ofSlot: 16382) == ClusterNode(host: "10.0.0.3", port: 7002))
        #expect(map.owner(ofSlot: 16383) == nil && map.uncoveredSlots == 1)
        #expect(map.masters.count == 3, "replicas are not masters")
        #expect(ClusterTopology(slotsReply: .error(ByteBuffer(string: "ERR This instance has cluster support disabled")), defaultHost: "x") == nil)
        #expect(ClusterTopology(slotsReply: .array([.array([.integer(5), .integer(1), Self.node("h", 1)])]), defaultHost: "x") == nil)
        #expect(ClusterTopology(slotsReply: .array([.array([.integer(0), .integer(16384), Self.node("h", 1)])]), defaultHost: "x") == nil)
    }

    @Test("MOVED and ASK are redirections (an empty host is the node that answered); other errors are not")
    func redirects() {
        #expect(ClusterRedirect(error: "MOVED 3999 127.0.0.1:6381", defaultHost: "x") == .moved(slot: 3999, to: ClusterNode(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirect(error: "ASK 3999 :6381", defaultHost: "n1") == .ask(slot: 3999, to: ClusterNode(host: "n1", port: 6381)))
        #expect(ClusterRedirect(error: "MOVED 1 [::1]:7000", defaultHost: "x") == .moved(slot: 1, to: ClusterNode(host: "::1", port: 7000)))
        #expect(ClusterRedirect(error: "CONFLICT 3", defaultHost: "x") == nil)
        #expect(ClusterRedirect(error: "MOVED 16384 h:1", defaultHost: "x") == nil)
        #expect(ClusterRedirect(error: "MOVED 1 nohost", defaultHost: "x") == nil)
    }

    @Test("--store redis-cluster://seed,seed; bad seeds are refused")
    func address() throws {
        #expect(try StoreAddress.parse("redis-cluster://10.0.0.1:7000,[::1]:7001,h") == .redisCluster(seeds: [
            ClusterNode(host: "10.0.0.1", port: 7000), ClusterNode(host: "::1", port: 7001), ClusterNode(host: "h", port: 6379),
        ]))
        #expect(try StoreAddress.parse("valkey-cluster://h:1").description == "redis-cluster://h:1")
        #expect(throws: KVError.self) { try StoreAddress.parse("redis-cluster://h:1,") }
        #expect(throws: KVError.self) { try StoreAddress.parse("redis-cluster://h:99999") }
    }
}

@Suite("Store credentials")
struct StoreCredentialsTests {
    @Test("read from KV_STORE_PASSWORD and KV_STORE_USER; none without a password; refused for kv-stored")
    func environment() throws {
        let both = ["KV_STORE_PASSWORD": "p w", "KV_STORE_USER": "kv"]
        #expect(StoreCredentials.fromEnvironment { both[$0] } == StoreCredentials(user: "kv", password: "p w"))
        #expect(StoreCredentials.fromEnvironment { ["KV_STORE_PASSWORD": "p"][$0] } == StoreCredentials(user: nil, password: "p"))
        #expect(StoreCredentials.fromEnvironment { ["KV_STORE_USER": "kv", "KV_STORE_PASSWORD": ""][$0] } == nil)
        let login = StoreCredentials(password: "p")
        #expect(throws: KVError.self) { try StoreAddress.parse("/run/kvserver/kv-stored.sock").check(credentials: login) }
        try StoreAddress.parse("redis://h").check(credentials: login)
        try StoreAddress.parse("redis-cluster://h:1").check(credentials: login)
        try StoreAddress.parse("/run/kvserver/kv-stored.sock").check(credentials: nil)
    }
}
