import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
@testable import KVWebSocket

/// kv-ws's frames as a client reads them: decoded by NIOWebSocket's own decoder (not by a
/// mirror of `ServerFrame`), which also checks each is one whole frame.
enum WireFrames {
    static func decode(_ bytes: ByteBuffer) throws -> [WebSocketFrame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 24)))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(bytes)
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readInbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    /// The text of one frame, which must be a final text frame with nothing after it.
    static func text(_ bytes: ByteBuffer) throws -> String {
        let frames = try decode(bytes)
        try #require(frames.count == 1 && frames[0].fin && frames[0].opcode == .text && frames[0].maskKey == nil, "\(frames)")
        return String(buffer: frames[0].data)
    }
}

@Suite("Server frames: framed once, in place, readable by a WebSocket decoder (no sockets)")
struct ServerFrameTests {
    /// Payload lengths on both sides of each header size's limit (125/126, 65535/65536).
    static let lengths = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]

    @Test("a payload written after payloadBuffer's room is framed in place, for every header size", arguments: lengths)
    func inPlace(length: Int) throws {
        var buffer = ServerFrame.payloadBuffer()
        buffer.writeRepeatingByte(UInt8(ascii: "x"), count: length)
        let storage = buffer.withUnsafeReadableBytes { $0.baseAddress }
        ServerFrame.frame(.text, &buffer)
        let headerBytes = length < 126 ? 2 : length < 65_536 ? 4 : 10
        #expect(buffer.readableBytes == headerBytes + length)
        #expect(buffer.withUnsafeReadableBytes { $0.baseAddress.map { $0 + headerBytes } } == storage, "the payload was not copied")
        let frames = try WireFrames.decode(buffer)
        #expect(frames.count == 1)
        #expect(frames.first?.opcode == .text && frames.first?.fin == true && frames.first?.maskKey == nil)
        #expect(frames.first?.data == ByteBuffer(repeating: UInt8(ascii: "x"), count: length))
    }

    @Test("a payload without room in front is copied behind the header; the original is left as it was", arguments: lengths)
    func copied(length: Int) throws {
        let payload = ByteBuffer(repeating: UInt8(ascii: "y"), count: length)
        let frame = ServerFrame.frame(.binary, payload)
        #expect(payload.readerIndex == 0 && payload.readableBytes == length)
        let frames = try WireFrames.decode(frame)
        #expect(frames.count == 1 && frames.first?.opcode == .binary && frames.first?.data == payload)
    }

    @Test("control frames carry their opcode and payload: close with its code, ping, pong")
    func control() throws {
        var close = ByteBuffer()
        close.write(webSocketErrorCode: .policyViolation)
        close.writeString("too much")
        let frames = try WireFrames.decode(ServerFrame.frame(.connectionClose, close)
            + ServerFrame.frame(.ping, ByteBuffer()) + ServerFrame.frame(.pong, ByteBuffer(string: "p")))
        #expect(frames.map(\.opcode) == [.connectionClose, .ping, .pong])
        var closePayload = frames[0].data
        let code = closePayload.readWebSocketErrorCode()
        #expect(code == .policyViolation && String(buffer: closePayload) == "too much")
        #expect(frames[2].data == ByteBuffer(string: "p"))
    }

    @Test("a close frame's reason is cut to 125 bytes of payload at a character's start, so it stays UTF-8",
          arguments: [String(repeating: "a", count: 122) + "é", String(repeating: "é", count: 200), String(repeating: "🔑", count: 40), "short"])
    func closeReason(reason: String) throws {
        let frames = try WireFrames.decode(ServerFrame.close(.unknown(4403), reason: reason))
        try #require(frames.count == 1 && frames[0].opcode == .connectionClose)
        var payload = frames[0].data
        #expect(payload.readableBytes <= 125)
        let code = payload.readWebSocketErrorCode()
        #expect(code == .unknown(4403))
        let reasonBytes = Array(payload.readableBytesView)
        let sent = try #require(String(validating: reasonBytes, as: UTF8.self), "the reason is UTF-8")
        #expect(reason.hasPrefix(sent) && reasonBytes.count >= min(reason.utf8.count, 120), "\(reasonBytes.count) of \(reason.utf8.count) bytes kept")
    }

    @Test("a framed message is its JSON text in one text frame, for every header size")
    func framedMessage() throws {
        let envelope = ServerMessage.Envelope(id: Array("7".utf8), rev: 3)
        let big = String(repeating: "1", count: 70_000)
        let cases: [(ServerMessage, String)] = [
            (.value(key: Array("k".utf8), value: Array("[1,2]".utf8)), #"{"type":"value","id":7,"rev":3,"payload":{"key":"k","value":[1,2]}}"#),
            (.value(key: Array("big".utf8), value: Array(big.utf8)), #"{"type":"value","id":7,"rev":3,"payload":{"key":"big","value":"# + big + "}}"),
            (.noValue(key: Array("k".utf8)), #"{"type":"no-value","id":7,"rev":3,"payload":{"key":"k"}}"#),
            (.error(String(repeating: "e", count: 200)), #"{"type":"error","id":7,"rev":3,"payload":""# + String(repeating: "e", count: 200) + #""}"#),
        ]
        for (message, text) in cases {
            #expect(try WireFrames.text(message.framed(envelope)) == text)
        }
        #expect(try WireFrames.text(ServerMessage.noValue(key: Array("k".utf8)).framed()) == #"{"type":"no-value","payload":{"key":"k"}}"#,
                "with no envelope, the seed protocol's message")
    }
}

private func + (lhs: ByteBuffer, rhs: ByteBuffer) -> ByteBuffer {
    var joined = lhs
    joined.writeImmutableBuffer(rhs)
    return joined
}
