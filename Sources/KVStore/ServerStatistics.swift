import Atomics

#if canImport(Glibc)
import Glibc
#endif

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

    /// Resident set size of this process in bytes, from /proc (0 where unavailable).
    public static func residentBytes() -> Int {
        #if os(Linux)
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0, resident = 0
        guard withUnsafeMutablePointer(to: &size, { s in
            withUnsafeMutablePointer(to: &resident) { r in
                withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
            }
        }) == 2 else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
        #else
        return 0
        #endif
    }

}
