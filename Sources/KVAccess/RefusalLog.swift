import Dispatch
import Logging
import NIOConcurrencyHelpers

/// At most `perSecond` events a second pass; the rest are counted and reported with the next
/// one that passes. Pure: time comes in as an argument.
public struct RateLimit: Sendable {
    public let perSecond: Int
    private var windowStart: UInt64 = 0
    private var passed = 0
    private var suppressed = 0

    public init(perSecond: Int) { self.perSecond = perSecond }

    /// Whether an event at `nanoseconds` (a monotonic clock) passes, and how many events were
    /// held back since the last one that passed.
    public mutating func admit(at nanoseconds: UInt64) -> (passes: Bool, heldBack: Int) {
        if passed == 0 || nanoseconds &- windowStart >= 1_000_000_000 {
            windowStart = nanoseconds
            passed = 0
        }
        guard passed < perSecond else {
            suppressed += 1
            return (false, 0)
        }
        passed += 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}

/// The log line of each refused request (401 or 403), at info, with the identity's id (never
/// the token), rate-limited so a flood of bad requests cannot fill the journal.
public final class RefusalLog: Sendable {
    private let logger: Logger
    private let limit: NIOLockedValueBox<RateLimit>
    private let clock: @Sendable () -> UInt64

    public init(logger: Logger, perSecond: Int = 20, clock: @escaping @Sendable () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) {
        self.logger = logger
        self.limit = NIOLockedValueBox(RateLimit(perSecond: perSecond))
        self.clock = clock
    }

    /// `status`: 401 (no or bad credentials) or 403 (not allowed).
    public func refused(status: Int, operation: String, identity: String, key: String, reason: String, requestID: String = "-") {
        let now = clock()
        let (passes, heldBack) = limit.withLockedValue { $0.admit(at: now) }
        guard passes else { return }
        var metadata: Logger.Metadata = [
            "http.status": "\(status)", "kv.op": "\(operation)", "kv.identity": "\(identity)", "kv.key": "\(key)",
            "reason": "\(reason)", "request.id": "\(requestID)",
        ]
        if heldBack > 0 { metadata["kv.refusals_not_logged"] = "\(heldBack)" }
        logger.info("request refused", metadata: metadata)
    }
}
