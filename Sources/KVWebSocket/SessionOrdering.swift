import KVCore
import NIOCore

/// In which order, and when, one WebSocket connection's messages are handled, without I/O:
/// `WebSocketSessionHandler` tells it what was read, sent and answered, and asks it which
/// message may go next and whether to read more (SessionOrderingTests).
///
/// The rules, kept here and nowhere else:
/// * messages are handled in the order sent;
/// * `get`/`set`/`delete` are pipelined, at most `maxInFlight` at once, and only those of one
///   ordering domain (a cluster master): a request for another waits for those in flight;
/// * `subscribe`, `unsubscribe` and `auth` wait until every earlier request is answered
///   (earlier writes are applied before the subscription changes, earlier requests are
///   answered under the identity they were sent with);
/// * nothing later is looked at while a subscription is being acknowledged or a token checked;
/// * reading pauses while `maxInFlight` messages or `maxPendingBytes` bytes wait (one message
///   is always taken, whatever its size), and resumes when they drain.
struct SessionOrdering {
    /// A message read but not yet handled.
    enum Inbound {
        case message(ClientRequest, bytes: Int)
        case rejected(String, id: [UInt8]?, bytes: Int)

        var bytes: Int {
            switch self {
            case .message(_, let bytes), .rejected(_, _, let bytes): bytes
            }
        }
    }

    /// What later messages wait for.
    enum Gate {
        case open
        case subscription
        case authentication
    }

    let maxInFlight: Int
    let maxPendingBytes: Int

    private var inbox = CircularBuffer<Inbound>()
    /// Bytes of the messages in `inbox`, and of the requests waiting for the store.
    private var inboxBytes = 0
    private var inFlightBytes = 0
    private(set) var inFlight = 0
    /// The ordering domain of the requests in flight.
    private var inFlightDomain = 0
    private(set) var gate = Gate.open
    /// The socket offered more data while reading was paused: read once the queue drains.
    private var readDeferred = false

    init(maxInFlight: Int, maxPendingBytes: Int) {
        self.maxInFlight = maxInFlight
        self.maxPendingBytes = maxPendingBytes
    }

    mutating func received(_ inbound: Inbound) {
        inbox.append(inbound)
        inboxBytes += inbound.bytes
    }

    /// The next message, if the rules let it be handled now (it leaves the queue);
    /// `domain` names a request's ordering domain.
    mutating func next(domain: (ClientMessage) -> Int) -> Inbound? {
        guard gate == .open, let head = inbox.first else { return nil }
        if case .message(let request, _) = head {
            switch request.message {
            case .subscribe, .unsubscribe, .auth:
                guard inFlight == 0 else { return nil }
            case .get, .set, .delete, .list:
                guard inFlight < maxInFlight else { return nil }
                let requestDomain = domain(request.message)
                guard inFlight == 0 || requestDomain == inFlightDomain else { return nil }
                inFlightDomain = requestDomain
            }
        }
        inbox.removeFirst()
        inboxBytes -= head.bytes
        return head
    }

    /// A request of `bytes` went to the store.
    mutating func sent(bytes: Int) {
        inFlight += 1
        inFlightBytes += bytes
    }

    /// A request of `bytes` was answered.
    mutating func answered(bytes: Int) {
        inFlight -= 1
        inFlightBytes -= bytes
    }

    /// Later messages wait until `opened()`.
    mutating func wait(for gate: Gate) { self.gate = gate }
    mutating func opened() { gate = .open }

    var mustPauseReading: Bool {
        inbox.count >= maxInFlight || inboxBytes + inFlightBytes >= maxPendingBytes
    }

    /// The socket offers more data: true to read it now, false to hold it until the queue drains.
    mutating func readRequested() -> Bool {
        guard mustPauseReading else { return true }
        readDeferred = true
        return false
    }

    /// After handling messages: true when a held read may go ahead now.
    mutating func resumeRead() -> Bool {
        guard readDeferred, !mustPauseReading else { return false }
        readDeferred = false
        return true
    }
}
