import Foundation
import KVClient
import KVDaemon
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand it out again at once).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw POSIXFailure(what: "bind 127.0.0.1:0") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// The stores the front ends run on; the end-to-end suites run once on each.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case kvStored = "kv-stored"
    case redis = "redis-server"

    var testDescription: String { "on \(rawValue)" }
}

/// The whole HTTP stack as users deploy it: kv-stored, kv-fcgi and a real nginx running the
/// production site file (socket folder and port substituted by scripts/nginx-local-conf.sh,
/// the same generator `make run` uses), on a free loopback port.
final class HTTPStack {
    let dir: TempDirectory
    let port: Int
    var store: StoreProcess?
    /// The store when the stack runs on a Redis server instead of kv-stored (`redis: true`).
    var redis: DaemonProcess?
    var fcgi: DaemonProcess?
    var ws: DaemonProcess?
    var nginx: DaemonProcess?
    let fcgiThreads: Int
    let groupArguments: [String]
    let storeArguments: [String]

    var storeSocket: String { dir.file("kv-stored.sock") }
    var redisSocket: String { dir.file("redis.sock") }
    /// What the front ends are given as `--store`.
    var storeAddress: String { externalStore ?? (usesRedis ? "redis+unix://\(redisSocket)" : storeSocket) }
    let usesRedis: Bool
    /// A store this stack does not run (a `RedisCluster`'s address).
    let externalStore: String?
    /// redis-server's `requirepass`, when the stack's Redis asks for a login.
    let redisPassword: String?
    /// Extra environment of kv-fcgi and kv-ws (`KV_STORE_PASSWORD`, say); read at each (re)start.
    var frontEndEnvironment: [String: String] = [:]
    var fcgiSocket: String { dir.file("kv-fcgi.sock") }
    var wsSocket: String { dir.file("kv-ws.sock") }
    var webSocketURL: String { "ws://127.0.0.1:\(port)/ws" }

    /// `storeArguments` go to kv-stored, at start and at every restart (a `--data-dir`, say).
    /// `redis`: the store is a redis-server (on a unix socket) instead of kv-stored.
    convenience init(fcgiThreads: Int = 4, fcgiArguments: [String] = [], inheritedSocket: Bool = false, wsArguments: [String]? = nil,
         storeArguments: [String] = [], redis: Bool = false) throws {
        try self.init(fcgiThreads: fcgiThreads, fcgiArguments: fcgiArguments, inheritedSocket: inheritedSocket, wsArguments: wsArguments,
                      storeArguments: storeArguments, on: redis ? .redis : .kvStored)
    }

    /// Front ends (nginx, kv-fcgi, kv-ws) on a store run elsewhere, e.g. a `RedisCluster`.
    convenience init(wsArguments: [String]? = [], externalStore: String) throws {
        try self.init(wsArguments: wsArguments, on: .redis, externalStore: externalStore)
    }

    /// The stack on `store`: the end-to-end suites run on each (`StoreKind.allCases`).
    init(fcgiThreads: Int = 4, fcgiArguments: [String] = [], inheritedSocket: Bool = false, wsArguments: [String]? = nil,
         storeArguments: [String] = [], on kind: StoreKind, externalStore: String? = nil, redisPassword: String? = nil) throws {
        let redis = kind == .redis
        self.externalStore = externalStore
        self.redisPassword = redisPassword
        if let redisPassword { frontEndEnvironment[StoreCredentials.passwordVariable] = redisPassword }
        dir = try TempDirectory()
        chmod(dir.path, 0o755)  // nginx's workers (nobody when we are root) must reach the sockets
        port = try freeLoopbackPort()
        self.fcgiThreads = fcgiThreads
        groupArguments = getuid() == 0 ? ["--socket-group", "nogroup"] : []
        self.storeArguments = storeArguments
        usesRedis = redis
        if externalStore != nil {
            // The store is someone else's to run.
        } else if redis {
            try startRedis()
        } else {
            store = try StoreProcess(socketPath: storeSocket, arguments: groupArguments + storeArguments)
        }
        try startFCGI(fcgiArguments, inherited: inheritedSocket)
        if let wsArguments { try startWS(wsArguments) }

        let generator = Binaries.packageRoot.appendingPathComponent("scripts/nginx-local-conf.sh").path
        let conf = try run(generator, [dir.path, String(port)])
        #expect(conf.status == 0, "\(conf.output)")
        try conf.output.write(toFile: dir.file("nginx.conf"), atomically: true, encoding: .utf8)
        nginx = try DaemonProcess("/usr/sbin/nginx", ["-p", dir.file("nginx"), "-c", dir.file("nginx.conf"), "-g", "daemon off;"],
                                  logPath: dir.file("nginx.out"))
        let ready = eventually(within: 20) {
            // kv-fcgi's own liveness: answered whatever the access rules say about keys.
            (try? HTTPClient(port: port).send("GET", "/healthz"))?.status == 200
        }
        guard ready else { throw StartFailure(description: "the stack did not answer: \(nginxLog)\n\(fcgi?.log ?? "")") }
    }

