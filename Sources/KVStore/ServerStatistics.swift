import Atomics

/// Process-wide counters for INFO, updated without locks.
public final class ServerStatistics: Sendable {
    public let connectedClients = ManagedAtomic<Int>(0)
    public let totalConnections = ManagedAtomic<Int>(0)
    public let totalCommands = ManagedAtomic<Int>(0)
    public let protocolErrors = ManagedAtomic<Int>(0)
    /// Subscribers cut off because their output queue exceeded the hard limit.
    public let outputLimitDisconnects = ManagedAtomic<Int>(0)
    /// Changes dropped from subscriber queues because a newer change of the same key superseded them.
    public let conflatedChanges = ManagedAtomic<Int>(0)
    private let nextClientID = ManagedAtomic<Int>(0)
    public let startedAtMonotonicNanoseconds: Int64

    public init(now: Int64) {
        self.startedAtMonotonicNanoseconds = now
    }

    public func makeClientID() -> Int {
        nextClientID.wrappingIncrementThenLoad(ordering: .relaxed)
    }
}
