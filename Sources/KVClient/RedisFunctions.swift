/// KvServer on a Redis/Valkey server (docs/scaling.md): the versioned commands kv-stored has
/// (`KVGET`, `KVSET`, `KVDEL`) as Redis functions, loaded by each front-end connection
/// (`FUNCTION LOAD REPLACE`, idempotent). Each runs atomically on the server: the condition
/// check, the write, the revision and the change event are one step, as in kv-stored.
///
/// Layout: a key `k` is the hash `kv:k` with fields `v` (the value's JSON text) and `r` (its
/// revision); the TTL is the hash's. The global revision counter is `kv:revision`. A change is
/// published on the channel named after the key, with kv-stored's payload (`set:<rev>:<value>`,
/// `deleted:<rev>`), so a subscriber reads either store the same way. Expiry is Redis's own: an
/// expired key is gone for every read, but takes no revision and publishes nothing (what that
/// means for subscribers is in docs/scaling.md).
///
/// Replies match kv-stored's commands exactly, so the same reply readers serve both stores.
public enum RedisFunctions {
    public static let library = "kvserver"
    public static let revisionKey = "kv:revision"

    /// The Redis key holding `key`.
    public static func dataKey(_ key: [UInt8]) -> [UInt8] { Array("kv:".utf8) + key }

    /// Lua (Redis 7 functions). Revisions are compared as decimal strings (a Lua number holds
    /// integers exactly only up to 2^53); `%d` keeps large revisions out of exponent notation.
    public static let code = #"""
    #!lua name=kvserver
    local function current(key)
      return redis.call('HGET', key, 'r') or '0'
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
    -- keys: data key, revision counter; args: key, value, ttl ms (0: none), condition...
    redis.register_function('kv_set', function(keys, args)
      local cur = current(keys[1])
      if not holds(cur, args, 4) then return redis.error_reply('CONFLICT ' .. cur) end
      local rev = redis.call('INCR', keys[2])
      redis.call('HSET', keys[1], 'v', args[2], 'r', string.format('%d', rev))
      if args[3] ~= '0' then redis.call('PEXPIRE', keys[1], args[3]) else redis.call('PERSIST', keys[1]) end
      redis.call('PUBLISH', args[1], string.format('set:%d:', rev) .. args[2])
      return rev
    end)
    -- keys: data key, revision counter; args: key, condition...
    redis.register_function('kv_del', function(keys, args)
      local cur = current(keys[1])
      if not holds(cur, args, 2) then return redis.error_reply('CONFLICT ' .. cur) end
      if cur == '0' then return {0, tonumber(redis.call('GET', keys[2]) or '0')} end
      local rev = redis.call('INCR', keys[2])
      redis.call('DEL', keys[1])
      redis.call('PUBLISH', args[1], string.format('deleted:%d', rev))
      return {1, rev}
    end)
    """#

    public static func load() -> [[UInt8]] {
        [Array("FUNCTION".utf8), Array("LOAD".utf8), Array("REPLACE".utf8), Array(code.utf8)]
    }

    public static func get(_ key: [UInt8]) -> [[UInt8]] {
        [Array("FCALL_RO".utf8), Array("kv_get".utf8), Array("1".utf8), dataKey(key)]
    }

    public static func set(_ key: [UInt8], value: [UInt8], ttlMilliseconds: Int64?, condition: [String]) -> [[UInt8]] {
        [Array("FCALL".utf8), Array("kv_set".utf8), Array("2".utf8), dataKey(key), Array(revisionKey.utf8), key, value,
         Array(String(ttlMilliseconds ?? 0).utf8)] + condition.map { Array($0.utf8) }
    }

    public static func delete(_ key: [UInt8], condition: [String]) -> [[UInt8]] {
        [Array("FCALL".utf8), Array("kv_del".utf8), Array("2".utf8), dataKey(key), Array(revisionKey.utf8), key]
            + condition.map { Array($0.utf8) }
    }
}
