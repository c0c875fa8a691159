import NIOCore

/// Group commit for one event loop (Redis's before-sleep AOF flush): connections whose replies
/// acknowledge writes register here during an event-loop tick; at the end of the tick the log
/// is committed once — one write, and with `appendfsync always` one fsync — and then all their
/// replies go out. Without it each connection paid its own fsync.
///
/// `@unchecked Sendable`: created by the server for one event loop and used only on it.
final class CommitBatch: @unchecked Sendable {
    private let log: AppendLog
    let eventLoop: any EventLoop
    private var waiting: [StoreConnectionHandler] = []
    private var scheduled = false

    init(log: AppendLog, eventLoop: any EventLoop) {
        self.log = log
        self.eventLoop = eventLoop
    }

    /// Holds `handler`'s replies until the end of this tick's commit.
    func add(_ handler: StoreConnectionHandler) {
        eventLoop.assertInEventLoop()
        waiting.append(handler)
        guard !scheduled else { return }
        scheduled = true
        // Runs after every read of this tick has been handled: they all share one commit.
        eventLoop.execute { self.run() }
    }

    private func run() {
        scheduled = false
        log.commitOrDie()
        let handlers = waiting
        waiting.removeAll(keepingCapacity: true)
        for handler in handlers { handler.committed() }
    }
}

/// The commit batch of each of the server's event loops.
struct CommitBatches: Sendable {
    private let byLoop: [ObjectIdentifier: CommitBatch]

    init(log: AppendLog?, loops: [any EventLoop]) {
        var byLoop: [ObjectIdentifier: CommitBatch] = [:]
        if let log {
            for loop in loops { byLoop[ObjectIdentifier(loop)] = CommitBatch(log: log, eventLoop: loop) }
        }
        self.byLoop = byLoop
    }

    func batch(for loop: any EventLoop) -> CommitBatch? { byLoop[ObjectIdentifier(loop)] }
}
