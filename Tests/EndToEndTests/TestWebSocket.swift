import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A WebSocket client for tests: connects through nginx, sends messages, and collects what
/// arrives so a test can wait for the next message (with a generous timeout) or the close.
/// Built on swift-nio's WebSocket codec, like kv-ws, so the tests need no TLS stack.
final class TestWebSocket: Sendable {
    fileprivate struct State {
        var messages: [String] = []
        var closeCode: WebSocketErrorCode?
        var ended = false
        var closing = false
    }

    fileprivate let state = NIOLockedValueBox(State())
    private let channel: NIOLockedValueBox<(any Channel)?> = NIOLockedValueBox(nil)

    enum TestWebSocketError: Error { case notConnected, badURL(String), timedOut(String) }

    /// Connects to `ws://HOST:PORT/PATH` and returns once the upgrade is done.
    /// `headers`: extra request headers (an `Authorization`, a `Sec-WebSocket-Protocol` offer).
    static func connect(_ url: String, maxMessage: Int = 64 << 20, headers extra: [(String, String)] = []) async throws -> TestWebSocket {
        guard url.hasPrefix("ws://") else { throw TestWebSocketError.badURL(url) }
        let rest = url.dropFirst("ws://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash], path = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]) else {
            throw TestWebSocketError.badURL(url)
        }
        let host = String(authority[..<colon])

        let socket = TestWebSocket()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let upgraded = loop.makePromise(of: Void.self)
        let bootstrap = ClientBootstrap(group: loop).channelInitializer { channel in
            let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: maxMessage, upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: maxMessage),
                        ClientFrameHandler(socket: socket),
                    ])
                }
            })
            return channel.pipeline.addHTTPClientHandlers(withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in upgraded.succeed() }))
        }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        socket.channel.withLockedValue { $0 = channel }
        channel.closeFuture.whenComplete { _ in
            socket.state.withLockedValue { $0.ended = true }
            upgraded.fail(TestWebSocketError.notConnected)
        }
        let headers = HTTPHeaders([("Host", "\(host):\(port)"), ("Content-Length", "0")] + extra)
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil))
        try await upgraded.futureResult.get()
        return socket
    }

    func send(_ text: String) async throws {
        guard let channel = channel.withLockedValue({ $0 }) else { throw TestWebSocketError.notConnected }
        // Clients mask every frame (RFC 6455, 5.3).
        try await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text)))
    }

    func send(type: String, _ payload: String) async throws {
        try await send(#"{"type":"\#(type)","payload":\#(payload)}"#)
    }

    /// The next message that arrives, in order.
    func next(within seconds: Double = 10) async throws -> String {
        guard await Self.waitFor(seconds: seconds, { state.withLockedValue { !$0.messages.isEmpty } }) else {
            throw TestWebSocketError.timedOut("no message within \(seconds) s")
        }
        return state.withLockedValue { $0.messages.removeFirst() }
    }

    /// Messages received so far and not taken by `next`.
    var pending: [String] { state.withLockedValue { $0.messages } }

    /// Waits for the connection to end; returns the close code the server sent.
    func closed(within seconds: Double = 10) async -> WebSocketErrorCode? {
        _ = await Self.waitFor(seconds: seconds, { state.withLockedValue { $0.ended } })
        return state.withLockedValue { $0.closeCode }
    }

    /// Sends a normal close and waits for the server to finish the handshake.
    func close() async {
        guard let channel = channel.withLockedValue({ $0 }) else { return }
        state.withLockedValue { $0.closing = true }
        var data = ByteBuffer()
        data.write(webSocketErrorCode: .normalClosure)
        try? await channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data))
        _ = await closed(within: 5)
        try? await channel.close()
    }

    static func waitFor(seconds: Double, _ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return condition()
    }
}

/// Collects text messages, answers pings, and completes the close handshake.
private final class ClientFrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let socket: TestWebSocket

    init(socket: TestWebSocket) { self.socket = socket }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let text = String(buffer: frame.unmaskedData)
            socket.state.withLockedValue { $0.messages.append(text) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readWebSocketErrorCode()
            let weStarted = socket.state.withLockedValue { state -> Bool in
                state.closeCode = code
                return state.closing
            }
            if weStarted {
                context.close(promise: nil)
            } else {
                var data = ByteBuffer()
                data.write(webSocketErrorCode: code ?? .normalClosure)
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)))
                    .whenComplete { _ in bound.value.close(promise: nil) }
            }
        default:
            break
        }
    }
}
