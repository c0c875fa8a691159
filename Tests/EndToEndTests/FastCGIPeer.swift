import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// nginx's side of a FastCGI connection, written by hand so a test can do what nginx never
/// does (stop half way through a body), straight on kv-fcgi's socket.
struct FastCGIPeer {
    let fd: Int32

    init(socket path: String) throws {
        fd = try connectUnix(path)
    }

    func close() { Glibc.close(fd) }

    /// BEGIN_REQUEST (keep the connection) and the params; the body is sent with `stdin`.
    func begin(_ params: [String: String]) throws {
        var records = Self.record(type: 1, [0, 1, 1, 0, 0, 0, 0, 0])  // responder role, FCGI_KEEP_CONN
        var pairs: [UInt8] = []
        for (name, value) in params {
            pairs += Self.length(name.utf8.count) + Self.length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
        }
        records += Self.record(type: 4, pairs) + Self.record(type: 4, [])
        try send(records)
    }

    /// Body bytes; an empty chunk ends the body.
    func stdin(_ bytes: [UInt8]) throws {
        var records: [UInt8] = []
        var offset = 0
        repeat {
            let end = min(offset + 65535, bytes.count)
            records += Self.record(type: 5, Array(bytes[offset..<end]))
            offset = end
        } while offset < bytes.count
        try send(records)
    }

    /// The response's STDOUT up to END_REQUEST.
    func response() throws -> String {
        var received: [UInt8] = []
        var stdout: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            while received.count >= 8 {
                let length = Int(received[4]) << 8 | Int(received[5])
                let total = 8 + length + Int(received[6])
                guard received.count >= total else { break }
                if received[1] == 6 { stdout += received[8..<8 + length] }
                if received[1] == 3 { return String(decoding: stdout, as: UTF8.self) }
                received.removeFirst(total)
            }
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { throw POSIXFailure(what: "recv from kv-fcgi") }
            received += chunk[0..<n]
        }
    }

    private func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXFailure(what: "send to kv-fcgi") }
            offset += n
        }
    }

    private static func record(type: UInt8, _ content: [UInt8]) -> [UInt8] {
        [1, type, 0, 1, UInt8(content.count >> 8), UInt8(content.count & 0xff), 0, 0] + content
    }

    private static func length(_ count: Int) -> [UInt8] {
        count < 128 ? [UInt8(count)] : [UInt8(0x80 | (count >> 24)), UInt8((count >> 16) & 0xff), UInt8((count >> 8) & 0xff), UInt8(count & 0xff)]
    }
}
