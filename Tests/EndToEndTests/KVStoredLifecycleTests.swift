import Foundation
import KVClient
import KVCore
import RESP
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("kv-stored lifecycle and limits")
struct KVStoredLifecycleTests {
    let limits = RESPLimits(maxBulkBytes: 600 << 20)

    @Test("SIGTERM with idle clients connected exits 0 within 2 seconds and removes the socket")
    func gracefulStop() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        var clients: [BlockingStoreClient] = []
        for i in 0..<20 {
            let client = BlockingStoreClient(socketPath: store.socketPath, limits: limits)
            try client.set(Array("k\(i)".utf8), value: Array("1".utf8), ttl: nil)
            clients.append(client)
        }
        let stopped = store.terminate()
        #expect(stopped.status == 0, "\(store.log)")
        #expect(stopped.seconds < 2, "took \(stopped.seconds) s")
        #expect(!FileManager.default.fileExists(atPath: store.socketPath))
        #expect(store.log.contains("kv-stored stopped"))
    }

    @Test("a stale socket file is replaced; a live server's socket or a regular file is not")
    func socketPath() throws {
        let dir = try TempDirectory()
        let path = dir.file("s")
        // A socket file nobody listens on, as a crashed process leaves behind.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        #expect(FileManager.default.fileExists(atPath: path))

        let store = try StoreProcess(socketPath: path)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)

        let second = try run(Binaries.path("kv-stored"), ["--socket", path, "--persistence", "none"])
        #expect(second.status != 0)
        #expect(second.output.contains("another process is already serving on \(path)"), "\(second.output)")
        #expect(isAccepting(path), "the second instance must not have taken the first one's socket")

        let file = dir.file("plain")
        _ = FileManager.default.createFile(atPath: file, contents: Data("keep me".utf8))
        let third = try run(Binaries.path("kv-stored"), ["--socket", file, "--persistence", "none"])
        #expect(third.status != 0)
        #expect(third.output.contains("exists and is not a socket"), "\(third.output)")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep me")
        _ = store
    }

    @Test("the socket gets the configured mode and group; an unknown group is refused")
    func socketModeAndGroup() throws {
        let dir = try TempDirectory()
        guard let daemon = getgrnam("daemon") else { Issue.record("Debian's 'daemon' group is missing"); return }
        let store = try StoreProcess(socketPath: dir.file("s"), arguments: ["--socket-mode", "0620", "--socket-group", "daemon"])
        var info = stat()
        #expect(stat(store.socketPath, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o620)
        #expect(info.st_gid == daemon.pointee.gr_gid)

        let refused = try run(Binaries.path("kv-stored"), ["--socket", dir.file("t"), "--persistence", "none", "--socket-group", "no-such-group-kv"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("socket group \"no-such-group-kv\" does not exist"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("t")), "a refused start must not leave its socket behind")
        let badMode = try run(Binaries.path("kv-stored"), ["--socket", dir.file("u"), "--persistence", "none", "--socket-mode", "999"])
        #expect(badMode.status != 0)
        #expect(badMode.output.contains("--socket-mode must be an octal file mode"))
    }

    @Test("an oversize frame is refused from its header and only that connection is closed")
    func oversizeFrame() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"), arguments: ["--max-key-bytes", "1024", "--max-value-bytes", "4096"])
        let good = BlockingStoreClient(socketPath: store.socketPath, limits: limits)
        try good.set(Array("k".utf8), value: Array("v".utf8), ttl: nil)

        // Declares a 1 GiB bulk string and sends nothing more: must be refused at once.
        let raw = try RawConnection(path: store.socketPath)
        try raw.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n")
        let reply = try raw.receiveUntilClosed()
        #expect(reply.hasPrefix("-ERR Protocol error:"), "got \(reply)")
        #expect(reply.contains("exceeds the limit"))

        // A key over the key limit but within the frame limit is an error reply; the connection stays.
        let keyTooLong = BlockingStoreClient(socketPath: store.socketPath, limits: limits)
        #expect {
            try keyTooLong.set([UInt8](repeating: 0x61, count: 2000), value: Array("v".utf8), ttl: nil)
        } throws: { error in
            (error as? KVError)?.message.contains("the limit is 1024") == true
        }
        #expect(try keyTooLong.get(Array("k".utf8)).map { String(buffer: $0) } == "v")
        #expect(try good.get(Array("k".utf8)).map { String(buffer: $0) } == "v")
        #expect(store.process.isRunning)
    }
}

/// A plain socket to speak raw bytes to kv-stored.
final class RawConnection {
    let fd: Int32

    init(path: String, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: Array(path.utf8)) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { throw POSIXFailure(what: "connect") }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw POSIXFailure(what: "send") }
    }

    /// Reads up to `limit` bytes that are available within the receive timeout.
    func receive(limit: Int = 1 << 20) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: limit)
        let n = recv(fd, &buffer, limit, 0)
        guard n >= 0 else { throw POSIXFailure(what: "recv") }
        return Array(buffer[0..<n])
    }

    func receiveUntilClosed() throws -> String {
        var all: [UInt8] = []
        while true {
            let chunk = try receive()
            if chunk.isEmpty { break }
            all += chunk
        }
        return String(decoding: all, as: UTF8.self)
    }
}
