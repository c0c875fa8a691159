import KVCore
import KVSystem
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RESP

#if canImport(Glibc)
import Glibc
#endif

/// A blocking client of kv-stored over a plain POSIX unix socket, for kv-fcgi's worker threads
/// (one client per thread; not thread-safe).
///
/// It never hangs: every send and receive has a timeout, and while kv-stored is unreachable
/// calls fail at once with `KVError.Code.storageUnavailable`, retrying the connection with
/// backoff. A connection found dead when reused (kv-stored restarted) is replaced and the
/// request retried once, because nothing of it can have been applied.
public final class BlockingStoreClient {
    /// kv-stored's socket, or a Redis/Valkey server (`RedisFunctions`).
    public let address: StoreAddress
    public let credentials: StoreCredentials?
    private let logger: Logger?
    public let limits: RESPLimits
    /// Longest wait for one send or receive.
    public let timeoutMilliseconds: Int

    private var fd: Int32 = -1
    private var backoff = ReconnectBackoff()
    private var nextAttemptAt: Int64 = 0
    private var readBuffer = ByteBuffer()
    /// The masters' connections, on a cluster (made on first use; set by tests).
    var cluster: BlockingClusterRouter?
    private let reachability: StoreReachability
    /// `reachability.connections` when this client last failed to connect.
    private var connectionsAtFailure = 0

    /// Clients sharing `reachability` (kv-fcgi's workers) skip their backoff once any of them
    /// has reached kv-stored again, so all recover together when it comes back.
    public convenience init(socketPath: String, limits: RESPLimits, timeoutMilliseconds: Int = 5000, reachability: StoreReachability = StoreReachability()) {
        self.init(address: .kvStored(path: socketPath), limits: limits, timeoutMilliseconds: timeoutMilliseconds, reachability: reachability)
    }

    /// `credentials`: the login for a Redis store that asks for one.
    /// `logger`: where a cluster's topology changes are told (a failover, a resharding).
    public init(address: StoreAddress, credentials: StoreCredentials? = nil, limits: RESPLimits, timeoutMilliseconds: Int = 5000,
                reachability: StoreReachability = StoreReachability(), logger: Logger? = nil) {
        self.address = address
        self.credentials = credentials
        self.logger = logger
        self.limits = limits
        self.timeoutMilliseconds = timeoutMilliseconds
        self.reachability = reachability
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    // MARK: - Commands

    /// Sends `command` and reads its reply: on a Redis store as `RedisFunctions.translate` says,
    /// on a cluster to the master of its key's slot.
    public func send<Reply>(_ command: StoreCommand<[UInt8], Reply>) throws(KVError) -> Reply {
        try command.reply(dispatch(command.operation))
    }

    /// Sends `operations` in one pipeline (one write) and reads their replies in order: one
    /// round trip for all, instead of one each. `reply` is given each reply, or the failure
    /// that took its place, with its operation's index, as soon as it is read, so a large value
    /// need not wait in memory for the replies after it. A connection lost part way fails the
    /// operations not yet answered. On a cluster they go one at a time, each to the master of
    /// its slot.
    /// `whenSlow` is called once if the first reply has not come within `slowReplyMilliseconds`
    /// (kv-fcgi's worker then lets another thread take requests while it waits).
    public func pipeline(_ operations: [StoreOperation<[UInt8]>], whenSlow: (() -> Void)? = nil, reply: (Int, Result<RESPValue, KVError>) -> Void) {
        switch address {
        case .redisCluster:
            whenSlow?()  // one round trip per operation, perhaps to several masters
            for (index, operation) in operations.enumerated() {
                reply(index, Result { () throws(KVError) in try dispatch(operation) })
            }
        case .kvStored:
            sendPipelined(operations.map(\.arguments), whenSlow: whenSlow, reply: reply)
        case .redis:
            let translated = operations.map(RedisFunctions.translate)
            sendPipelined(translated.map(\.command), whenSlow: whenSlow) { index, result in reply(index, result.map(translated[index].reply.adapt)) }
        }
    }

    /// How long a first reply may take before a pipeline's `whenSlow` is called: well above a
    /// healthy store's round trip (tens of microseconds), well below its timeout.
    public static let slowReplyMilliseconds: Int32 = 2

    /// `pipeline`'s replies in an array (tests and tools; kv-fcgi answers each as it comes).
    public func pipeline(_ operations: [StoreOperation<[UInt8]>]) -> [Result<RESPValue, KVError>] {
        var replies: [Result<RESPValue, KVError>] = []
        replies.reserveCapacity(operations.count)
        pipeline(operations) { _, result in replies.append(result) }
        return replies
    }

    /// Any command about no key, its reply as it comes (tools and tests).
    public func request(_ words: [[UInt8]]) throws(KVError) -> RESPValue {
        try send(.other(words))
    }

    /// Succeeds when the store answers (kv-stored accepts writes whenever it answers: it exits
    /// rather than accept a write it cannot log).
    /// On a cluster, any master's answer will do: each slot's availability shows in the
    /// requests for it, and one lost master must not take every front end out of rotation.
    public func ping() throws(KVError) {
        if case .redisCluster(let seeds) = address { return try router(seeds).ping() }
        try send(.ping)
    }

    private func dispatch(_ operation: StoreOperation<[UInt8]>) throws(KVError) -> RESPValue {
        switch address {
        case .kvStored:
            return try sendCommand(operation.arguments)
        case .redis:
            let (command, shape) = RedisFunctions.translate(operation)
            return shape.adapt(try sendCommand(command))
        case .redisCluster(let seeds):
            if case .list(let prefix, let after, let limit, let values) = operation {
                let (slot, cursor) = try ClusterListing.position(after: after)
                let (command, shape) = RedisFunctions.listing(prefix: prefix, after: cursor, limit: limit, values: values)
                let cluster = router(seeds)
                return ClusterListing.continued(shape.adapt(try cluster.send(command, slot: slot)), scanning: slot, topology: cluster.slotMap)
            }
            let (command, shape) = RedisFunctions.translate(operation)
            return shape.adapt(try router(seeds).send(command, slot: RedisFunctions.routingSlot(operation)))
        }
    }

    /// The cluster's router, made on first use.
    private func router(_ seeds: [ClusterNode]) -> BlockingClusterRouter {
        if let cluster { return cluster }
        let router = BlockingClusterRouter(seeds: seeds, credentials: credentials, limits: limits, timeoutMilliseconds: timeoutMilliseconds,
                                           shared: reachability, logger: logger)
        cluster = router
        return router
    }

    /// Sends `arguments` as they are on this client's own connection: a pipeline of one.
    func sendCommand(_ arguments: [[UInt8]]) throws(KVError) -> RESPValue {
        var reply = Result<RESPValue, KVError>.failure(unavailable("no reply"))
        sendPipelined([arguments], whenSlow: nil) { _, result in reply = result }
        return try reply.get()
    }

    /// `commands` in one write, their replies in order. Retried once on a new connection when
    /// the reused one is found dead before any reply (then none of them was applied).
    private func sendPipelined(_ commands: [[[UInt8]]], whenSlow: (() -> Void)?, reply: (Int, Result<RESPValue, KVError>) -> Void) {
        var answered = 0
        var whenSlow = whenSlow
        func exchange() throws {
            try write(commands)
            if let slow = whenSlow, readBuffer.readableBytes == 0 {
                var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&ready, 1, Self.slowReplyMilliseconds) == 0 {
                    slow()
                    whenSlow = nil
                }
            }
            while answered < commands.count {
                let value = try receiveReply()
                reply(answered, .success(value))
                answered += 1
            }
        }
        let reused = fd >= 0
        do {
            try connectIfNeeded()
            try exchange()
            return
        } catch let failure as StaleConnection where reused && answered == 0 {
            _ = failure
            disconnect()
            do {
                try connectIfNeeded()
                try exchange()
                return
            } catch {
                let failure = fail(error)
                for index in answered..<commands.count { reply(index, .failure(failure)) }
            }
        } catch {
            let failure = fail(error)
            for index in answered..<commands.count { reply(index, .failure(failure)) }
        }
    }