    /// Starts kv-fcgi on its own socket, or (`inherited`) on a socket this process binds and
    /// hands over as fd 0, the way spawn-fcgi does.
    func startFCGI(_ extra: [String] = [], inherited: Bool = false) throws {
        var socketArguments = ["--socket", fcgiSocket] + groupArguments
        var stdin: FileHandle?
        if inherited {
            let fd = try SocketFile.listen(path: fcgiSocket, mode: 0o666, group: nil, backlog: 128)
            stdin = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            socketArguments = []
        }
        fcgi = try DaemonProcess(
            Binaries.path("kv-fcgi"),
            socketArguments + ["--store", storeAddress, "--threads", String(fcgiThreads), "--log-level", "debug"] + extra,
            logPath: dir.file("kv-fcgi.log"), standardInput: stdin, environment: frontEndEnvironment)
        guard eventually(within: 20, { isAccepting(fcgiSocket) }) else {
            throw StartFailure(description: "kv-fcgi did not start: \(fcgi?.log ?? "")")
        }
    }

    /// Starts kv-ws; ready once it says so (its socket then has its group).
    func startWS(_ extra: [String] = []) throws {
        let daemon = try DaemonProcess(
            Binaries.path("kv-ws"),
            ["--socket", wsSocket, "--store", storeAddress, "--log-level", "debug"] + groupArguments + extra,
            logPath: dir.file("kv-ws.log"), environment: frontEndEnvironment)
        ws = daemon
        guard eventually(within: 20, { daemon.log.contains("kv-ws ready") }) else {
            throw StartFailure(description: "kv-ws did not start: \(daemon.log)")
        }
    }

    func restartStore() throws {
        store = try StoreProcess(socketPath: storeSocket, arguments: groupArguments + storeArguments)
    }

    /// Stops redis-server with SHUTDOWN: it inherits this test process's blocked signals, so
    /// it would leave a SIGTERM pending.
    func stopRedis() {
        guard let daemon = redis else { return }
        redis = nil
        _ = try? run("redis-cli", ["-s", redisSocket] + redisLogin + ["shutdown", "nosave"])
        _ = daemon.terminate(limit: 5)
    }

    /// Starts redis-server (memory only) on `redisSocket`; ready once the socket accepts.
    func startRedis() throws {
        let daemon = try DaemonProcess("/usr/bin/redis-server", [
            "--port", "0", "--unixsocket", redisSocket, "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
            "--notify-keyspace-events", "Ex",  // expiry events for kv-ws's subscribers (docs/scaling.md)
        ] + (redisPassword.map { ["--requirepass", $0] } ?? []), logPath: dir.file("redis.log"))
        redis = daemon
        guard eventually(within: 20, { isAccepting(redisSocket) }) else {
            throw StartFailure(description: "redis-server did not start: \(daemon.log)")
        }
    }

    // Reading the store directly with redis-cli, past the front ends.

    /// redis-cli on the store's socket (kv-stored's or redis-server's).
    func storeCLI(_ args: String...) throws -> String {
        try run("redis-cli", ["-s", usesRedis ? redisSocket : storeSocket] + redisLogin + args).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private var redisLogin: [String] { redisPassword.map { ["-a", $0, "--no-auth-warning"] } ?? [] }

    /// The store's name for KvServer's `key` (on Redis, its hash: `RedisKeyLayout`).
    func storeKey(_ key: String) -> String {
        usesRedis ? String(decoding: RedisKeyLayout.dataKey(Array(key.utf8)), as: UTF8.self) : key
    }

    /// The JSON text the store holds for `key`, "" when none.
    func storedValue(_ key: String) throws -> String {
        usesRedis ? try storeCLI("hget", storeKey(key), "v") : try storeCLI("get", key)
    }

    /// How many keys' change feeds the store has subscribers for (kv-ws holds one subscription per key).
    func storeSubscribedKeys() throws -> Int {
        if usesRedis {
            return try storeCLI("pubsub", "shardchannels").split(whereSeparator: \.isNewline).count
        }
        let stats = try storeCLI("info", "stats")
        // Split on any newline: in Swift "\r\n" is a single Character, not "\r" then "\n".
        let field = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("pubsub_channels:") }
        return field.flatMap { Int($0.dropFirst("pubsub_channels:".count).trimmingCharacters(in: .whitespaces)) } ?? -1
    }

    var nginxLog: String { (try? String(contentsOfFile: dir.file("nginx/error.log"), encoding: .utf8)) ?? "" }

