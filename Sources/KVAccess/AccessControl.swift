import Dispatch
import KVCore
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// The daemons' handle on access control: the policy of the access file in force, replaced on
/// reload (SIGHUP) only by a file that reads without error, so a bad edit never opens or locks
/// the service. Without a file the service is open, as the seed API says.
public final class AccessControl: Sendable {
    /// The access file, or nil for the open service.
    public let path: String?
    /// Unix time in milliseconds (injected by tests).
    public let now: @Sendable () -> Int64
    private let current: NIOLockedValueBox<(policy: AccessPolicy, generation: Int)>

    /// An open service (no access file).
    public init(now: @escaping @Sendable () -> Int64 = AccessControl.unixMilliseconds) {
        self.path = nil
        self.now = now
        self.current = NIOLockedValueBox((AccessPolicy.open, 0))
    }

    /// The policy of a file read already (tests, and `load`).
    public init(path: String?, policy: AccessPolicy, now: @escaping @Sendable () -> Int64 = AccessControl.unixMilliseconds) {
        self.path = path
        self.now = now
        self.current = NIOLockedValueBox((policy, 0))
    }

    /// Reads the access file at `path`; nil makes the open service.
    public static func load(path: String?, now: @escaping @Sendable () -> Int64 = AccessControl.unixMilliseconds) async throws(AccessFileError) -> AccessControl {
        guard let path else { return AccessControl(now: now) }
        return AccessControl(path: path, policy: try await AccessPolicy.parse(try readFile(path)), now: now)
    }

    public var policy: AccessPolicy { current.withLockedValue { $0.policy } }
    /// Goes up by one at each reload that took effect.
    public var generation: Int { current.withLockedValue { $0.generation } }

    /// Reads the file again; on success its policy is in force from the next request on, on
    /// failure the old one stays and the error says why (with the line).
    @discardableResult
    public func reload() async -> Result<AccessPolicy, AccessFileError> {
        guard let path else { return .success(policy) }
        do throws(AccessFileError) {
            let policy = try await AccessPolicy.parse(try Self.readFile(path))
            current.withLockedValue { $0 = (policy, $0.generation + 1) }
            return .success(policy)
        } catch {
            return .failure(error)
        }
    }

    /// The one startup line about access control, so an open service is never a surprise.
    public func logStartup(_ logger: Logger) {
        let policy = self.policy
        if policy.isOpen {
            logger.notice("access control is off: no --access-file, so every client may read, write, delete and subscribe to every key (docs/access.md)")
        } else {
            logger.notice("access control on", metadata: ["kv.access_file": "\(path ?? "-")", "kv.access": "\(policy.summary)"])
        }
    }

    /// SIGHUP: reads the file again and logs the outcome (a failure names the file's line).
    /// Returns whether new rules took effect.
    @discardableResult
    public func reloadLogged(_ logger: Logger) async -> Bool {
        guard let path else {
            logger.notice("SIGHUP: nothing to reload (no --access-file)")
            return false
        }
        switch await reload() {
        case .success(let policy):
            logger.notice("access file reloaded", metadata: ["kv.access_file": "\(path)", "kv.access": "\(policy.summary)"])
            return true
        case .failure(let error):
            logger.error("access file not reloaded: the previous rules stay in force", metadata: ["kv.access_file": "\(path)", "error": "\(error)"])
            return false
        }
    }

    public func authenticate(_ credential: Credential) async -> Authentication {
        await policy.authenticate(credential, now: now())
    }

    /// For threads outside Swift concurrency (kv-fcgi's workers): static tokens answer at once;
    /// a JWT not yet verified waits for its check on the concurrency pool. Never call it from a
    /// task: it blocks its thread.
    public func authenticateBlocking(_ credential: Credential) -> Authentication {
        let policy = self.policy
        let now = now()
        if let known = policy.authenticateCached(credential, now: now) { return known }
        return Self.wait { await policy.authenticate(credential, now: now) }
    }

    public func reloadLoggedBlocking(_ logger: Logger) {
        _ = Self.wait { await self.reloadLogged(logger) }
    }

    public static func loadBlocking(path: String?) throws(AccessFileError) -> AccessControl {
        try wait { () async -> Result<AccessControl, AccessFileError> in
            do throws(AccessFileError) { return .success(try await load(path: path)) } catch { return .failure(error) }
        }.get()
    }

    /// Runs `work` as a task and blocks the calling thread (not a task's) until it finishes.
    private static func wait<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
        let result = NIOLockedValueBox<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await work()
            result.withLockedValue { $0 = value }
            done.signal()
        }
        done.wait()
        guard let value = result.withLockedValue({ $0 }) else { preconditionFailure("the task signalled before setting its result") }
        return value
    }

    /// A whole file (at most `AccessPolicy.maxFileBytes`), for the access file and its secrets.
    public static func read(_ path: String) throws(AccessFileError) -> [UInt8] {
        try readFile(path)
    }

    static func readFile(_ path: String) throws(AccessFileError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AccessFileError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw AccessFileError("cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
            guard bytes.count <= AccessPolicy.maxFileBytes else {
                throw AccessFileError("\(path) is larger than \(AccessPolicy.maxFileBytes) bytes")
            }
        }
    }

    public static func unixMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
