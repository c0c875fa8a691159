import KVCore
import NIOCore
import RESP

/// KvServer on Redis/Valkey (docs/scaling.md): kv-stored's commands (`GET`, `SET`, `DEL`,
/// `KVGET`, `KVSET`, `KVDEL`, `KVSYNC`, `SUBSCRIBE`) as calls of the Redis functions below,
/// laid out as `RedisKeyLayout` says. Both clients (kv-fcgi's blocking one, kv-ws's pipelined
/// one) speak kv-stored's commands and read kv-stored's replies; on a Redis store each command
/// passes through `translate`, so the code above the clients does not know which store it has.
///
/// Each function runs atomically on the server: the condition check, the write, the revision
/// and the change event (`SPUBLISH` on the key's channel, with kv-stored's payload
/// `set:<rev>:<value>` / `deleted:<rev>`) are one step, as in kv-stored. Expiry is Redis's
/// own and takes no revision: it reaches subscribers through the keyspace event
/// `__keyevent@0__:expired` (see `change(fromPush:)`).
public enum RedisFunctions {
    /// Lua (Redis 7 functions). Revisions are compared as decimal strings (a Lua number holds
    /// integers exactly only up to 2^53); `%d` keeps large revisions out of exponent notation.
    /// keys[1] is always the key's hash `kv:{g}:<key>` (also its channel), keys[2] its group's
    /// hash `kv:{g}` (`n`: last revision, `e`: epoch, made on first use: a group that is lost
    /// with the data gets a new epoch, so a resume from before the loss is a reset).
    public static let code = #"""
    #!lua name=kvserver
    local function current(key)
      return redis.call('HGET', key, 'r') or '0'
    end
    local function epoch(group)
      local e = redis.call('HGET', group, 'e')
      if e then return e end
      local t = redis.call('TIME')
      e = t[1] .. '.' .. t[2]
      redis.call('HSET', group, 'e', e)
      return e
    end
    local function bump(group)
      epoch(group)
      return redis.call('HINCRBY', group, 'n', 1)
    end
    -- Conditions from args[from]: NX | XX | IFREV r [IFREV r ...] (0: absent).
    local function holds(cur, args, from)
      local word = args[from]
      if word == nil then return true end
      if word == 'NX' then return cur == '0' end
      if word == 'XX' then return cur ~= '0' end
      local i = from
      while args[i] == 'IFREV' do
        if args[i + 1] == cur then return true end
        i = i + 2
      end
      return false
    end
    redis.register_function{function_name = 'kv_get', flags = {'no-writes'}, callback = function(keys, args)
      local fields = redis.call('HMGET', keys[1], 'v', 'r')
      if not fields[1] then return nil end
      return {fields[1], tonumber(fields[2]), redis.call('PTTL', keys[1])}
    end}
    -- args: value, ttl ms (0: none), condition...
    redis.register_function('kv_set', function(keys, args)
      local cur = current(keys[1])
      if not holds(cur, args, 3) then return redis.error_reply('CONFLICT ' .. cur) end
      local rev = string.format('%d', bump(keys[2]))
      redis.call('HSET', keys[1], 'v', args[1], 'r', rev)
      if args[2] ~= '0' then redis.call('PEXPIRE', keys[1], args[2]) else redis.call('PERSIST', keys[1]) end
      redis.call('SPUBLISH', keys[1], 'set:' .. rev .. ':' .. args[1])
      return tonumber(rev)
    end)
    -- args: condition...
    redis.register_function('kv_del', function(keys, args)
      local cur = current(keys[1])
      if not holds(cur, args, 1) then return redis.error_reply('CONFLICT ' .. cur) end
      if cur == '0' then return {0, tonumber(redis.call('HGET', keys[2], 'n') or '0')} end
      local rev = string.format('%d', bump(keys[2]))
      redis.call('DEL', keys[1])
      redis.call('SPUBLISH', keys[1], 'deleted:' .. rev)
      return {1, tonumber(rev)}
    end)
    -- KVSYNC without a history: args: since ('' for none), epoch, initial ('1'/'0'). A resume is
    -- live when the key is still at the subscriber's revision, else a reset with the state.
    redis.register_function('kv_sync', function(keys, args)
      local e = epoch(keys[2])
      local fields = redis.call('HMGET', keys[1], 'v', 'r')
      local at = fields[2] or redis.call('HGET', keys[2], 'n') or '0'
      local state = {'absent', tonumber(at)}
      if fields[1] then state = {'set', tonumber(at), fields[1]} end
      if args[1] ~= '' then
        if args[2] == e and fields[2] == args[1] then return {'live', e, tonumber(at), {}} end
        return {'reset', e, tonumber(at), {state}}
      end
      if args[3] == '1' then return {'live', e, tonumber(at), {state}} end
      return {'live', e, tonumber(at), {}}
    end)
    -- KVLIST on one server: from the SCAN cursor args[1] ('0': the start), the hashes whose names
    -- match args[2], at most args[3] of them, each its name, or with args[4] == '1'
    -- {name, value, rev, pttl}; a key that expired is left out. SCAN steps of COUNT 1 (about one
    -- hash bucket each), so a page stops at the limit without skipping a key: a step that would
    -- go past it is left for the next page. A page's first step alone past the limit is split:
    -- its names sorted bytewise, the first args[3] taken, and the cursor '<cursor>:<hex of the
    -- last name>' resumes that step after them. At most 10 steps per key asked for.
    -- Returns {next cursor ('0': done), items}.
    local function before(a, b)  -- bytewise a < b (Lua's < follows the locale)
      for i = 1, math.min(#a, #b) do
        local x, y = string.byte(a, i), string.byte(b, i)
        if x ~= y then return x < y end
      end
      return #a < #b
    end
    redis.register_function{function_name = 'kv_list', flags = {'no-writes', 'allow-cross-slot-keys'}, callback = function(keys, args)
      local cursor, skip = string.match(args[1], '^(%d+)$'), nil
      if not cursor then
        local hex
        cursor, hex = string.match(args[1], '^(%d+):(%x+)$')
        if not cursor or #hex % 2 == 1 then
          return redis.error_reply('BADCURSOR on a Redis store, after takes the next of the page before (a SCAN cursor), not a key')
        end
        skip = hex:gsub('..', function(h) return string.char(tonumber(h, 16)) end)
      end
      local limit = tonumber(args[3])
      local items, steps = {}, 0
      repeat
        local step = redis.call('SCAN', cursor, 'MATCH', args[2], 'COUNT', 1)
        local found = {}
        for _, name in ipairs(step[2]) do
          local fields = redis.call('HMGET', name, 'v', 'r')
          if fields[1] and (skip == nil or before(skip, name)) then
            local item = name
            if args[4] == '1' then item = {name, fields[1], tonumber(fields[2]), redis.call('PTTL', name)} end
            found[#found + 1] = {name, item}
          end
        end
        if #items > 0 and #items + #found > limit then break end
        if #found > limit then
          table.sort(found, function(a, b) return before(a[1], b[1]) end)
          for i = 1, limit do items[i] = found[i][2] end
          local last = found[limit][1]:gsub('.', function(c) return string.format('%02x', string.byte(c)) end)
          return {cursor .. ':' .. last, items}
        end
        for _, entry in ipairs(found) do items[#items + 1] = entry[2] end
        cursor = step[1]
        skip = nil
        steps = steps + 1
      until cursor == '0' or #items >= limit or steps >= limit * 10
      return {cursor, items}
    end}
    """#

    /// The keyspace event naming each key Redis expires (needs `notify-keyspace-events Ex`).
    public static let expiredChannel = "__keyevent@0__:expired"

    public static func load<A: CommandArgument>() -> [A] {
        [A("FUNCTION"), A("LOAD"), A("REPLACE"), A(code)]
    }

    /// How a translated command's reply becomes the reply kv-stored would have sent.
    public enum ReplyShape: Sendable {
        /// Already kv-stored's.
        case same
        /// `GET`: the value or null, from `kv_get`'s `[value, rev, pttl]`.
        case value
        /// `SET`: OK, from `kv_set`'s revision.
        case ok
        /// `DEL`: 1 or 0, from `kv_del`'s `[deleted, rev]`.
        case deletedCount
        /// `KVLIST`: `[null, next, items]` from `kv_list`'s `[cursor, items]`: the layout's
        /// names turned back into keys, those outside `prefix` dropped (the SCAN pattern's `*`
        /// in `kv:{*}:` can match more than digits), the rest sorted by key.
        case listing(prefix: [UInt8])

        public func adapt(_ reply: RESPValue) -> RESPValue {
            switch (self, reply) {
            case (.value, .array(let items)) where !items.isEmpty: items[0]
            case (.ok, .integer): .simpleString(ByteBuffer(string: "OK"))
            case (.deletedCount, .array(let items)) where !items.isEmpty: items[0]
            case (.listing(let prefix), .array(let page)) where page.count == 2: Self.listing(page[0], page[1], prefix: prefix) ?? reply
            default: reply
            }
        }

        private static func listing(_ cursor: RESPValue, _ names: RESPValue, prefix: [UInt8]) -> RESPValue? {
            guard let cursorText = cursor.string, case .array(let entries) = names else { return nil }
            var items: [(key: [UInt8], item: RESPValue)] = []
            for entry in entries {
                var fields: [RESPValue] = []
                let name: RESPValue
                if case .array(let parts) = entry, !parts.isEmpty {
                    name = parts[0]
                    fields = Array(parts.dropFirst())
                } else {
                    name = entry
                }
                guard case .bulkString(let bytes) = name, let key = RedisKeyLayout.key(of: Array(bytes.readableBytesView)) else { return nil }
                guard key.starts(with: prefix) else { continue }
                let keyValue = RESPValue.bulkString(ByteBuffer(bytes: key))
                items.append((key, fields.isEmpty ? keyValue : .array([keyValue] + fields)))
            }
            items.sort { $0.key.lexicographicallyPrecedes($1.key) }
            let next: RESPValue = cursorText == "0" ? .null : cursor
            return .array([.null, next, .array(items.map(\.item))])
        }
    }

    /// `operation` as the Redis command that does the same on a Redis store, with the shape of
    /// its reply. Commands about no key (`PING`, `HELLO`, …) pass unchanged.
    public static func translate<A: CommandArgument>(_ operation: StoreOperation<A>) -> (command: [A], reply: ReplyShape) {
        if case .list(let prefix, let after, let limit, let values) = operation { return listing(prefix: prefix, after: after, limit: limit, values: values) }
        guard let key = operation.key else { return (operation.arguments, .same) }
        let (dataKey, groupKey) = RedisKeyLayout.names(of: key.bytes)
        let data = A(bytes: dataKey), group = A(bytes: groupKey)
        func call(_ function: String, _ arguments: [A]) -> [A] {
            [A("FCALL"), A(function), A("2"), data, group] + arguments
        }
        /// kv_set's TTL argument: milliseconds, 0 for none.
        func ttlArgument(_ ttl: TTL?) -> A { A(String(ttl?.milliseconds ?? 0)) }
        switch operation {
        case .get: return ([A("FCALL_RO"), A("kv_get"), A("1"), data], .value)
        case .versionedGet: return ([A("FCALL_RO"), A("kv_get"), A("1"), data], .same)
        case .set(_, let value, let ttl): return (call("kv_set", [value, ttlArgument(ttl)]), .ok)
        case .versionedSet(_, let value, let ttl, let precondition):
            return (call("kv_set", [value, ttlArgument(ttl)] + StoreOperation.condition(precondition)), .same)
        case .delete: return (call("kv_del", []), .deletedCount)
        case .versionedDelete(_, let precondition): return (call("kv_del", StoreOperation.condition(precondition)), .same)
        case .sync(_, let since, let epoch, let initial):
            return (call("kv_sync", [A(since.map { String($0) } ?? ""), A(epoch ?? ""), A(initial ? "1" : "0")]), .same)
        case .subscribe: return ([A("SSUBSCRIBE"), data], .same)
        case .unsubscribe: return ([A("SUNSUBSCRIBE"), data], .same)
        // None has a key: taken above. (The clients refuse prefix subscriptions on Redis before
        // translating; were one sent, Redis would refuse KVPSYNC, and its PSUBSCRIBE would
        // receive nothing of the sharded channels.)
        case .list, .psubscribe, .punsubscribe, .prefixSync, .other: return (operation.arguments, .same)
        }
    }

    /// `KVLIST` as one step of `SCAN` on a Redis server (docs/scaling.md, "Listing keys"):
    /// about `limit` names of the whole keyspace are looked at per page, so a page holds the
    /// matching ones among them, sorted, and `next` is SCAN's cursor, not a key.
    static func listing<A: CommandArgument>(prefix: A, after: A?, limit: Int, values: Bool) -> (command: [A], reply: ReplyShape) {
        let pattern = Array("kv:{*}:".utf8) + PrefixPattern.pattern(of: prefix.bytes)
        return ([A("FCALL_RO"), A("kv_list"), A("0"), after ?? A("0"), A(bytes: pattern), A(String(limit)), A(values ? "1" : "0")],
                .listing(prefix: prefix.bytes))
    }


    /// The cluster slot of a command's key, or nil for a command about no key.
    public static func routingSlot<A>(_ operation: StoreOperation<A>) -> Int? {
        operation.key.map { RedisKeyLayout.slot(ofKey: $0.bytes) }
    }

    /// A change from a Redis push: a sharded message on a key's channel, or the expiry of a key
    /// (which has no revision: 0). Nil for anything else.
    public static func change(fromPush elements: [RESPValue]) -> StoreChange? {
        guard elements.count == 3, case .bulkString(let channel) = elements[1], case .bulkString(let payload) = elements[2] else { return nil }
        switch elements[0].string {
        case "smessage":
            guard let key = RedisKeyLayout.key(of: Array(channel.readableBytesView)),
                  let change = StoreChange(channel: ByteBuffer(bytes: key), payload: payload)
            else { return nil }
            return change
        case "message" where channel.readableBytesView.elementsEqual(expiredChannel.utf8):
            guard let key = RedisKeyLayout.key(of: Array(payload.readableBytesView)) else { return nil }
            return StoreChange(key: ByteBuffer(bytes: key), kind: .expired, revision: 0, value: nil)
        default:
            return nil
        }
    }
}

/// A command argument as each client holds it: `[UInt8]` (kv-fcgi) or `ByteBuffer` (kv-ws).
public protocol CommandArgument {
    init(_ text: String)
    init(bytes: [UInt8])
    var bytes: [UInt8] { get }
    var byteCount: Int { get }
    /// A word of kv-stored's commands, made once per process (the request path sends one or two per command).
    static func word(_ word: CommandWord) -> Self
}

/// The fixed words of the commands `StoreOperation` writes.
public enum CommandWord: Int, CaseIterable, Sendable {
    case get, set, del, px, kvget, kvset, kvdel, kvsync, subscribe, unsubscribe, since, epoch, initial, nx, xx, ifrev, kvlist, after, limit, values
    case psubscribe, punsubscribe, kvpsync

    var text: String {
        switch self {
        case .get: "GET"
        case .set: "SET"
        case .del: "DEL"
        case .px: "PX"
        case .kvget: "KVGET"
        case .kvset: "KVSET"
        case .kvdel: "KVDEL"
        case .kvsync: "KVSYNC"
        case .subscribe: "SUBSCRIBE"
        case .unsubscribe: "UNSUBSCRIBE"
        case .since: "SINCE"
        case .epoch: "EPOCH"
        case .initial: "INITIAL"
        case .nx: "NX"
        case .xx: "XX"
        case .ifrev: "IFREV"
        case .kvlist: "KVLIST"
        case .after: "AFTER"
        case .limit: "LIMIT"
        case .values: "VALUES"
        case .psubscribe: "PSUBSCRIBE"
        case .punsubscribe: "PUNSUBSCRIBE"
        case .kvpsync: "KVPSYNC"
        }
    }
}

extension Array: CommandArgument where Element == UInt8 {
    public init(_ text: String) { self = Array(text.utf8) }
    public init(bytes: [UInt8]) { self = bytes }
    public var bytes: [UInt8] { self }
    public var byteCount: Int { count }
    public static func word(_ word: CommandWord) -> [UInt8] { arrayWords[word.rawValue] }
}

extension ByteBuffer: CommandArgument {
    public init(_ text: String) { self.init(string: text) }
    public var bytes: [UInt8] { Array(readableBytesView) }
    public var byteCount: Int { readableBytes }
    public static func word(_ word: CommandWord) -> ByteBuffer { bufferWords[word.rawValue] }
}

// Copy-on-write values, so sharing them is safe.
private let arrayWords = CommandWord.allCases.map { Array($0.text.utf8) }
private let bufferWords = CommandWord.allCases.map { ByteBuffer(string: $0.text) }
