import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket client that speaks the protocol by hand over a plain TCP socket, so a test can
/// do what a well-behaved client library never does: stop reading.
final class RawWebSocket {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`, upgrades `/ws`, with a small receive buffer.
    init(port: Int, receiveBuffer: Int32 = 4096) throws {
        fd = try connectLoopback(port: port, receiveBuffer: receiveBuffer)
        let head = try Self.handshake(fd, headers: [])
        guard head.hasPrefix("HTTP/1.1 101") else { throw POSIXFailure(what: "upgrade refused") }
    }

    /// The response head to an upgrade of `/ws` with these extra header lines (an `Origin`, say).
    static func handshakeResponse(port: Int, headers: [String]) throws -> String {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        return try handshake(fd, headers: headers)
    }

    private static func handshake(_ fd: Int32, headers: [String]) throws -> String {
        let extra = headers.map { $0 + "\r\n" }.joined()
        try write(fd, Array("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n".utf8))
        // Read the response head byte by byte, so no frame after it is consumed.
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            guard recv(fd, &byte, 1, 0) == 1 else { throw POSIXFailure(what: "handshake") }
            head.append(byte)
        }
        return String(decoding: head, as: UTF8.self)
    }

    deinit { close(fd) }

    /// Reads frames until one with `opcode` arrives (true) or `seconds` pass (false).
    func waitForFrame(opcode: UInt8, within seconds: Double) throws -> Bool {
        try readFrame(opcode: opcode, within: seconds) != nil
    }

    /// The status code of the server's close frame, if one arrives within `seconds`.
    func closeCode(within seconds: Double) throws -> UInt16? {
        guard let payload = try readFrame(opcode: 0x8, within: seconds), payload.count >= 2 else { return nil }
        return UInt16(payload[0]) << 8 | UInt16(payload[1])
    }

    /// Reads frames until one with `opcode` arrives (its payload) or `seconds` pass (nil).
    private func readFrame(opcode: UInt8, within seconds: Double) throws -> [UInt8]? {
        let deadline = Date().addingTimeInterval(seconds)
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while Date() < deadline {
            // Frames from the server are unmasked: 2 header bytes, then 0, 2 or 8 length bytes.
            while pending.count >= 2 {
                let code = pending[0] & 0x0F
                var length = Int(pending[1] & 0x7F), header = 2
                if length == 126 { guard pending.count >= 4 else { break }; length = Int(pending[2]) << 8 | Int(pending[3]); header = 4 }
                if length == 127 { guard pending.count >= 10 else { break }; length = pending[2..<10].reduce(0) { $0 << 8 | Int($1) }; header = 10 }
                guard pending.count >= header + length else { break }
                if code == opcode { return Array(pending[header..<(header + length)]) }
                pending.removeFirst(header + length)
            }
            let n = recv(fd, &chunk, chunk.count, 0)
            if n > 0 { pending += chunk[0..<n] } else if n == 0 { return nil }
        }
        return nil
    }

    /// Reads (and discards) until the server closes the connection; false if it stays open.
    func readsToEnd(within seconds: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while Date() < deadline {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 || (n < 0 && errno == ECONNRESET) { return true }
            if n < 0 && errno != EAGAIN && errno != EINTR { return true }
        }
        return false
    }

    /// Sends one masked text frame, as RFC 6455 requires of clients.
    func sendText(_ text: String) throws {
        try write(Self.frame(opcode: 0x1, Array(text.utf8)))
    }

    /// One masked frame with `fin` set, as RFC 6455 requires of clients.
    static func frame(opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return frame
    }

    func write(_ bytes: [UInt8]) throws { try Self.write(fd, bytes) }

    private static func write(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXFailure(what: "send") }
            offset += n
        }
    }
}
