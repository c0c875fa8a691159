import KVCore
import NIOCore
import NIOWebSocket
import Testing
@testable import KVWebSocket

/// The session's two state machines on their own: no channel, no loop, no clock.
@Suite("WebSocket session: ordering and closing rules (no sockets)")
struct SessionStateTests {
    static func request(_ message: ClientMessage) -> SessionOrdering.Inbound {
        .message(ClientRequest(message: message), bytes: 10)
    }

    @Test("a connection's subscriptions count their prefixes as they change: duplicates, removals of what is not there, and clearing")
    func topicSetCountsPrefixes() {
        var topics = TopicSet()
        let (a, b, key) = (Topic<[UInt8]>.prefix(Array("a/".utf8)), Topic<[UInt8]>.prefix(Array("b/".utf8)), Topic<[UInt8]>.key(Array("a/1".utf8)))
        let inserted = [topics.insert(a), topics.insert(key), topics.insert(b), topics.insert(a)]
        #expect(inserted == [true, true, true, false], "the second `a/` is already there")
        #expect(topics.count == 3 && topics.prefixCount == 2)
        let absent = topics.remove(.prefix(Array("c/".utf8)))
        #expect(absent == nil && topics.prefixCount == 2)
        let removedKey = topics.remove(key)
        #expect(removedKey == key && topics.prefixCount == 2)
        let removedPrefix = topics.remove(a)
        #expect(removedPrefix == a && topics.prefixCount == 1 && topics.count == 1)
        #expect(Array(topics) == [.prefix(Array("b/".utf8))])
        topics.removeAll()
        #expect(topics.count == 0 && topics.prefixCount == 0)
    }