    /// The connection died before any byte of the reply arrived.
    private struct StaleConnection: Error { var errno: Int32 }
    private struct IOFailure: Error { var message: String }

    private func fail(_ error: Error) -> KVError {
        disconnect()
        switch error {
        case let e as StaleConnection: return unavailable(String(cString: strerror(e.errno)))
        case let e as IOFailure: return unavailable(e.message)
        case let e as RESPProtocolError: return KVError(.storageError, "kv-stored broke the protocol: \(e.message)")
        case let e as KVError: return e
        default: return unavailable("\(error)")
        }
    }

    private func unavailable(_ reason: String) -> KVError {
        KVError(.storageUnavailable, "storage unavailable: \(reason)")
    }

    private func roundTrip(_ arguments: [[UInt8]]) throws -> RESPValue {
        try write(CollectionOfOne(arguments))
        return try receiveReply()
    }

    /// Writes `commands` back to back, small ones in one frame. Large values are written from
    /// their own storage rather than copied into the frame.
    private func write(_ commands: some Collection<[[UInt8]]>) throws {
        var header = ByteBuffer()
        var pieces: [(ByteBuffer?, [UInt8]?)] = []
        for arguments in commands {
            header.writeRESPArrayHeader(count: arguments.count)
            for argument in arguments {
                header.writeRESPBulkHeader(length: argument.count)
                if argument.count > 64 << 10 {
                    pieces.append((header, nil))
                    pieces.append((nil, argument))
                    header = ByteBuffer()
                    header.writeStaticString("\r\n")
                } else {
                    header.writeBytes(argument)
                    header.writeStaticString("\r\n")
                }
            }
        }
        pieces.append((header, nil))
        for (buffer, bytes) in pieces {
            if let buffer { try buffer.withUnsafeReadableBytes { try sendAll($0) } }
            if let bytes { try bytes.withUnsafeBytes { try sendAll($0) } }
        }
    }

