import KVCore
import NIOCore
import RESP

/// What both clients say first on each new connection, and what a refusal of each step means
/// (a configuration error, not an outage: reported as a storage error with the store's reason,
/// and logged).
struct StoreHandshake<A: CommandArgument> {
    struct Step {
        var words: [A]
        /// What the store refuses when it answers this step with an error.
        var what: String
        var repliedByPush = false
        /// A replica refuses KvServer's functions with READONLY: it has its master's.
        var readOnlyAccepted = false
    }

    let address: StoreAddress
    private(set) var steps: [Step] = []

    /// `resp3`: switch to RESP3 (kv-ws: pushes are told apart from replies), with the login in
    /// `HELLO`; kv-fcgi's blocking client stays on RESP2 and logs in with `AUTH`.
    /// `changeFeed`: the connection will carry subscriptions.
    init(address: StoreAddress, credentials: StoreCredentials?, resp3: Bool, changeFeed: Bool) {
        self.address = address
        let login = "the login (\(StoreCredentials.userVariable)/\(StoreCredentials.passwordVariable))"
        if resp3 {
            steps.append(Step(words: credentials?.hello() ?? [A("HELLO"), A("3")], what: credentials == nil ? "HELLO 3" : login))
        } else if let credentials, address.isRedis {
            steps.append(Step(words: credentials.auth(), what: login))
        }
        switch address {
        case .kvStored:
            // Every change, never a conflated stream: kv-ws conflates per WebSocket client
            // itself, and exact subscribers must see every revision (past kv-stored's output
            // limit the connection is cut and they resume).
            if resp3 { steps.append(Step(words: [A("CLIENT"), A("NO-CONFLATE"), A("ON")], what: "CLIENT NO-CONFLATE")) }
        case .redis, .redisCluster:
            // Loaded on each connection (idempotent), so a restarted or replaced server is
            // ready again without an operator step.
            steps.append(Step(words: RedisFunctions.load(), what: "KvServer's functions (Redis 7 or Valkey 7.2 or later is needed)", readOnlyAccepted: true))
            // Expiries reach subscribers as keyspace events (`notify-keyspace-events` must include `Ex`).
            if changeFeed { steps.append(Step(words: [A("SUBSCRIBE"), A(RedisFunctions.expiredChannel)], what: "the expiry events' channel", repliedByPush: true)) }
        }
    }

    /// Succeeds when `reply` accepts `step`.
    func check(_ step: Step, _ reply: RESPValue) -> Result<Void, KVError> {
        guard case .error(let text) = reply else { return .success(()) }
        let reason = String(buffer: text)
        if step.readOnlyAccepted && reason.hasPrefix("READONLY") { return .success(()) }
        return .failure(KVError(.storageError, "\(address.name) refused \(step.what): \(reason)"))
    }
}
