import KVSystem
import NIOConcurrencyHelpers
import NIOCore

/// The single owner of the keyspace in a running kv-stored: one lock around it, and the
/// active-expiry timer that removes each key at its deadline.
///
/// One lock (rather than one event loop owning the data) lets connections live on any event
/// loop; every operation is short, and a change's subscriber deliveries are enqueued under the
/// same lock, which is what keeps pushes for one key in revision order.
public final class Store: Sendable {
    private struct State: Sendable {
        var keyspace: Keyspace
        /// The deadline the timer is set for, and the timer.
        var timer: (deadline: Int64, task: Scheduled<Void>)?
    }

    private let lock = KeyspaceLock()
    /// Guarded by `lock`.
    nonisolated(unsafe) private var state: State
    let timerLoop: any EventLoop
    /// Most keys one timer tick expires before yielding the lock (and rescheduling at once).
    public let expiryBatch: Int

    public init(clock: any StoreClock = SystemClock(), timerLoop: any EventLoop, expiryBatch: Int = 4096, history: HistoryLimits = HistoryLimits()) {
        self.state = State(keyspace: Keyspace(clock: clock, history: history), timer: nil)
        self.timerLoop = timerLoop
        self.expiryBatch = expiryBatch
    }

    /// Runs `body` with exclusive access to the keyspace, then makes sure the expiry timer is
    /// set for the earliest deadline (a write may have added an earlier one).
    public func withKeyspace<T>(_ body: (inout Keyspace) throws -> T) rethrows -> T {
        try lock.withLock {
            let result = try body(&state.keyspace)
            armTimer(&state)
            return result
        }
    }

    /// Timer firings are rounded up to whole milliseconds: keys expiring within the same
    /// millisecond go together, in one firing and one batch of change pushes, instead of one
    /// firing (and one write to each subscriber) per key. It costs up to 1 ms of lag. With
    /// 100,000 keys expiring over one second through kv-ws (`ONLY=expiry bench/ws.sh`), the
    /// p99 lag varied from 3.6 to 17 ms across runs on the 2-core machine, median 8.6 ms over
    /// ten runs, against 11 ms over five runs without the rounding: a modest gain within a wide
    /// spread, kept for the lower syscall load.
    static let timerGranularityNanoseconds: Int64 = 1_000_000

    private func armTimer(_ state: inout State) {
        guard let earliest = state.keyspace.nextDeadline() else { return }
        let granularity = Self.timerGranularityNanoseconds
        let next = (earliest + granularity - 1) / granularity * granularity
        if let timer = state.timer, timer.deadline <= next { return }
        state.timer?.task.cancel()
        let task = timerLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, next)))) { [weak self] () -> Void in
            self?.timerFired()
        }
        state.timer = (next, task)
    }

    private func timerFired() {
        lock.withLock {
            state.timer = nil
            state.keyspace.expireDue(limit: expiryBatch)
            armTimer(&state)
        }
    }

    /// Cancels the timer (shutdown).
    public func stop() {
        lock.withLock {
            state.timer?.task.cancel()
            state.timer = nil
        }
    }
}