    private func sendAll(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.send(fd, base + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN { throw StaleConnection(errno: errno) }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw IOFailure(message: "timed out sending to kv-stored") }
                throw IOFailure(message: String(cString: strerror(errno)))
            }
            offset += n
        }
    }

    private func receiveReply() throws -> RESPValue {
        var receivedAny = false
        while true {
            if readBuffer.readableBytes > 0, let value = try RESPValueDecoder.decode(buffer: &readBuffer, limits: limits) {
                readBuffer.discardReadBytes()
                return value
            }
            readBuffer.reserveCapacity(minimumWritableBytes: 64 << 10)
            let n = readBuffer.withUnsafeMutableWritableBytes { raw in recv(fd, raw.baseAddress, raw.count, 0) }
            if n > 0 {
                readBuffer.moveWriterIndex(forwardBy: n)
                receivedAny = true
            } else if n == 0 {
                if !receivedAny { throw StaleConnection(errno: ECONNRESET) }
                throw IOFailure(message: "kv-stored closed the connection mid-reply")
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                throw IOFailure(message: "timed out waiting for kv-stored")
            } else if !receivedAny && errno == ECONNRESET {
                throw StaleConnection(errno: errno)
            } else {
                throw IOFailure(message: String(cString: strerror(errno)))
            }
        }
    }

    // MARK: - Connection

    private func connectIfNeeded() throws(KVError) {
        guard fd < 0 else { return }
        let now = SystemClock().monotonicNanoseconds() / 1_000_000
        guard now >= nextAttemptAt || reachability.connections > connectionsAtFailure else {
            throw unavailable("\(address.name) is unreachable; retrying in \(nextAttemptAt - now) ms")
        }
        let socketFD: Int32
        do {
            socketFD = try Self.connect(to: address, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            nextAttemptAt = now + backoff.failed()
            connectionsAtFailure = reachability.connections
            throw unavailable("cannot connect to \(address.name): \(error.message)")
        }
        fd = socketFD
        readBuffer.clear()
        do {
            let handshake = StoreHandshake<[UInt8]>(address: address, credentials: credentials, resp3: false, changeFeed: false)
            for step in handshake.steps {
                if case .failure(let refusal) = handshake.check(step, try roundTrip(step.words)) {
                    disconnect()
                    throw refusal
                }
            }
        } catch let error as KVError {
            throw error
        } catch {
            throw fail(error)
        }
        backoff.succeeded()
        reachability.connected()
    }

    /// A connected stream socket with send and receive timeouts, or the reason there is none.
    private static func connect(to address: StoreAddress, timeoutMilliseconds: Int) throws(KVError) -> Int32 {
        func configured(_ fd: Int32) -> Int32 {
            var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }
        let path: String
        switch address {
        case .kvStored(let socketPath), .redis(.unix(let socketPath)):
            path = socketPath
        case .redisCluster:
            throw KVError(.storageUnavailable, "a cluster is reached through its nodes' addresses")
        case .redis(.tcp(let host, let port)):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0, let first = list else { throw KVError(.storageUnavailable, String(cString: gai_strerror(status))) }
            defer { freeaddrinfo(list) }
            var reason = "no address for \(host)"
            var candidate: UnsafeMutablePointer<addrinfo>? = first
            while let info = candidate {
                candidate = info.pointee.ai_next
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
                guard fd >= 0 else { continue }
                if Glibc.connect(configured(fd), info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                    var one: Int32 = 1  // requests are small and answered one at a time
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    return fd
                }
                reason = String(cString: strerror(errno))
                close(fd)
            }
            throw KVError(.storageUnavailable, reason)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw KVError(.storageUnavailable, String(cString: strerror(errno))) }
        guard var unixAddress = UnixAddress(path: path) else {
            close(fd)
            throw KVError(.storageUnavailable, "socket path too long: \(path)")
        }
        guard unixAddress.withSockaddr({ Glibc.connect(configured(fd), $0, $1) }) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw KVError(.storageUnavailable, reason)
        }
        return fd
    }

    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        readBuffer.clear()
    }
}

/// Shared by the clients of one process (kv-fcgi's workers): counts their successful
/// connections to the store, and on a cluster holds the slot map they learn, so one worker
/// that learns a new map (a failover) gives it to all, and the change is logged once.
public final class StoreReachability: Sendable {
    private let count = NIOLockedValueBox(0)
    private let map = NIOLockedValueBox<ClusterTopology?>(nil)

    public init() {}

    var connections: Int { count.withLockedValue { $0 } }
    func connected() { count.withLockedValue { $0 += 1 } }

    /// The cluster's slot map as last learnt, if any.
    var slotMap: ClusterTopology? { map.withLockedValue { $0 } }

    /// Keeps `learnt`; true when it differs from the map before.
    func learnt(_ learnt: ClusterTopology) -> Bool {
        map.withLockedValue { current in
            defer { current = learnt }
            return current != learnt
        }
    }

    /// A `MOVED` reply: `slot` is served by `node` now.
    func moved(slot: Int, to node: ClusterNode) {
        map.withLockedValue { $0?.assign(slot: slot, to: node) }
    }
}
