import KVCore
import NIOCore

/// The life of one pipelined connection to a store, without I/O: `StoreConnection` tells it
/// each event (a request, a connection made, failed or lost, a reply, a timer) and does what
/// it answers. Generic over the connection and over what waits for it, so tests drive it with
/// plain values and a clock of their own (StoreConnectionStateTests).
///
/// Invariants kept here and nowhere else: requests made while connecting wait in order and
/// go out in that order once the handshake is done (or all fail together); while the store is
/// unreachable requests fail at once until the backoff delay has passed; subscriptions are
/// remembered only once acknowledged, and are restored after a reconnect (reported once);
/// one watchdog per connection closes it when the store stops answering.
struct StoreConnectionState<Connection, Waiter> {
    enum Phase {
        case idle
        case connecting(waiters: [Waiter])
        /// `generation` tells this connection from earlier ones (a late event of a closed
        /// connection must not touch its successor).
        case connected(Connection, generation: Int)
        /// Unreachable: requests fail until then.
        case waiting(until: NIODeadline)
        case closed
    }

    private(set) var phase = Phase.idle
    /// How many connections were made: the generation of the current one.
    private var generations = 0
    /// The subscribed keys and prefixes (acknowledged by the store): subscribed again on each new connection.
    private(set) var subscriptions = Set<Topic<ByteBuffer>>()
    private var backoff = ReconnectBackoff()
    /// The connection was lost while it held subscriptions, and they are not restored yet.
    private var lostSubscriptions = false
    /// Requests written and not yet answered, and whether any reply came since the watchdog was armed.
    private var outstanding = 0
    private var answered = false
    private var watchdogArmed = false

    // MARK: - Requests

    enum RequestAction {
        /// Write it on this connection.
        case write(Connection)
        /// Start connecting; the waiter is kept until then.
        case connect
        /// Kept until the connection being made is ready.
        case queued
        /// Fail it at once: the client is closed, or the store unreachable (nil: closed).
        case fail(retryInMilliseconds: Int64?)
    }

    /// A request wants the connection at `now`; `waiter` is kept when it must wait.
    mutating func request(_ waiter: Waiter, now: NIODeadline) -> RequestAction {
        switch phase {
        case .connected(let connection, _):
            return .write(connection)
        case .connecting(var waiters):
            phase = .idle  // drops the phase's reference, so the append below does not copy the queue
            waiters.append(waiter)
            phase = .connecting(waiters: waiters)
            return .queued
        case .closed:
            return .fail(retryInMilliseconds: nil)
        case .waiting(let until) where now < until:
            return .fail(retryInMilliseconds: (until - now).nanoseconds / 1_000_000)
        case .idle, .waiting:
            phase = .connecting(waiters: [waiter])
            return .connect
        }
    }

    /// A request was written: the generation of the connection to arm the watchdog for, when
    /// it must be (one timer per connection).
    mutating func sent() -> Int? {
        outstanding += 1
        guard !watchdogArmed, case .connected(_, let generation) = phase else { return nil }
        watchdogArmed = true
        answered = false
        return generation
    }

    /// A request was answered (or failed with its connection).
    mutating func replied() {
        outstanding -= 1
        answered = true
    }

    enum WatchdogAction {
        case none
        /// Replies came meanwhile: arm it again.
        case rearm
        /// Nothing came while requests waited: close this connection (its requests fail).
        case close(Connection)
    }

    /// The watchdog armed for the connection of `generation` fired.
    mutating func watchdogFired(generation: Int) -> WatchdogAction {
        watchdogArmed = false
        guard case .connected(let current, generation) = phase, outstanding > 0 else { return .none }
        guard answered else { return .close(current) }
        watchdogArmed = true
        answered = false
        return .rearm
    }

    // MARK: - The connection

    enum ConnectedAction {
        /// Write these waiting requests, in order; `restored`: the subscriptions are back
        /// after a loss (report it); `generation`: the connection's, for its later events.
        case ready(waiters: [Waiter], restored: Int?, generation: Int)
        /// Closed meanwhile: close the new connection.
        case discard
    }

    /// `connection` is made and its handshake (with the subscriptions) done.
    mutating func connected(_ connection: Connection) -> ConnectedAction {
        guard case .connecting(let waiters) = phase else { return .discard }
        generations += 1
        phase = .connected(connection, generation: generations)
        backoff.succeeded()
        guard lostSubscriptions else { return .ready(waiters: waiters, restored: nil, generation: generations) }
        lostSubscriptions = false
        return .ready(waiters: waiters, restored: subscriptions.count, generation: generations)
    }

    /// Connecting (or its handshake) failed at `now`: the waiters to fail, the delay before
    /// the next attempt, and whether to make it unasked (subscriptions wait to be restored).
    mutating func connectFailed(now: NIODeadline) -> (waiters: [Waiter], retryInMilliseconds: Int64, reconnect: Bool)? {
        guard case .connecting(let waiters) = phase else { return nil }
        let delay = backoff.failed()
        phase = .waiting(until: now + .milliseconds(delay))
        return (waiters, delay, lostSubscriptions)
    }

    /// The connection of `generation` closed. With subscriptions: their number, to report
    /// them interrupted and reconnect at once (nothing else would ask for the connection back).
    mutating func connectionLost(generation: Int) -> Int? {
        guard case .connected(_, generation) = phase else { return nil }
        phase = .idle
        guard !subscriptions.isEmpty else { return nil }
        lostSubscriptions = true
        return subscriptions.count
    }

    /// A reconnect timer fired: true when a connection is to be made now.
    mutating func reconnectDue() -> Bool {
        switch phase {
        case .idle, .waiting:
            phase = .connecting(waiters: [])
            return true
        default:
            return false
        }
    }

    /// Closed for good: the connection to close and the waiters to fail.
    mutating func close() -> (connection: Connection?, waiters: [Waiter]) {
        defer { phase = .closed }
        switch phase {
        case .connected(let connection, _): return (connection, [])
        case .connecting(let waiters): return (nil, waiters)
        default: return (nil, [])
        }
    }

    // MARK: - Subscriptions

    /// The store acknowledged `topic`'s subscription.
    mutating func subscribed(_ topic: Topic<ByteBuffer>) { subscriptions.insert(topic) }

    /// `topic` is unsubscribed by the client: the connection to tell, if there is one (a new
    /// one will not subscribe it).
    mutating func unsubscribed(_ topic: Topic<ByteBuffer>) -> Connection? {
        subscriptions.remove(topic)
        guard case .connected(let connection, _) = phase else { return nil }
        return connection
    }

    /// The store ended `key`'s subscription by itself: true when it was held.
    mutating func dropped(_ key: ByteBuffer) -> Bool { subscriptions.remove(.key(key)) != nil }
}
