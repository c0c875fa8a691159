import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Every open WebSocket session, and the service that closes them on shutdown.
///
/// Placed after the HTTP server in the ServiceGroup, it is shut down first: every session is
/// asked to close with 1001 (going away), and the server stops once they have (or after
/// `drainTimeout`). WSCore on its own would close with 1000.
public final class SessionRegistry: Service, Sendable {
    private let sessions = NIOLockedValueBox<[Int: Session]>([:])
    private let logger: Logger
    public let drainTimeout: Duration

    public init(logger: Logger, drainTimeout: Duration = .seconds(2)) {
        self.logger = logger
        self.drainTimeout = drainTimeout
    }

    func add(_ session: Session) { sessions.withLockedValue { $0[session.id] = session } }
    func remove(_ session: Session) { sessions.withLockedValue { $0[session.id] = nil } }
    public var count: Int { sessions.withLockedValue { $0.count } }

    public func run() async throws {
        try? await gracefulShutdown()
        let open = sessions.withLockedValue { Array($0.values) }
        logger.notice("shutting down: closing websockets with 1001", metadata: ["kv.sessions": "\(open.count)"])
        for session in open { session.close(.shutdown) }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: drainTimeout)
        while count > 0 && clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
