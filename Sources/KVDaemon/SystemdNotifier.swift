#if canImport(Glibc)
import Glibc
import KVSystem
#endif

/// systemd's service notification protocol (`Type=notify`): each state change is one datagram
/// (`READY=1`, `STOPPING=1`, `STATUS=…`) to the unix socket named by `$NOTIFY_SOCKET`.
///
/// Written by hand rather than linking libsystemd: the protocol is a single `sendto()`, and a
/// daemon started outside systemd (no `$NOTIFY_SOCKET`) simply sends nothing.
public struct SystemdNotifier: Sendable {
    /// Where notifications go; nil when not started by systemd with `Type=notify`.
    public let socketPath: String?
    /// The unit's `WatchdogSec=` in microseconds (`$WATCHDOG_USEC`), when it is meant for this
    /// process; nil without a watchdog.
    public let watchdogMicroseconds: Int64?

    public init(socketPath: String?, watchdogMicroseconds: Int64? = nil) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
        self.watchdogMicroseconds = watchdogMicroseconds.flatMap { $0 > 0 ? $0 : nil }
    }

    /// The notifier for this process's environment.
    public static func fromEnvironment() -> SystemdNotifier {
        let environment = { (name: String) in getenv(name).map { String(cString: $0) } }
        // $WATCHDOG_PID names the process the watchdog is for (sd_watchdog_enabled(3)).
        let forUs = environment("WATCHDOG_PID").map { Int32($0) == getpid() } ?? true
        return SystemdNotifier(socketPath: environment("NOTIFY_SOCKET"),
                               watchdogMicroseconds: forUs ? environment("WATCHDOG_USEC").flatMap { Int64($0) } : nil)
    }

    /// How often to call `watchdog()`: half the interval, as sd_watchdog_enabled(3) advises.
    public var watchdogPingMicroseconds: Int64? { watchdogMicroseconds.map { max(1, $0 / 2) } }

    /// Tells systemd's watchdog the daemon is alive (call only from a path that proves it is).
    public func watchdog() { send(["WATCHDOG=1"]) }

    /// The daemon accepts connections.
    public func ready(status: String) { send(["READY=1", "STATUS=\(status)"]) }

    /// The daemon is shutting down.
    public func stopping(status: String) { send(["STOPPING=1", "STATUS=\(status)"]) }

    /// The message for `fields`: newline-separated `KEY=value` assignments.
    static func message(_ fields: [String]) -> [UInt8] {
        Array(fields.map { $0.replacing("\n", with: " ") }.joined(separator: "\n").utf8)
    }

    /// Best effort, as sd_notify: a failure cannot be reported anywhere useful, and systemd
    /// treats a missing READY=1 as a start-up timeout, which is the right outcome.
    private func send(_ fields: [String]) {
        guard let socketPath, var address = UnixAddress(path: socketPath) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Self.message(fields)
        _ = address.withSockaddr { sockaddr, length in
            bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sockaddr, length) }
        }
    }
}
