import KVCore
import NIOCore
import RESP
import Testing
@testable import KVClient

@Suite("Client pieces")
struct ClientPiecesTests {
    @Test("reconnect backoff starts at 50 ms, doubles, stays at 2 s, and resets on success")
    func backoff() {
        var backoff = ReconnectBackoff()
        let delays = (0..<8).map { _ in backoff.failed() }
        #expect(delays == [50, 100, 200, 400, 800, 1600, 2000, 2000])
        backoff.succeeded()
        #expect(backoff.failed() == 50)
        var many = ReconnectBackoff()
        for _ in 0..<1000 { _ = many.failed() }
        #expect(many.failed() == 2000)
    }

    @Test("change-feed pushes parse into changes; other pushes do not")
    func changes() {
        func push(_ parts: [String]) -> [RESPValue] { parts.map { .bulkString(ByteBuffer(string: $0)) } }
        let set = StoreChange(push: push(["message", "k", "set:9:{\"a\":1}"]))
        #expect(set == StoreChange(key: ByteBuffer(string: "k"), kind: .set, revision: 9, value: ByteBuffer(string: "{\"a\":1}")))
        #expect(StoreChange(push: push(["message", "k", "expired:10"]))?.kind == .expired)
        #expect(StoreChange(push: push(["message", "k", "bogus"])) == nil)
        #expect(StoreChange(push: push(["subscribe", "k", "1"])) == nil)
    }
}
