import NIOCore
import NIOWebSocket

/// How one WebSocket connection stays alive and ends, without I/O: pings and pongs, the
/// close handshake from either side, and errors. `WebSocketSessionHandler` tells it each event
/// and does what it answers (SessionClosingTests).
///
/// The rules, kept here and nowhere else:
/// * a ping goes out every interval; a client that has not answered the previous one is cut off;
/// * a client's ping is answered at once while the socket takes data, else only the newest
///   one is kept for later (RFC 6455 §5.5.3 allows it: a client that floods pings and never
///   reads costs one pending pong, not one per ping — it grew kv-ws by 1.6 GB in 15 s);
/// * one close frame at most: after ours, only the client's answer (or the close timer) ends
///   the connection, and nothing else is sent or handled;
/// * the first reason to end is the one counted.
struct SessionClosing {
    /// Our close frame is sent (or the client's answered): the connection is ending.
    private(set) var closing = false
    /// Why the connection is ending, once known.
    private(set) var reason: WSMetrics.CloseReason?
    private var awaitingPong = false
    private var pendingPong: ByteBuffer?

    // MARK: - Pings

    enum PingAction {
        case none
        case send
        /// The last ping was not answered: close the connection.
        case cutOff
    }

    mutating func pingDue() -> PingAction {
        guard !closing else { return .none }
        guard !awaitingPong else {
            reason = reason ?? .pingTimeout
            return .cutOff
        }
        awaitingPong = true
        return .send
    }

    mutating func pongReceived() { awaitingPong = false }

    /// The client pinged: the pong to send now, or nil (held until the socket is writable, or
    /// closing).
    mutating func pingReceived(_ data: ByteBuffer, writable: Bool) -> ByteBuffer? {
        guard !closing else { return nil }
        guard writable else {
            pendingPong = data
            return nil
        }
        return data
    }

    /// The socket takes data again: the held pong to send, if any.
    mutating func writable() -> ByteBuffer? {
        guard !closing, let pong = pendingPong else { return nil }
        pendingPong = nil
        return pong
    }

    // MARK: - Closing

    /// We end the connection for `reason`: true when a close frame is to be sent now (the
    /// first time); the caller then arms the close timer.
    mutating func close(_ reason: WSMetrics.CloseReason) -> Bool {
        self.reason = self.reason ?? reason
        guard !closing else { return false }
        closing = true
        return true
    }

    enum ClientCloseAction {
        /// Answer with the client's code, then close.
        case answer
        /// It answered our close: close now.
        case closeNow
    }

    mutating func clientClosed() -> ClientCloseAction {
        reason = reason ?? .client
        guard !closing else { return .closeNow }
        closing = true
        return .answer
    }

    enum ErrorAction {
        /// Already closing: the close timer ends it (closing now would reset the connection
        /// and could drop our close frame in nginx).
        case ignore
        /// Send this close frame, and close after the close timeout.
        case sendClose(WebSocketErrorCode, String)
        case closeNow
    }

    /// An error from the pipeline. The frame decoder, once failed, reports every later read
    /// as `dataReceivedInErrorState` with its first error: the same protocol error, not a new one.
    mutating func errorCaught(_ error: any Error) -> ErrorAction {
        var error = error
        if let decoderError = error as? ByteToMessageDecoderError, case .dataReceivedInErrorState(let first, _) = decoderError {
            error = first
        }
        guard !closing else { return .ignore }
        let frame: (WebSocketErrorCode, String)
        if let error = error as? NIOWebSocketFrameAggregator.Error, case .accumulatedFrameSizeIsTooLarge = error {
            frame = (.messageTooLarge, "message over the size limit")
        } else if let error = error as? NIOWebSocketError {
            // Sent here rather than by NIO's automatic error handling, which closes the socket
            // at once: with the rest of an oversize frame still unread, that close is a reset,
            // and a reset can overtake the close frame in nginx (seen under load).
            switch error {
            case .invalidFrameLength: frame = (.messageTooLarge, "frame over the size limit")
            case .fragmentedControlFrame, .multiByteControlFrameLength: frame = (.protocolError, "invalid control frame")
            }
        } else {
            return .closeNow
        }
        _ = close(.protocolError)
        return .sendClose(frame.0, frame.1)
    }
}
