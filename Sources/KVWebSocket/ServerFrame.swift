import NIOCore
import NIOWebSocket

/// WebSocket frames as kv-ws puts them on the wire: final, unmasked (a server never masks,
/// RFC 6455 §5.1), the header written in front of the payload in the payload's own buffer.
///
/// Written here rather than left to NIOWebSocket's `WebSocketFrameEncoder`, which frames each
/// write again and puts the header in a buffer of its own: a change fanned out to a thousand
/// sessions is framed once this way, and every socket is written the same buffer, one iovec per
/// message. NIOWebSocket still decodes what clients send.
enum ServerFrame {
    /// The longest header of an unmasked frame: 2 bytes, then a 64-bit length.
    static let maxHeaderBytes = 10

    /// An empty buffer to write a payload into, with room in front for any frame's header.
    static func payloadBuffer(minimumWritableBytes: Int = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(minimumWritableBytes: maxHeaderBytes + minimumWritableBytes)
        buffer.moveWriterIndex(forwardBy: maxHeaderBytes)
        buffer.moveReaderIndex(forwardBy: maxHeaderBytes)
        return buffer
    }

    /// The longest reason a close frame carries: a control frame's payload is at most 125
    /// bytes (RFC 6455 §5.5), two of them the code.
    static let maxCloseReasonBytes = 123

    /// A close frame with `code` and `reason`, the reason cut to `maxCloseReasonBytes` at a
    /// character's start (the reason must stay UTF-8, or the client fails the connection).
    static func close(_ code: WebSocketErrorCode, reason: String) -> ByteBuffer {
        var reasonBytes = Array(reason.utf8)
        if reasonBytes.count > maxCloseReasonBytes {
            var end = maxCloseReasonBytes
            while end > 0, reasonBytes[end] & 0xC0 == 0x80 { end -= 1 }  // a continuation byte: not a start
            reasonBytes.removeSubrange(end...)
        }
        var frame = payloadBuffer(minimumWritableBytes: 2 + reasonBytes.count)
        frame.write(webSocketErrorCode: code)
        frame.writeBytes(reasonBytes)
        self.frame(.connectionClose, &frame)
        return frame
    }

    /// A frame of `payload` (a control frame's, say), copied behind the header.
    static func frame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer) -> ByteBuffer {
        var frame = payload
        self.frame(opcode, &frame)
        return frame
    }

    /// Turns `frame`, holding a payload, into the payload's frame: in place when the buffer has
    /// room in front of its readable bytes (one from `payloadBuffer`, not shared), else by
    /// copying the payload behind the header into a new buffer.
    static func frame(_ opcode: WebSocketOpcode, _ frame: inout ByteBuffer) {
        let length = frame.readableBytes
        let headerBytes = length < 126 ? 2 : length <= Int(UInt16.max) ? 4 : 10
        if frame.readerIndex < headerBytes {
            var copy = ByteBuffer()
            copy.reserveCapacity(headerBytes + length)
            copy.moveWriterIndex(forwardBy: headerBytes)
            copy.moveReaderIndex(forwardBy: headerBytes)
            copy.writeImmutableBuffer(frame)
            frame = copy
        }
        let start = frame.readerIndex - headerBytes
        frame.setInteger(0x80 | UInt8(webSocketOpcode: opcode), at: start)  // FIN: never fragmented
        switch headerBytes {
        case 2:
            frame.setInteger(UInt8(length), at: start + 1)
        case 4:
            frame.setInteger(UInt8(126), at: start + 1)
            frame.setInteger(UInt16(length), at: start + 2)
        default:
            frame.setInteger(UInt8(127), at: start + 1)
            frame.setInteger(UInt64(length), at: start + 2)
        }
        frame.moveReaderIndex(to: start)
    }
}

/// Where kv-ws's frames enter the pipeline: the first handler after the socket. The upgrade
/// puts NIOWebSocket's `WebSocketFrameEncoder` between the session handler and the socket, and
/// it cannot be taken out (it is not a `RemovableChannelHandler`); frames written to this
/// handler's context go past it, straight to the socket.
final class FrameOutlet: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
}
