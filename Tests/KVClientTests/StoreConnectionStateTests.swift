import NIOCore
import Testing
@testable import KVClient

/// kv-ws's store connection as a state machine: events in, decisions out, time given by hand.
@Suite("Store connection state machine (no sockets, no sleeps)")
struct StoreConnectionStateTests {
    final class Link {}
    typealias Machine = StoreConnectionState<Link, String>

    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let key = ByteBuffer(string: "k")

    /// A machine connected on `link`, and that connection's generation.
    func connected(_ link: Link) -> (Machine, Int) {
        var machine = Machine()
        guard case .connect = machine.request("first", now: t0), case .ready(_, _, let generation) = machine.connected(link) else {
            Issue.record("did not connect")
            return (machine, 0)
        }
        return (machine, generation)
    }

    @Test("requests made while connecting wait, in order, and go out once connected")
    func queuedInOrder() {
        var machine = Machine()
        guard case .connect = machine.request("a", now: t0) else { Issue.record("no connect"); return }
        guard case .queued = machine.request("b", now: t0), case .queued = machine.request("c", now: t0) else { Issue.record("not queued"); return }
        let link = Link()
        guard case .ready(let waiters, nil, _) = machine.connected(link) else { Issue.record("not ready"); return }
        #expect(waiters == ["a", "b", "c"])
        guard case .write(let on) = machine.request("d", now: t0) else { Issue.record("not written"); return }
        #expect(on === link)
    }

    @Test("a failed connection fails its waiters; requests then fail at once until the backoff has passed")
    func backoff() {
        var machine = Machine()
        _ = machine.request("a", now: t0)
        _ = machine.request("b", now: t0)
        guard let (waiters, delay, reconnect) = machine.connectFailed(now: t0) else { Issue.record("not connecting"); return }
        #expect(waiters == ["a", "b"] && delay > 0 && !reconnect)
        guard case .fail(let retry?) = machine.request("c", now: t0 + .milliseconds(delay - 1)) else { Issue.record("did not fail fast"); return }
        #expect(retry >= 0 && retry < delay)
        guard case .connect = machine.request("d", now: t0 + .milliseconds(delay)) else { Issue.record("did not retry"); return }
        // A second failure waits longer.
        guard let (_, second, _) = machine.connectFailed(now: t0 + .milliseconds(delay)) else { Issue.record("not connecting"); return }
        #expect(second >= delay)
    }

    @Test("subscriptions are kept once acknowledged, interrupted by a lost connection, restored (reported once) by the next")
    func subscriptionsSurviveReconnects() {
        let first = Link()
        var (machine, generation) = connected(first)
        machine.subscribed(.key(key))
        let other = machine.connectionLost(generation: generation + 1)
        #expect(other == nil)  // another connection's close: ignored
        let lost = machine.connectionLost(generation: generation)
        #expect(lost == 1)
        let due = machine.reconnectDue(), again = machine.reconnectDue()
        #expect(due && !again)  // the second: already connecting
        #expect(machine.subscriptions == [.key(key)])
        guard case .ready([], restored: 1, _) = machine.connected(Link()) else { Issue.record("not restored"); return }
        // Lost again without subscriptions: nothing to report.
        _ = machine.unsubscribed(.key(key))
        guard case .connected(_, let now) = machine.phase else { Issue.record("not connected"); return }
        let quiet = machine.connectionLost(generation: now)
        #expect(quiet == nil)
    }

    @Test("a failed reconnect with subscriptions to restore asks for another attempt unasked")
    func reconnectsForSubscriptions() {
        var (machine, generation) = connected(Link())
        machine.subscribed(.key(key))
        _ = machine.connectionLost(generation: generation)
        let due = machine.reconnectDue()
        #expect(due)
        guard let (waiters, _, reconnect) = machine.connectFailed(now: t0) else { Issue.record("not connecting"); return }
        #expect(waiters.isEmpty && reconnect)
    }

    @Test("unsubscribing names the connection to tell, if any; a drop by the store counts only for held keys")
    func unsubscribeAndDrop() {
        let link = Link()
        var (machine, _) = connected(link)
        machine.subscribed(.key(key))
        let told = machine.unsubscribed(.key(key))
        #expect(told === link)
        let droppedUnheld = machine.dropped(key)
        #expect(!droppedUnheld)
        machine.subscribed(.key(key))
        let droppedHeld = machine.dropped(key)
        #expect(droppedHeld && machine.subscriptions.isEmpty)
        var idle = Machine()
        let none = idle.unsubscribed(.key(key))
        #expect(none == nil)
    }

    @Test("the watchdog: one per connection; re-armed while replies come; closes a connection that stopped answering")
    func watchdog() {
        let link = Link()
        var (machine, generation) = connected(link)
        let arm = machine.sent(), armed = machine.sent()
        #expect(arm == generation && armed == nil)  // one timer: the second finds it armed
        machine.replied()
        guard case .rearm = machine.watchdogFired(generation: generation) else { Issue.record("not re-armed"); return }
        guard case .close(let closing) = machine.watchdogFired(generation: generation) else { Issue.record("not closed"); return }
        #expect(closing === link)
        // Nothing outstanding: nothing to watch.
        machine.replied()
        guard case .none = machine.watchdogFired(generation: generation) else { Issue.record("fired idle"); return }
        // A timer of an older connection does nothing.
        _ = machine.sent()
        guard case .none = machine.watchdogFired(generation: generation - 1) else { Issue.record("old timer acted"); return }
    }

    @Test("closed: the connection to close and the waiters to fail; later requests fail; a connection made meanwhile is discarded")
    func close() {
        var machine = Machine()
        _ = machine.request("a", now: t0)
        let (link, waiters) = machine.close()
        #expect(link == nil && waiters == ["a"])
        guard case .fail(nil) = machine.request("b", now: t0) else { Issue.record("not refused"); return }
        guard case .discard = machine.connected(Link()) else { Issue.record("not discarded"); return }
        let due = machine.reconnectDue()
        #expect(!due)
    }
}
