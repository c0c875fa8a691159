import Foundation
import KVDaemon
import KVSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Type=notify`: each daemon tells systemd READY=1 once its socket accepts connections, and
/// STOPPING=1 when it shuts down. The test plays systemd with a datagram socket of its own.
@Suite("systemd readiness notification")
struct SystemdNotifyTests {
    /// A fake `$NOTIFY_SOCKET`: a datagram socket bound at `path` ("@name": abstract namespace).
    final class FakeNotifySocket {
        let path: String
        let fd: Int32

        init(path: String) throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0, var address = UnixAddress(path: path) else { throw POSIXFailure(what: "notify socket") }
            guard address.withSockaddr({ bind(fd, $0, $1) }) == 0 else { throw POSIXFailure(what: "bind \(path)") }
        }

        deinit { close(fd) }

        /// The next notification, if one arrives within `seconds`.
        func next(within seconds: Double) -> String? {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }
    }

    static func arguments(_ daemon: String, socket: String, dir: TempDirectory) -> [String] {
        daemon == "kv-stored" ? ["--socket", socket, "--persistence", "none"] : ["--socket", socket, "--store", dir.file("kv-stored.sock")]
    }

    @Test("each daemon sends READY=1 once its socket accepts connections, and STOPPING=1 on SIGTERM",
          arguments: ["kv-stored", "kv-fcgi", "kv-ws"])
    func readiness(daemon: String) throws {
        let dir = try TempDirectory()
        let notify = try FakeNotifySocket(path: dir.file("notify"))
        let socket = dir.file("d.sock")
        let process = try DaemonProcess(Binaries.path(daemon), Self.arguments(daemon, socket: socket, dir: dir),
                                        logPath: dir.file("log"), environment: ["NOTIFY_SOCKET": notify.path])
        let ready = try #require(notify.next(within: 15), "no notification; log: \(process.log)")
        #expect(ready.split(separator: "\n").contains("READY=1"), "\(ready)")
        #expect(isAccepting(socket), "READY=1 was sent before \(socket) accepted connections")
        #expect(process.terminate().status == 0, "\(process.log)")
        let stopping = notify.next(within: 1)
        #expect(stopping?.split(separator: "\n").contains("STOPPING=1") == true, "\(stopping ?? "nothing")")
    }

    @Test("with WatchdogSec= ($WATCHDOG_USEC), each daemon pings WATCHDOG=1 at half the interval; not for another process's watchdog",
          arguments: ["kv-stored", "kv-fcgi", "kv-ws"])
    func watchdog(daemon: String) throws {
        let dir = try TempDirectory()
        let notify = try FakeNotifySocket(path: dir.file("notify"))
        let process = try DaemonProcess(Binaries.path(daemon), Self.arguments(daemon, socket: dir.file("d.sock"), dir: dir),
                                        logPath: dir.file("log"), environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"])
        var pings = 0
        while pings < 3, let message = notify.next(within: 5) {
            if message == "WATCHDOG=1" { pings += 1 }
        }
        #expect(pings == 3, "\(process.log)")
        process.terminate()

        let other = try FakeNotifySocket(path: dir.file("notify2"))
        let elsewhere = try DaemonProcess(Binaries.path(daemon), Self.arguments(daemon, socket: dir.file("e.sock"), dir: dir),
                                          logPath: dir.file("log2"),
                                          environment: ["NOTIFY_SOCKET": other.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
        #expect(other.next(within: 15)?.contains("READY=1") == true)
        #expect(other.next(within: 0.5).map { !$0.contains("WATCHDOG=1") } ?? true, "the watchdog was meant for pid 1")
        elsewhere.terminate()
    }

    @Test("a notify socket in the abstract namespace (@name) works too")
    func abstractNotifySocket() throws {
        let dir = try TempDirectory()
        let notify = try FakeNotifySocket(path: "@kvtest-notify-\(getpid())")
        let socket = dir.file("s.sock")
        let store = try DaemonProcess(Binaries.path("kv-stored"), ["--socket", socket, "--persistence", "none"], logPath: dir.file("log"),
                                      environment: ["NOTIFY_SOCKET": notify.path])
        #expect(notify.next(within: 15)?.contains("READY=1") == true, "\(store.log)")
        store.terminate()
    }
}
