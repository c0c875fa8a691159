import KVCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import RESP
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Everything kv-stored needs to know to serve.
public struct StoreServerConfiguration: Sendable {
    public var socketPath: String
    /// File mode of the socket; 0660 lets the owner and the socket group (nginx's front ends) in.
    public var socketMode: UInt32 = 0o660
    /// Group to give the socket, by name; nil keeps the process's group.
    public var socketGroup: String?
    public var limits = Limits()
    public var maxArguments = 1 << 20
    public var outboxLimits = OutboxBuffer.Limits()
    public var threads = StoreServerConfiguration.defaultThreads

    /// One event loop per core.
    public static let defaultThreads = System.coreCount

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// The decoder limits that follow from the key and value limits: a frame that cannot hold a
    /// valid key or value is refused from its header, before anything is allocated for it.
    public var respLimits: RESPLimits {
        RESPLimits(maxBulkBytes: max(limits.maxKeyBytes, limits.maxValueBytes), maxElements: maxArguments)
    }
}

public struct StoreServerError: Error, CustomStringConvertible {
    public var description: String
}

/// kv-stored as a service: binds its unix socket, serves until graceful shutdown, then stops
/// accepting, answers what it has read, closes every connection and removes the socket.
public final class StoreServer: Service, Sendable {
    public let configuration: StoreServerConfiguration
    private let logger: Logger
    private let clock: any StoreClock
    private let onReady: @Sendable () -> Void

    public init(
        configuration: StoreServerConfiguration,
        logger: Logger,
        clock: any StoreClock = SystemClock(),
        onReady: @escaping @Sendable () -> Void = {}
    ) {
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        self.onReady = onReady
    }

    public func run() async throws {
        // Checked before any thread starts, so a refusal is just an error message and exit 1.
        try Self.removeStaleSocket(at: configuration.socketPath)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let store = Store(clock: clock, timerLoop: group.next())
        do {
            try await serve(group: group, store: store)
        } catch {
            store.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        store.stop()
        try await group.shutdownGracefully()
        logger.notice("kv-stored stopped")
    }

    /// Binds, serves until graceful shutdown, then quiesces. Everything that needs the event
    /// loops (the quiescing helper among them) is gone when this returns.
    private func serve(group: MultiThreadedEventLoopGroup, store: Store) async throws {
        let statistics = ServerStatistics(now: clock.monotonicNanoseconds())
        let processor = CommandProcessor(
            store: store, limits: configuration.limits, statistics: statistics, socketPath: configuration.socketPath)
        let quiesce = ServerQuiescingHelper(group: group)
        let configuration = self.configuration
        let logger = self.logger
        let path = configuration.socketPath

        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        StoreConnectionHandler(
                            processor: processor, limits: configuration.respLimits,
                            outboxLimits: configuration.outboxLimits, logger: logger))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false)
            .get()
        defer { unlink(path) }
        do {
            try Self.applyPermissions(path: path, mode: mode_t(configuration.socketMode), group: configuration.socketGroup)
        } catch {
            quiesce.initiateShutdown(promise: nil)
            throw error
        }
        logger.notice("kv-stored ready", metadata: [
            "socket": "\(path)", "threads": "\(configuration.threads)",
            "kv.max_key_bytes": "\(configuration.limits.maxKeyBytes)",
            "kv.max_value_bytes": "\(configuration.limits.maxValueBytes)",
        ])
        onReady()

        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            logger.notice("shutting down: no new connections, closing clients")
            quiesce.initiateShutdown(promise: nil)
        }
        // Every child has closed once the quiescing helper is done with the server channel.
        let done = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: done)
        try? await done.futureResult.get()
    }

    /// A socket file left by a process that died is removed; a live server's socket, or a file
    /// that is not a socket, is an error (never delete what we do not own).
    static func removeStaleSocket(at path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw StoreServerError(description: "\(path) exists and is not a socket; refusing to replace it")
        }
        if UnixSocket.isAcceptingConnections(path: path) {
            throw StoreServerError(description: "another process is already serving on \(path)")
        }
        unlink(path)
    }

    static func applyPermissions(path: String, mode: mode_t, group: String?) throws {
        if let group {
            guard let entry = getgrnam(group) else {
                throw StoreServerError(description: "socket group \"\(group)\" does not exist")
            }
            guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
                throw StoreServerError(description: "cannot give \(path) to group \(group): \(String(cString: strerror(errno)))")
            }
        }
        guard chmod(path, mode) == 0 else {
            throw StoreServerError(description: "cannot chmod \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// Small POSIX helpers for unix-domain sockets.
enum UnixSocket {
    /// Whether something accepts connections on `path` right now.
    static func isAcceptingConnections(path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }
}
