import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A Redis Cluster on loopback for the tests: 3 masters with a replica each, made by
/// `redis-cli --cluster create`, memory only, with expiry events on and a short node timeout
/// (2 s) so a failover happens quickly.
final class RedisCluster {
    struct Node {
        let port: Int
        var daemon: DaemonProcess?
    }

    let dir: TempDirectory
    private(set) var nodes: [Node] = []
    static let nodeTimeoutMilliseconds = 2000

    /// The front ends' `--store`: every master and replica as a seed.
    var address: String { "redis-cluster://" + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }

    init(masters: Int = 3) throws {
        dir = try TempDirectory()
        for _ in 0..<(masters * 2) { nodes.append(Node(port: try Self.freePortPair(avoiding: nodes.map(\.port)))) }
        for index in nodes.indices { try start(index) }
        let created = try run("redis-cli", ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "1", "--cluster-yes"])
        guard created.status == 0 else { throw StartFailure(description: "redis-cli --cluster create failed: \(created.output)") }
        guard eventually(within: 30, { nodes.allSatisfy { (try? self.cli($0.port, "cluster", "info"))?.contains("cluster_state:ok") == true } }) else {
            throw StartFailure(description: "the cluster did not become ok: \((try? cli(nodes[0].port, "cluster", "nodes")) ?? "")")
        }
        // Every node must know every other's role before a test fails one over.
        guard eventually(within: 30, { (try? self.replicas().count) == masters }) else {
            throw StartFailure(description: "the replicas did not attach: \((try? cli(nodes[0].port, "cluster", "nodes")) ?? "")")
        }
    }

    deinit { stopAll() }

    func start(_ index: Int) throws {
        let port = nodes[index].port
        let nodeDir = dir.file("n\(port)")
        try FileManager.default.createDirectory(atPath: nodeDir, withIntermediateDirectories: true)
        nodes[index].daemon = try DaemonProcess("/usr/bin/redis-server", [
            "--port", String(port), "--bind", "127.0.0.1", "--dir", nodeDir, "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", String(Self.nodeTimeoutMilliseconds),
            "--save", "", "--appendonly", "no", "--notify-keyspace-events", "Ex",
        ], logPath: dir.file("redis-\(port).log"), append: true)
        guard eventually(within: 20, { (try? self.cli(port, "ping")) == "PONG" }) else {
            throw StartFailure(description: "redis-server on \(port) did not start: \(nodes[index].daemon?.log ?? "")")
        }
    }

    /// Stops a node with SHUTDOWN (it inherits this test process's blocked SIGTERM).
    func stop(_ index: Int) {
        guard let daemon = nodes[index].daemon else { return }
        nodes[index].daemon = nil
        _ = try? run("redis-cli", ["-p", String(nodes[index].port), "shutdown", "nosave"])
        _ = daemon.terminate(limit: 5)
    }

    func stopAll() {
        for index in nodes.indices { stop(index) }
    }

    func cli(_ port: Int, _ args: String...) throws -> String { try cli(port, args) }

    func cli(_ port: Int, _ args: [String]) throws -> String {
        try run("redis-cli", ["-p", String(port)] + args).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The master each running replica follows, by port, from `CLUSTER NODES` (flags `slave`,
    /// fourth field the master's id).
    func replicas() throws -> [(replica: Int, master: Int)] {
        let port = nodes.first { $0.daemon != nil }?.port ?? nodes[0].port
        let lines = try cli(port, "cluster", "nodes").split(whereSeparator: \.isNewline).map { $0.split(separator: " ").map(String.init) }
        func portOf(_ address: String) -> Int? { address.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) } }
        var portByID: [String: Int] = [:]
        for f in lines where f.count >= 8 { portByID[f[0]] = portOf(f[1]) }
        return lines.compactMap { f in
            guard f.count >= 8, f[2].contains("slave"), !f[2].contains("fail"), let me = portOf(f[1]), let master = portByID[f[3]] else { return nil }
            return (me, master)
        }
    }

    /// The port of the master serving `slot`, from `CLUSTER NODES` asked of a running node
    /// (a master's line ends with its slot ranges: `0-5460`, `5461`, …).
    func masterPort(ofSlot slot: Int) throws -> Int? {
        let port = nodes.first { $0.daemon != nil }?.port ?? nodes[0].port
        for line in try cli(port, "cluster", "nodes").split(whereSeparator: \.isNewline) {
            let f = line.split(separator: " ")
            guard f.count >= 9, f[2].contains("master"), !f[2].contains("fail") else { continue }
            for range in f[8...] where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                guard let first = bounds.first, let last = bounds.last, (first...last).contains(slot) else { continue }
                return f[1].split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) }
            }
        }
        return nil
    }

    /// A free loopback port whose cluster bus port (port + 10000) is free too; the kernel's
    /// ephemeral ports are too high for that, so below them.
    static func freePortPair(avoiding taken: [Int]) throws -> Int {
        func free(_ port: Int) -> Bool {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
        }
        // Both the port and its cluster bus port (+10000) below Linux's ephemeral range (from
        // 32768): a bus port inside it was once taken by a test client's outgoing connection
        // between this check and redis-server's bind ("Address already in use").
        for _ in 0..<1000 {
            let port = Int.random(in: 12000..<22000)
            if !taken.contains(port), free(port), free(port + 10000) { return port }
        }
        throw StartFailure(description: "no free port pair for a cluster node")
    }

    func index(ofPort port: Int) -> Int? { nodes.firstIndex { $0.port == port } }

    struct StartFailure: Error, CustomStringConvertible { var description: String }
}
