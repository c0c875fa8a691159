import KVAccess
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import Testing
@testable import KVWebSocket

/// Access control in a WebSocket session, without sockets: refusals never reach kv-stored, and
/// a JWT's expiry closes the connection at the injected clock's time.
@Suite("WebSocket session: access rules (no sockets)")
struct SessionAccessTests {
    static let start: Int64 = 1_800_000_000_000

    private func access(_ identity: Identity?, clock: NIOLockedValueBox<Int64> = NIOLockedValueBox(start)) -> WebSocketSessionHandler.Access {
        WebSocketSessionHandler.Access(
            control: AccessControl(path: nil, policy: .open, now: { clock.withLockedValue { $0 } }),
            refusals: RefusalLog(logger: Logger(label: "test")), credential: .bearer("t"), identity: identity)
    }

    private var reader: Identity {
        var rules = AccessRules.none
        rules.allow(.read, prefix: Array("app/".utf8))
        rules.allow(.subscribe, prefix: Array("app/live/".utf8))
        return Identity(kind: .token, id: "reader", rules: rules)
    }

    @Test("a refused operation is an error with its id and code, kv-stored is asked nothing, and later messages are served")
    func refusals() throws {
        let h = try Harness(access: access(reader))
        try h.send(#"{"type":"set","id":"w","payload":{"key":"app/k","value":1}}"#)
        try h.send("delete", #"{"key":"app/k"}"#)
        try h.send("get", #"{"key":"other"}"#)
        try h.send("subscribe", #"{"key":"app/k"}"#)
        #expect(h.requests.sent.isEmpty && h.hub.pending.isEmpty)
        #expect(try h.texts() == [
            #"{"type":"error","id":"w","code":"forbidden","payload":"forbidden: reader may not write key \"app/k\""}"#,
            #"{"type":"error","code":"forbidden","payload":"forbidden: reader may not delete key \"app/k\""}"#,
            #"{"type":"error","code":"forbidden","payload":"forbidden: reader may not read key \"other\""}"#,
            #"{"type":"error","code":"forbidden","payload":"forbidden: reader may not subscribe key \"app/k\""}"#,
        ])
        try h.send("get", #"{"key":"app/k"}"#)
        try h.send("subscribe", #"{"key":"app/live/1"}"#)
        #expect(h.requests.sent == [["GET", "app/k"]])
        h.requests.reply(.success(.null))
        #expect(h.hub.pending.map(\.key) == ["app/live/1"])
    }

    @Test("without an identity only auth is served: everything else is unauthorized")
    func noIdentity() throws {
        let h = try Harness(access: access(nil))
        try h.send("get", #"{"key":"app/k"}"#)
        #expect(h.requests.sent.isEmpty)
        #expect(try h.texts().first?.contains(#""code":"unauthorized""#) == true)
    }

    @Test("a JWT's expiry closes the connection with 4401 when the injected clock says so, not before")
    func expiry() throws {
        var identity = reader
        identity.kind = .jwt
        identity.expiresAt = Self.start + 90_000
        let clock = NIOLockedValueBox(Self.start)
        // Pings far apart: this client never answers them.
        let h = try Harness(settings: .init(limits: Limits(), pingInterval: .seconds(3600)), access: access(identity, clock: clock))
        clock.withLockedValue { $0 = Self.start + 89_000 }
        h.channel.embeddedEventLoop.advanceTime(by: .seconds(89))
        #expect(try h.received().allSatisfy { $0.0 != .connectionClose })
        clock.withLockedValue { $0 = Self.start + 90_000 }
        h.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        let close = try h.received().first { $0.0 == .connectionClose }
        var data = close?.1 ?? ByteBuffer()
        #expect(data.readWebSocketErrorCode() == .unknown(4401))
        #expect(String(buffer: data) == "unauthorized: the token expired")
    }

    @Test("credentials of an upgrade: the Authorization header first, else a kv.bearer offer; kv.v1 is the protocol answered")
    func upgradeCredentials() {
        let both = UpgradeCredentials(HTTPHeaders([("Authorization", "Bearer a"), ("Sec-WebSocket-Protocol", "kv.v1, kv.bearer.b")]))
        #expect(both.credential == .bearer("a") && both.chosenProtocol == "kv.v1")
        let offer = UpgradeCredentials(HTTPHeaders([("Sec-WebSocket-Protocol", "kv.v1"), ("Sec-WebSocket-Protocol", "kv.bearer.b")]))
        #expect(offer.credential == .bearer("b") && offer.chosenProtocol == "kv.v1")
        let alone = UpgradeCredentials(HTTPHeaders([("Sec-WebSocket-Protocol", "kv.bearer.c")]))
        #expect(alone.credential == .bearer("c") && alone.chosenProtocol == "kv.bearer.c")
        let none = UpgradeCredentials(HTTPHeaders([("Sec-WebSocket-Protocol", "chat")]))
        #expect(none.credential == .none && none.chosenProtocol == nil)
        guard case .malformed = UpgradeCredentials(HTTPHeaders([("Sec-WebSocket-Protocol", "kv.bearer.")])).credential else {
            Issue.record("an empty token was taken")
            return
        }
    }
}
