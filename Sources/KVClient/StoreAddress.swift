import KVCore

/// Where the front ends find their data (`--store`): kv-stored's unix socket (the default), a
/// single Redis/Valkey server, or a Redis/Valkey Cluster given by seed nodes (docs/scaling.md).
public enum StoreAddress: Sendable, Equatable, CustomStringConvertible {
    /// kv-stored, at this unix socket path.
    case kvStored(path: String)
    /// A Redis or Valkey server, on a unix socket or TCP.
    case redis(RedisEndpoint)
    /// A Redis or Valkey Cluster: any of its nodes; the rest are learnt from them.
    case redisCluster(seeds: [ClusterNode])

    public enum RedisEndpoint: Sendable, Equatable {
        case unix(path: String)
        case tcp(host: String, port: Int)
    }

    /// `--store`'s help, the same in kv-fcgi and kv-ws.
    public static let optionHelp = "The store: kv-stored's unix socket, a Redis/Valkey server (redis://HOST:PORT, redis+unix:///PATH) or a Redis/Valkey Cluster (redis-cluster://HOST:PORT,HOST:PORT…; docs/scaling.md)."

    /// Reads `--store`: `redis://host[:port]` or `valkey://…` (TCP, port 6379 by default),
    /// `redis+unix:///path/to/redis.sock`, `redis-cluster://host:port[,host:port…]` (seed
    /// nodes), or anything else as kv-stored's socket path.
    public static func parse(_ text: String) throws(KVError) -> StoreAddress {
        for scheme in ["redis-cluster://", "valkey-cluster://"] where text.hasPrefix(scheme) {
            var seeds: [ClusterNode] = []
            for seed in text.dropFirst(scheme.count).split(separator: ",", omittingEmptySubsequences: false) {
                guard case .redis(.tcp(let host, let port)) = try parse("redis://" + seed) else { throw KVError(.invalidRequest, "bad seed in \(text)") }
                seeds.append(ClusterNode(host: host, port: port))
            }
            return .redisCluster(seeds: seeds)
        }
        for scheme in ["redis+unix://", "valkey+unix://"] where text.hasPrefix(scheme) {
            let path = String(text.dropFirst(scheme.count))
            guard path.hasPrefix("/") else { throw KVError(.invalidRequest, "\(scheme) needs an absolute socket path: \(scheme)/run/redis/redis.sock") }
            return .redis(.unix(path: path))
        }
        for scheme in ["redis://", "valkey://"] where text.hasPrefix(scheme) {
            var authority = Substring(text.dropFirst(scheme.count))
            if let slash = authority.firstIndex(of: "/") { authority = authority[..<slash] }
            var host = authority, port = 6379
            if authority.hasPrefix("[") {  // [IPv6]:port
                guard let close = authority.firstIndex(of: "]") else { throw KVError(.invalidRequest, "bad address \(text)") }
                host = authority[authority.index(after: authority.startIndex)..<close]
                let rest = authority[authority.index(after: close)...]
                if rest.hasPrefix(":") { guard let p = Int(rest.dropFirst()) else { throw KVError(.invalidRequest, "bad port in \(text)") }; port = p }
            } else if let colon = authority.lastIndex(of: ":") {
                host = authority[..<colon]
                guard let p = Int(authority[authority.index(after: colon)...]) else { throw KVError(.invalidRequest, "bad port in \(text)") }
                port = p
            }
            guard !host.isEmpty, (1...65535).contains(port) else { throw KVError(.invalidRequest, "bad address \(text): use \(scheme)HOST:PORT") }
            return .redis(.tcp(host: String(host), port: port))
        }
        guard !text.isEmpty else { throw KVError(.invalidRequest, "an empty store address") }
        return .kvStored(path: text)
    }

    public var description: String {
        switch self {
        case .kvStored(let path): path
        case .redis(.unix(let path)): "redis+unix://\(path)"
        case .redis(.tcp(let host, let port)): "redis://\(ClusterNode(host: host, port: port))"
        case .redisCluster(let seeds): "redis-cluster://" + seeds.map(\.description).joined(separator: ",")
        }
    }

    /// What log lines and errors call the store.
    public var name: String {
        switch self {
        case .kvStored: "kv-stored at \(description)"
        case .redis: "redis at \(description)"
        case .redisCluster: "redis cluster at \(description)"
        }
    }

    /// Whether the store is Redis/Valkey (a server or a cluster) rather than kv-stored.
    public var isRedis: Bool {
        if case .kvStored = self { return false }
        return true
    }
}

/// One node of a Redis Cluster, as `CLUSTER SLOTS` and `MOVED` name it.
public struct ClusterNode: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host.contains(":") ? "[\(host)]" : host):\(port)" }
}