    struct StartFailure: Error, CustomStringConvertible { var description: String }

    func client() -> HTTPClient { HTTPClient(port: port) }

    deinit {
        nginx?.terminate()
        ws?.terminate()
        fcgi?.terminate()
        store?.terminate()
        stopRedis()
    }
}

extension Binaries {
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

/// A TCP connection to 127.0.0.1:`port` with a receive timeout (and, optionally, a small receive buffer).
/// `source`: another loopback address to connect from (127.0.0.2, say), as a client elsewhere would.
func connectLoopback(port: Int, receiveBuffer: Int32? = nil, source: String? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXFailure(what: "socket") }
    if let source {
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            close(fd)
            throw POSIXFailure(what: "bind \(source)")
        }
    }
    if var size = receiveBuffer {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw POSIXFailure(what: "connect 127.0.0.1:\(port)")
    }
    return fd
}

/// A deliberately raw HTTP/1.1 client: it sends the request target byte for byte (URLSession
/// would normalise `%2541` or `/a/../b`), one connection per request.
struct HTTPClient {
    let port: Int
    /// The loopback address requests come from (nil: the default, 127.0.0.1).
    var source: String? = nil

    struct Response: CustomStringConvertible {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var description: String { "\(status) \(headers) \(text.prefix(300))" }
    }

    func send(_ method: String, _ target: String, body: [UInt8]? = nil, headers: [String: String] = [:]) throws -> Response {
        try send(method, Array(target.utf8), body: body, headers: headers)
    }

    func send(_ method: String, _ target: String, json: String) throws -> Response {
        try send(method, Array(target.utf8), body: Array(json.utf8))
    }

    func send(_ method: String, _ target: [UInt8], body: [UInt8]? = nil, headers: [String: String] = [:]) throws -> Response {
        try start(method, target, body: body, headers: headers).finish()
    }

    /// A request fully written, its response not yet read: many of these at once are many
    /// requests in flight at the server, without any client-side threads.
    final class Pending {
        let fd: Int32
        let isHead: Bool
        init(fd: Int32, isHead: Bool) { self.fd = fd; self.isHead = isHead }
        deinit { close(fd) }

        func finish() throws -> Response {
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = recv(fd, &chunk, chunk.count, 0)
                // A server that answers and closes while request bytes are still unread (an
                // over-long request line, say) ends with a reset instead of a FIN: after a
                // response, that is its end (`parse` checks the response is whole).
                if n < 0 && errno == ECONNRESET && !received.isEmpty { break }
                if n < 0 { throw POSIXFailure(what: "recv") }
                if n == 0 { break }
                received += chunk[0..<n]
            }
            return try HTTPClient.parse(received, isHead: isHead)
        }
    }

    func start(_ method: String, _ target: String, json: String) throws -> Pending {
        try start(method, Array(target.utf8), body: Array(json.utf8))
    }

    func start(_ method: String, _ target: [UInt8], body: [UInt8]? = nil, headers: [String: String] = [:]) throws -> Pending {
        let fd = try connectLoopback(port: port, source: source)
        let pending = Pending(fd: fd, isHead: method == "HEAD")
        var head = Array("\(method) ".utf8) + target + Array(" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".utf8)
        for (name, value) in headers { head += Array("\(name): \(value)\r\n".utf8) }
        if let body { head += Array("Content-Length: \(body.count)\r\n".utf8) }
        head += Array("\r\n".utf8)
        try sendAll(fd, head)
        if let body { try sendAll(fd, body) }
        return pending
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 { throw POSIXFailure(what: "send") }
            offset += n
        }
    }

    struct ParseFailure: Error {}

    static func parse(_ bytes: [UInt8], isHead: Bool) throws -> Response {
        guard let split = bytes.indices.first(where: { i in i + 3 < bytes.count && bytes[i...i + 3].elementsEqual([13, 10, 13, 10]) })
        else { throw ParseFailure() }
        let lines = String(decoding: bytes[0..<split], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw ParseFailure() }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(bytes[(split + 4)...])
        if headers["transfer-encoding"] == "chunked" && !isHead { body = try dechunk(body) }
        // A response cut short (the connection reset mid-body) is no response.
        if !isHead, let length = headers["content-length"].flatMap({ Int($0) }), body.count != length { throw ParseFailure() }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            guard let lineEnd = bytes[i...].firstIndex(of: 13) else { throw ParseFailure() }
            guard let size = Int(String(decoding: bytes[i..<lineEnd], as: UTF8.self), radix: 16) else { throw ParseFailure() }
            if size == 0 { break }
            guard lineEnd + 2 + size <= bytes.count else { throw ParseFailure() }  // cut short
            out += bytes[(lineEnd + 2)..<(lineEnd + 2 + size)]
            i = lineEnd + 2 + size + 2
        }
        return out
    }
}