    @Test("list messages: prefix required, after a string or null, limit 1-1000, values a boolean; the id is kept")
    func listMessages() throws {
        let limits = Limits(maxKeyBytes: 16, maxValueBytes: 64)
        let parsed = ClientRequest.parse(Array(#"{"type":"list","id":"p","payload":{"prefix":"a/","after":"a/b","limit":5,"values":true}}"#.utf8), limits: limits)
        #expect(parsed.id == Array(#""p""#.utf8))
        #expect(try parsed.request.get().message == .list(try ListingQuery(prefix: Array("a/".utf8), after: Array("a/b".utf8), limit: 5, values: true, limits: limits)))
        let plain = try ClientMessage.parse(Array(#"{"type":"list","payload":{"prefix":"","after":null}}"#.utf8), limits: limits)
        #expect(plain == .list(try ListingQuery(prefix: [], limits: limits)))
        for (text, message) in [
            (#"{"type":"list","payload":{}}"#, "payload.prefix must be a string"),
            (#"{"type":"list","payload":{"prefix":"a","limit":0}}"#, "limit must be an integer from 1 to 1000"),
            (#"{"type":"list","payload":{"prefix":"a","limit":1.5}}"#, "limit must be an integer"),
            (#"{"type":"list","payload":{"prefix":"a","limit":100000}}"#, "limit must be an integer"),
            (#"{"type":"list","payload":{"prefix":"a","values":1}}"#, "payload.values must be true or false"),
            (#"{"type":"list","payload":{"prefix":"a","after":7}}"#, "payload.after must be a string"),
            (#"{"type":"list","payload":{"prefix":"aaaaaaaaaaaaaaaaa"}}"#, "prefix is 17 bytes, the key limit is 16"),
        ] {
            #expect(throws: KVError.self, "\(text)") { try ClientMessage.parse(Array(text.utf8), limits: limits) }
            if case .failure(let error) = ClientRequest.parse(Array(text.utf8), limits: limits).request {
                #expect(error.message.contains(message), "\(text): \(error.message)")
            }
        }
        let page = KeyListing(revision: 3, next: Array("k\"".utf8), items: [KeyListing.Item(key: Array("k".utf8), value: Array("[1]".utf8), revision: 2, ttlMilliseconds: 10)])
        #expect(try WireFrames.text(ServerMessage.list(page, values: true, now: 100).framed(.init(id: Array("9".utf8))))
                == #"{"type":"list","id":9,"payload":{"items":[{"key":"k","value":[1],"rev":2,"expiresAt":110}],"next":"k\"","revision":3}}"#)
    }

    static let get = request(.get(key: Array("a".utf8)))
    static let subscribe = request(.subscribe(.key(Array("a".utf8))))

    /// The names of the messages `next` gives until it gives none, handled as the session
    /// handler's `pump` does: a request is sent, a subscribe or auth closes the gate.
    static func drain(_ ordering: inout SessionOrdering) -> [String] {
        var taken: [String] = []
        while let next = ordering.next(domain: { _ in 0 }) {
            guard case .message(let request, _) = next else { taken.append("rejected"); continue }
            switch request.message {
            case .get, .set, .delete, .list: ordering.sent(bytes: 1)
            case .subscribe: ordering.wait(for: .subscription)
            case .auth: ordering.wait(for: .authentication)
            case .unsubscribe: break
            }
            taken.append(String(describing: request.message).prefix { $0 != "(" }.description)
        }
        return taken
    }

    @Test("requests are pipelined up to the limit; a subscribe waits for them, and everything after it for its acknowledgement")
    func pipelineThenSubscribe() {
        var ordering = SessionOrdering(maxInFlight: 2, maxPendingBytes: 1 << 20)
        for inbound in [Self.get, Self.get, Self.get, Self.subscribe, Self.get] { ordering.received(inbound) }
        do { let taken = Self.drain(&ordering); #expect(taken == ["get", "get"]) }  // two in flight: the limit
        ordering.answered(bytes: 1)
        do { let taken = Self.drain(&ordering); #expect(taken == ["get"]) }
        ordering.answered(bytes: 1)
        do { let taken = Self.drain(&ordering); #expect(taken.isEmpty) }  // the subscribe waits for every request
        ordering.answered(bytes: 1)
        do { let taken = Self.drain(&ordering); #expect(taken == ["subscribe"]) }  // and the get after it for the acknowledgement
        ordering.opened()
        do { let taken = Self.drain(&ordering); #expect(taken == ["get"]) }
    }

    @Test("at the in-flight limit the next request waits for an answer")
    func inFlightLimit() {
        var ordering = SessionOrdering(maxInFlight: 1, maxPendingBytes: 1 << 20)
        ordering.received(Self.get)
        ordering.received(Self.get)
        do { let holds = ordering.next(domain: { _ in 0 }) != nil; #expect(holds) }
        ordering.sent(bytes: 1)
        do { let holds = ordering.next(domain: { _ in 0 }) == nil; #expect(holds) }
        ordering.answered(bytes: 1)
        do { let holds = ordering.next(domain: { _ in 0 }) != nil; #expect(holds) }
    }

    @Test("a request for another ordering domain (cluster master) waits until those in flight are answered")
    func domains() {
        var ordering = SessionOrdering(maxInFlight: 10, maxPendingBytes: 1 << 20)
        let other = Self.request(.get(key: Array("b".utf8)))
        ordering.received(Self.get)
        ordering.received(Self.get)
        ordering.received(other)
        let domain: (ClientMessage) -> Int = { $0.key == Array("b".utf8) ? 1 : 0 }
        _ = ordering.next(domain: domain)
        ordering.sent(bytes: 1)
        _ = ordering.next(domain: domain)
        ordering.sent(bytes: 1)
        do { let holds = ordering.next(domain: domain) == nil; #expect(holds) }
        ordering.answered(bytes: 1)
        ordering.answered(bytes: 1)
        do { let holds = ordering.next(domain: domain) != nil; #expect(holds) }
    }

    @Test("an auth waits for earlier requests, and later messages wait for the token's check")
    func authentication() {
        var ordering = SessionOrdering(maxInFlight: 10, maxPendingBytes: 1 << 20)
        ordering.sent(bytes: 1)
        ordering.received(Self.request(.auth(token: "t")))
        ordering.received(Self.get)
        do { let taken = Self.drain(&ordering); #expect(taken.isEmpty) }
        ordering.answered(bytes: 1)
        do { let taken = Self.drain(&ordering); #expect(taken == ["auth"]) }
        ordering.opened()
        do { let taken = Self.drain(&ordering); #expect(taken == ["get"]) }
    }

    @Test("reading pauses at the message limit and the byte limit, and a held read resumes once they drain")
    func backpressure() {
        var ordering = SessionOrdering(maxInFlight: 2, maxPendingBytes: 25)
        do { let holds = ordering.readRequested(); #expect(holds) }
        ordering.received(Self.get)
        ordering.received(Self.get)
        do { let holds = !ordering.readRequested(); #expect(holds) }  // two messages waiting: the limit
        do { let holds = !ordering.resumeRead(); #expect(holds) }
        _ = ordering.next(domain: { _ in 0 })
        ordering.sent(bytes: 10)
        // One message (10 bytes) in the inbox and 10 in flight: under both limits.
        do { let holds = ordering.resumeRead(); #expect(holds) }
        do { let holds = !ordering.resumeRead(); #expect(holds) }  // once
        ordering.sent(bytes: 10)  // 10 waiting + 20 in flight: over the byte limit
        do { let holds = !ordering.readRequested(); #expect(holds) }
        ordering.answered(bytes: 10)
        do { let holds = ordering.resumeRead(); #expect(holds) }
    }

    @Test("pings: one out per interval; an unanswered one cuts the client off, counted as a ping timeout")
    func pings() {
        var closing = SessionClosing()
        guard case .send = closing.pingDue() else { Issue.record("no ping"); return }
        closing.pongReceived()
        guard case .send = closing.pingDue() else { Issue.record("no ping"); return }
        guard case .cutOff = closing.pingDue() else { Issue.record("not cut off"); return }
        #expect(closing.reason == .pingTimeout)
    }

    @Test("a client's pings: answered at once while writable; otherwise only the newest is kept, and sent once writable")
    func pongs() {
        var closing = SessionClosing()
        do { let holds = closing.pingReceived(ByteBuffer(string: "1"), writable: true) == ByteBuffer(string: "1"); #expect(holds) }
        do { let holds = closing.pingReceived(ByteBuffer(string: "2"), writable: false) == nil; #expect(holds) }
        do { let holds = closing.pingReceived(ByteBuffer(string: "3"), writable: false) == nil; #expect(holds) }
        do { let holds = closing.writable() == ByteBuffer(string: "3"); #expect(holds) }
        do { let holds = closing.writable() == nil; #expect(holds) }
    }

    @Test("one close frame at most; the first reason is the one counted; after ours, the client's close ends it at once")
    func closeOnce() {
        var closing = SessionClosing()
        do { let holds = closing.close(.outputLimit); #expect(holds) }
        do { let holds = !closing.close(.shutdown); #expect(holds) }
        #expect(closing.reason == .outputLimit)
        guard case .none = closing.pingDue() else { Issue.record("pinged while closing"); return }
        do { let holds = closing.pingReceived(ByteBuffer(string: "p"), writable: true) == nil; #expect(holds) }
        guard case .closeNow = closing.clientClosed() else { Issue.record("not closed"); return }
        #expect(closing.reason == .outputLimit)
    }

    @Test("the client closes first: answered once, counted as the client's")
    func clientCloses() {
        var closing = SessionClosing()
        guard case .answer = closing.clientClosed() else { Issue.record("not answered"); return }
        #expect(closing.reason == .client && closing.closing)
        do { let holds = !closing.close(.shutdown); #expect(holds) }
    }

    @Test("errors: an oversize message or frame gets 1009, a bad control frame 1002, others close at once; none while closing")
    func errors() {
        var closing = SessionClosing()
        guard case .sendClose(let code, _) = closing.errorCaught(NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge) else {
            Issue.record("no close frame"); return
        }
        #expect(code == .messageTooLarge && closing.reason == .protocolError)
        // The decoder repeats its first error on every later read: ignored while closing.
        guard case .ignore = closing.errorCaught(NIOWebSocketError.invalidFrameLength) else { Issue.record("not ignored"); return }

        var other = SessionClosing()
        guard case .sendClose(let control, _) = other.errorCaught(NIOWebSocketError.fragmentedControlFrame) else { Issue.record("no close"); return }
        #expect(control == .protocolError)

        struct Unexpected: Error {}
        var third = SessionClosing()
        guard case .closeNow = third.errorCaught(Unexpected()) else { Issue.record("not closed"); return }
    }
}
