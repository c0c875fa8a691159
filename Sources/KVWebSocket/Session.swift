import KVAccess
import KVCore
import NIOConcurrencyHelpers
import NIOCore

/// One outgoing WebSocket message waiting in a session's queue. Change notifications carry
/// their key (a newer one supersedes an older one when the client is slow); replies do not.
/// The message is its whole frame (`ServerFrame`), so one change fanned out to many sessions
/// is one shared buffer, written as it is.
struct Outgoing: Conflatable {
    var frame: ByteBuffer
    var conflationKey: [UInt8]?
    var byteCost: Int { frame.readableBytes + 32 }
}

/// A WebSocket connection's outgoing side, shared by the threads that produce its messages:
/// replies are made on the connection's event loop, changes on the subscription connection's.
///
/// Messages wait in a `ConflatingQueue` behind a lock; the connection's handler drains it onto
/// the socket while the socket takes data, once per event-loop tick however many messages came
/// in that tick (one flush for all of them).
public final class Session: Sendable {
    public enum Closing: Sendable, Equatable {
        /// The queue overflowed: close with 1008 (policy violation).
        case outputLimit
        /// The server is shutting down: close with 1001 (going away).
        case shutdown
    }

    private struct State: Sendable {
        var queue: ConflatingQueue<Outgoing>
        var closing: Closing?
        var finished = false
        var reportedConflation = false
        /// A drain is due on the event loop (or waits for the socket to become writable).
        var drainDue = false
    }

    public let id: Int
    let eventLoop: any EventLoop
    private let state: NIOLockedValueBox<State>
    /// The connection's handler once the upgrade is done; used on `eventLoop` only.
    private let handler: NIOLoopBoundBox<WebSocketSessionHandler?>
    /// Called once, when the session first drops superseded changes for a slow client.
    private let onFirstConflation: @Sendable (Int) -> Void
    /// Whose rules decide which keys reach the session through a prefix subscription: read by
    /// the hub on the store connection's event loop, replaced by the handler on its own.
    private let watcher = NIOLockedValueBox<Identity?>(nil)

    init(id: Int, eventLoop: any EventLoop, limits: OutputLimits, onFirstConflation: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.id = id
        self.eventLoop = eventLoop
        self.onFirstConflation = onFirstConflation
        self.state = NIOLockedValueBox(State(queue: ConflatingQueue(limits: limits)))
        self.handler = .makeEmptyBox(valueType: WebSocketSessionHandler.self, eventLoop: eventLoop)
    }

    /// Connects the session to its channel handler (on `eventLoop`); a close asked for before
    /// then is carried out now.
    func attach(_ handler: WebSocketSessionHandler) {
        self.handler.value = handler
        if let closing = state.withLockedValue({ $0.closing }) { handler.startClose(closing) } else { handler.drain() }
    }

    /// Queues a message; a change notification passes its key so it can be conflated.
    func send(_ message: ServerMessage, conflationKey: [UInt8]? = nil) {
        send(frame: message.framed(), conflationKey: conflationKey)
    }

    /// Queues a message already framed (`ServerMessage.framed`; a change sent to many sessions
    /// is framed once).
    func send(frame: ByteBuffer, conflationKey: [UInt8]? = nil) {
        let (result, drain, firstConflation, conflated) = state.withLockedValue { state -> (ConflatingQueue<Outgoing>.AppendResult, Bool, Int?, Int) in
            guard !state.finished, state.closing == nil else { return (.dropped, false, nil, 0) }
            let conflatedBefore = state.queue.conflatedCount
            let result = state.queue.append(Outgoing(frame: frame, conflationKey: conflationKey))
            let conflated = state.queue.conflatedCount - conflatedBefore
            if result == .overflow { state.closing = .outputLimit }
            let drain = result != .overflow && !state.drainDue
            if drain { state.drainDue = true }
            guard state.queue.conflatedCount > 0, !state.reportedConflation else { return (result, drain, nil, conflated) }
            state.reportedConflation = true
            return (result, drain, state.queue.conflatedCount, conflated)
        }
        if conflated > 0 { WSMetrics.conflated.increment(by: conflated) }
        if result == .dropped { WSMetrics.dropped.increment() }
        if let firstConflation { onFirstConflation(firstConflation) }
        if result == .overflow {
            eventLoop.execute { self.handler.value?.startClose(.outputLimit) }
        } else if drain {
            // Deferred to the end of the current tick, so a burst of messages costs one flush.
            eventLoop.execute { self.handler.value?.drain() }
        }
    }

    /// From now on, changes through prefix subscriptions reach the session only for the keys
    /// `identity` may watch (nil: none).
    func watch(as identity: Identity?) {
        watcher.withLockedValue { $0 = identity }
    }

    /// Whether a change of `key` that came through a prefix may reach the session.
    func mayWatch(_ key: [UInt8]) -> Bool {
        watcher.withLockedValue { $0?.allows(.subscribe, key: key) ?? false }
    }

    /// The access file was reloaded: the connection presents its credentials again.
    func reauthorize() {
        eventLoop.execute { self.handler.value?.reauthorize() }
    }

    /// Asks for the WebSocket to be closed.
    func close(_ reason: Closing) {
        let first = state.withLockedValue { state -> Bool in
            guard state.closing == nil, !state.finished else { return false }
            state.closing = reason
            return true
        }
        if first { eventLoop.execute { self.handler.value?.startClose(reason) } }
    }

    /// Takes up to about `maxBytes` of queued messages for writing; once the queue is empty the
    /// next `send` schedules a drain again. Nothing is returned once a close is under way.
    func take(maxBytes: Int) -> [Outgoing] {
        state.withLockedValue { state in
            guard state.closing == nil, !state.finished else { return [] }
            let messages = state.queue.take(maxBytes: maxBytes)
            if state.queue.isEmpty { state.drainDue = false }
            return messages
        }
    }

    var conflatedCount: Int { state.withLockedValue { $0.queue.conflatedCount } }

    /// Ends the session: nothing more is queued, and what is queued is dropped.
    func finish() {
        state.withLockedValue { state in
            state.finished = true
            state.queue = ConflatingQueue(limits: state.queue.limits)
        }
    }
}
