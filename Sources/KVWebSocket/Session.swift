import KVCore
import NIOConcurrencyHelpers

/// One outgoing WebSocket message waiting in a session's queue. Change notifications carry
/// their key (a newer one supersedes an older one when the client is slow); replies do not.
struct Outgoing: Conflatable {
    var text: [UInt8]
    var conflationKey: [UInt8]?
    var byteCost: Int { text.count + 32 }
}

/// A WebSocket connection's outgoing side: a `ConflatingQueue` behind a lock (the subscription
/// hub enqueues from kv-stored's event loop), and a wake-up stream for the writer task.
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
    }

    public let id: Int
    private let state: NIOLockedValueBox<State>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    let wakeups: AsyncStream<Void>
    private let closeContinuation: AsyncStream<Closing>.Continuation
    /// Close requests, for the task that must act even while the writer is stuck in a write
    /// to a client that does not read.
    let closeRequests: AsyncStream<Closing>

    init(id: Int, limits: OutputLimits, onFirstConflation: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.id = id
        self.onFirstConflation = onFirstConflation
        self.state = NIOLockedValueBox(State(queue: ConflatingQueue(limits: limits)))
        (wakeups, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (closeRequests, closeContinuation) = AsyncStream.makeStream(of: Closing.self, bufferingPolicy: .bufferingOldest(1))
    }

    /// Called once, when the session first drops superseded changes for a slow client.
    private let onFirstConflation: @Sendable (Int) -> Void

    /// Queues a message; a change notification passes its key so it can be conflated.
    func send(_ message: ServerMessage, conflationKey: [UInt8]? = nil) {
        let (result, firstConflation) = state.withLockedValue { state -> (ConflatingQueue<Outgoing>.AppendResult, Int?) in
            guard !state.finished, state.closing == nil else { return (.dropped, nil) }
            let result = state.queue.append(Outgoing(text: message.text, conflationKey: conflationKey))
            if result == .overflow { state.closing = .outputLimit }
            guard state.queue.conflatedCount > 0, !state.reportedConflation else { return (result, nil) }
            state.reportedConflation = true
            return (result, state.queue.conflatedCount)
        }
        if let firstConflation { onFirstConflation(firstConflation) }
        if result == .overflow { closeContinuation.yield(.outputLimit) }
        if result != .dropped && result != .queued { wakeContinuation.yield() }
    }

    /// Asks for the WebSocket to be closed.
    func close(_ reason: Closing) {
        let first = state.withLockedValue { state -> Bool in
            guard state.closing == nil else { return false }
            state.closing = reason
            return true
        }
        if first { closeContinuation.yield(reason) }
        wakeContinuation.yield()
    }

    /// What the writer should do next: messages to write, or a close.
    func next(maxBytes: Int) -> (messages: [Outgoing], closing: Closing?) {
        state.withLockedValue { state in
            if let closing = state.closing { return ([], closing) }
            return (state.queue.take(maxBytes: maxBytes), nil)
        }
    }

    var conflatedCount: Int { state.withLockedValue { $0.queue.conflatedCount } }

    /// Ends the session's queue; the writer exits.
    func finish() {
        state.withLockedValue { $0.finished = true }
        wakeContinuation.finish()
        closeContinuation.finish()
    }
}
