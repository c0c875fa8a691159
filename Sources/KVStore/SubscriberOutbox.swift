import KVCore
import NIOConcurrencyHelpers

/// A connection's `ChangeSubscriber`: a `ConflatingQueue` of its changes behind its own small lock, so the store
/// can enqueue under its lock without waiting for the connection, plus a wake-up callback that
/// schedules a drain on the connection's event loop.
public final class SubscriberOutbox: ChangeSubscriber, Sendable {
    private let buffer: NIOLockedValueBox<ConflatingQueue<ChangePush>>
    private let wake: @Sendable () -> Void
    private let overflow: @Sendable () -> Void
    private let conflated: @Sendable (Int) -> Void

    /// `wake` and `overflow` are called from whichever thread delivers; they should hop to the
    /// connection's event loop. `conflated` is told how many changes a conflation pass dropped.
    public init(
        limits: OutputLimits,
        wake: @escaping @Sendable () -> Void,
        overflow: @escaping @Sendable () -> Void,
        conflated: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.buffer = NIOLockedValueBox(ConflatingQueue(limits: limits))
        self.wake = wake
        self.overflow = overflow
        self.conflated = conflated
    }

    public func deliver(_ push: ChangePush) {
        let (result, dropped) = buffer.withLockedValue { buffer in
            let before = buffer.conflatedCount
            let result = buffer.append(push)
            return (result, buffer.conflatedCount - before)
        }
        if dropped > 0 { conflated(dropped) }
        switch result {
        case .wake: wake()
        case .overflow: overflow()
        case .queued, .dropped: break
        }
    }

    public func take(maxBytes: Int) -> [ChangePush] {
        buffer.withLockedValue { $0.take(maxBytes: maxBytes) }
    }

    public var conflatedCount: Int { buffer.withLockedValue { $0.conflatedCount } }

    /// Whether superseded changes may be dropped (`CLIENT NO-CONFLATE`); without it the
    /// connection sees every change, or is disconnected at the output limit.
    public var conflates: Bool {
        get { buffer.withLockedValue { $0.conflates } }
        set { buffer.withLockedValue { $0.conflates = newValue } }
    }
}
