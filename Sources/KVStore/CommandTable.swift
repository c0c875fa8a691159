import RESP

/// kv-stored's command table, in the spirit of Redis's: each command's name, arity, key
/// positions and flags, in one place. `CommandProcessor.execute` checks what the table says —
/// arity, the key and value limits, the RESP2 subscriber-mode rule, whether the log must be
/// committed before the reply — once, before any handler runs, so a handler only parses its
/// options. `COMMAND`, `COMMAND INFO` and `COMMAND COUNT` answer from it, as Redis's do.
enum Command: CaseIterable {
    case get, set, del, exists, pttl, ttl, persist, dbsize, scan, ping, echo, hello, select
    case subscribe, unsubscribe, psubscribe, punsubscribe, info, client, command, config, reset, quit, bgrewriteaof
    case kvget, kvset, kvdel, kvsync, kvpsync, kvlist, kvmetrics

    struct Flags: OptionSet {
        let rawValue: UInt8
        /// May change the keyspace: the reply waits for the log.
        static let write = Flags(rawValue: 1 << 0)
        static let readonly = Flags(rawValue: 1 << 1)
        /// Operates the server rather than the data (CONFIG, BGREWRITEAOF, KVMETRICS).
        static let admin = Flags(rawValue: 1 << 2)
        static let pubsub = Flags(rawValue: 1 << 3)
        /// Allowed while a RESP2 connection has subscriptions (Redis's rule).
        static let subscriberContext = Flags(rawValue: 1 << 4)
        static let fast = Flags(rawValue: 1 << 5)

        /// Redis's names for them, as `COMMAND INFO` shows them (the subscriber-mode rule is
        /// no flag in Redis: it is shown by none).
        var names: [String] {
            [(Flags.write, "write"), (.readonly, "readonly"), (.admin, "admin"), (.pubsub, "pubsub"), (.fast, "fast")]
                .filter { contains($0.0) }.map(\.1)
        }
    }

    /// One row of the table. Arity as Redis counts it: the command name included, negative for
    /// "at least". Keys are the arguments `firstKey...lastKey` every `keyStep` (`lastKey` -1:
    /// to the last argument; 0: no keys); `value` is the argument held to the value limit (0:
    /// none).
    struct Spec {
        let name: StaticString
        let arity: Int
        let flags: Flags
        let firstKey: Int
        let lastKey: Int
        let keyStep: Int
        let value: Int

        init(_ name: StaticString, arity: Int, _ flags: Flags, keys: (first: Int, last: Int, step: Int) = (0, 0, 0), value: Int = 0) {
            self.name = name
            self.arity = arity
            self.flags = flags
            (firstKey, lastKey, keyStep) = keys
            self.value = value
        }

        func acceptsArgumentCount(_ count: Int) -> Bool {
            arity >= 0 ? count == arity : count >= -arity
        }

        /// The positions of the key arguments in a command of `count` arguments.
        func keyPositions(count: Int) -> StrideThrough<Int> {
            guard firstKey > 0, keyStep > 0 else { return stride(from: 1, through: 0, by: 1) }
            let last = lastKey < 0 ? count + lastKey : lastKey
            return stride(from: firstKey, through: min(last, count - 1), by: keyStep)
        }
    }

    private static let oneKey = (first: 1, last: 1, step: 1)
    private static let everyKey = (first: 1, last: -1, step: 1)

    /// Names are letters (and a dash) only, which `RESPArguments.matches` relies on.
    var spec: Spec {
        switch self {
        case .get: Spec("GET", arity: 2, [.readonly, .fast], keys: Self.oneKey)
        case .set: Spec("SET", arity: -3, [.write], keys: Self.oneKey, value: 2)
        case .del: Spec("DEL", arity: -2, [.write], keys: Self.everyKey)
        case .exists: Spec("EXISTS", arity: -2, [.readonly, .fast], keys: Self.everyKey)
        case .pttl: Spec("PTTL", arity: 2, [.readonly, .fast], keys: Self.oneKey)
        case .ttl: Spec("TTL", arity: 2, [.readonly, .fast], keys: Self.oneKey)
        case .persist: Spec("PERSIST", arity: 2, [.write, .fast], keys: Self.oneKey)
        case .dbsize: Spec("DBSIZE", arity: 1, [.readonly, .fast])
        case .scan: Spec("SCAN", arity: -2, [.readonly])
        case .ping: Spec("PING", arity: -1, [.fast, .subscriberContext])
        case .echo: Spec("ECHO", arity: 2, [.fast])
        case .hello: Spec("HELLO", arity: -1, [.fast])
        case .select: Spec("SELECT", arity: 2, [.fast])
        // Channels are keys here: each is held to the key limit like any other key.
        case .subscribe: Spec("SUBSCRIBE", arity: -2, [.pubsub, .subscriberContext], keys: Self.everyKey)
        case .unsubscribe: Spec("UNSUBSCRIBE", arity: -1, [.pubsub, .subscriberContext], keys: Self.everyKey)
        // Patterns are not keys (an escaped prefix may be longer than a key): the handler checks them.
        case .psubscribe: Spec("PSUBSCRIBE", arity: -2, [.pubsub, .subscriberContext])
        case .punsubscribe: Spec("PUNSUBSCRIBE", arity: -1, [.pubsub, .subscriberContext])
        case .info: Spec("INFO", arity: -1, [])
        case .client: Spec("CLIENT", arity: -2, [])
        case .command: Spec("COMMAND", arity: -1, [])
        case .config: Spec("CONFIG", arity: -3, [.admin])
        case .reset: Spec("RESET", arity: 1, [.fast, .subscriberContext])
        case .quit: Spec("QUIT", arity: -1, [.fast, .subscriberContext])
        case .bgrewriteaof: Spec("BGREWRITEAOF", arity: 1, [.admin])
        case .kvget: Spec("KVGET", arity: 2, [.readonly, .fast], keys: Self.oneKey)
        case .kvset: Spec("KVSET", arity: -3, [.write], keys: Self.oneKey, value: 2)
        case .kvdel: Spec("KVDEL", arity: -2, [.write], keys: Self.oneKey)
        case .kvsync: Spec("KVSYNC", arity: -2, [.readonly], keys: Self.oneKey)
        case .kvpsync: Spec("KVPSYNC", arity: -2, [.readonly], keys: Self.oneKey)
        case .kvlist: Spec("KVLIST", arity: -2, [.readonly], keys: Self.oneKey)
        case .kvmetrics: Spec("KVMETRICS", arity: 1, [.admin])
        }
    }

    /// The table in dispatch order, most frequent first, built once (`spec` is a switch and
    /// `allCases` a new array on every call).
    static let table: [(command: Command, spec: Spec)] =
        ([.get, .set] + allCases.filter { $0 != .get && $0 != .set }).map { ($0, $0.spec) }

    /// The row for the command `args` names, matched by bytes ignoring case, with no allocation.
    static func lookup(_ args: RESPArguments) -> (command: Command, spec: Spec)? {
        table.first { args.matches(0, $0.spec.name) }
    }

    init?(name: String) {
        let wanted = name.uppercased()
        guard let found = Self.allCases.first(where: { $0.spec.name.description == wanted }) else { return nil }
        self = found
    }
}
