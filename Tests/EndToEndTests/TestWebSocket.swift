import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import WSClient

/// A WebSocket client for tests: connects through nginx, sends messages, and collects what
/// arrives so a test can wait for the next message (with a generous timeout) or the close.
final class TestWebSocket: Sendable {
    private struct State {
        var messages: [String] = []
        var outbound: WebSocketOutboundWriter?
        var closeCode: WebSocketErrorCode?
        var ended = false
    }

    private let state = NIOLockedValueBox(State())
    private let task: NIOLockedValueBox<Task<Void, Never>?> = NIOLockedValueBox(nil)

    /// Connects and returns once the upgrade is done.
    static func connect(_ url: String, maxMessage: Int = 64 << 20) async throws -> TestWebSocket {
        let socket = TestWebSocket()
        let configuration = WebSocketClientConfiguration(maxFrameSize: maxMessage)
        let task = Task {
            do {
                let close = try await WebSocketClient.connect(url: url, configuration: configuration, logger: Logger(label: "test-ws")) { inbound, outbound, _ in
                    socket.state.withLockedValue { $0.outbound = outbound }
                    for try await message in inbound.messages(maxSize: maxMessage) {
                        if case .text(let text) = message { socket.state.withLockedValue { $0.messages.append(text) } }
                    }
                }
                socket.state.withLockedValue { $0.closeCode = close?.closeCode; $0.ended = true }
            } catch {
                socket.state.withLockedValue { $0.ended = true }
            }
        }
        socket.task.withLockedValue { $0 = task }
        guard await waitFor(seconds: 10, { socket.state.withLockedValue { $0.outbound != nil || $0.ended } }),
              socket.state.withLockedValue({ $0.outbound != nil })
        else { throw TestWebSocketError.notConnected }
        return socket
    }

    enum TestWebSocketError: Error { case notConnected, timedOut(String) }

    func send(_ text: String) async throws {
        guard let outbound = state.withLockedValue({ $0.outbound }) else { throw TestWebSocketError.notConnected }
        try await outbound.write(.text(text))
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

    func close() async {
        try? await state.withLockedValue({ $0.outbound })?.close(.normalClosure, reason: nil)
        _ = await closed(within: 5)
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
