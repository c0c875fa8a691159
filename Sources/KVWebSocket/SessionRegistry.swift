import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Every open WebSocket session, and the service that closes them on shutdown.
///
/// Placed after the HTTP server in the ServiceGroup, it is shut down first: every session is
/// asked to close with 1001 (going away), and the server stops once they have (or after
/// `drainTimeout`). WSCore on its own would close with 1000.
public final class SessionRegistry: Service, Sendable {
    private struct State {
        var sessions: [Int: Session] = [:]
        var shuttingDown = false
    }

    private let state = NIOLockedValueBox(State())
    private let logger: Logger
    public let drainTimeout: Duration

    public init(logger: Logger, drainTimeout: Duration = .seconds(2)) {
        self.logger = logger
        self.drainTimeout = drainTimeout
    }

    /// Registers a session; one opened while shutting down is asked to close with 1001 at once.
    func add(_ session: Session) {
        let late = state.withLockedValue { state -> Bool in
            state.sessions[session.id] = session
            return state.shuttingDown
        }
        if late { session.close(.shutdown) }
    }

    func remove(_ session: Session) { state.withLockedValue { _ = $0.sessions.removeValue(forKey: session.id) } }
    public var count: Int { state.withLockedValue { $0.sessions.count } }

    public func run() async throws {
        try? await gracefulShutdown()
        let open = state.withLockedValue { state -> [Session] in
            state.shuttingDown = true
            return Array(state.sessions.values)
        }
        logger.notice("shutting down: closing websockets with 1001", metadata: ["kv.sessions": "\(open.count)"])
        for session in open { session.close(.shutdown) }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: drainTimeout)
        while count > 0 && clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
