import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Where the built executables are: `KV_BIN_DIR` when set (the Makefile sets it),
/// otherwise this package's debug build folder.
enum Binaries {
    static var directory: URL {
        if let dir = ProcessInfo.processInfo.environment["KV_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug")
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

/// A short temporary folder for sockets (unix socket paths are limited to 107 bytes).
final class TempDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/kvt-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw POSIXFailure(what: "mkdtemp") }
        path = String(cString: made)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    func file(_ name: String) -> String { path + "/" + name }
}

struct POSIXFailure: Error, CustomStringConvertible {
    var what: String
    /// Taken when the failure is made: by the time it is printed, errno is another call's.
    var code: Int32

    init(what: String) {
        self.what = what
        code = errno
    }

    var description: String { "\(what): \(String(cString: strerror(code)))" }
}

/// A real kv-stored process on a temp socket.
final class StoreProcess {
    let socketPath: String
    let daemon: DaemonProcess

    var process: Process { daemon.process }
    var log: String { daemon.log }

    /// Memory only unless `arguments` name a data directory: tests never touch /var/lib/kvserver.
    init(socketPath: String, arguments: [String] = []) throws {
        self.socketPath = socketPath
        let persistence = arguments.contains("--data-dir") ? [] : ["--persistence", "none"]
        daemon = try DaemonProcess(
            Binaries.path("kv-stored"),
            ["--socket", socketPath, "--threads", "2", "--log-level", "debug"] + persistence + arguments,
            logPath: socketPath + ".log", append: true)
        try waitUntilReady()
    }

    /// Ready is what kv-stored says it is ("kv-stored ready" is logged once the socket has its
    /// mode and group, where systemd gets READY=1), not that some time has passed.
    private func waitUntilReady() throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if log.contains("kv-stored ready") && isAccepting(socketPath) { return }
            guard process.isRunning else { throw StartFailure(log: log) }
            usleep(10_000)
        }
        throw StartFailure(log: "kv-stored did not accept connections within 20 s\n" + log)
    }

    struct StartFailure: Error, CustomStringConvertible {
        var log: String
        var description: String { "kv-stored failed to start:\n\(log)" }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    @discardableResult
    func terminate() -> (status: Int32, seconds: Double) {
        daemon.terminate()
    }
}

/// A child process with its stderr in a log file, killed if a test forgets to stop it.
final class DaemonProcess {
    let process = Process()
    let logPath: String

    /// `append`: keep what an earlier process wrote to `logPath` (a restarted daemon's log).
    init(_ executable: String, _ arguments: [String], logPath: String, standardInput: FileHandle? = nil,
         environment: [String: String] = [:], append: Bool = false) throws {
        self.logPath = logPath
        if !append || !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardInput = standardInput ?? FileHandle.nullDevice
        let output = FileHandle(forWritingAtPath: logPath)
        _ = try? output?.seekToEnd()
        process.standardError = output
        process.standardOutput = output
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took. A process
    /// still running after `limit` seconds is killed (status -1), so a daemon that does not stop
    /// fails its test instead of hanging the run.
    @discardableResult
    func terminate(limit: Double = 15) -> (status: Int32, seconds: Double) {
        guard process.isRunning else { return (process.terminationStatus, 0) }
        let start = Date()
        process.terminate()
        while process.isRunning && Date().timeIntervalSince(start) < limit { usleep(5_000) }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return (-1, Date().timeIntervalSince(start))
        }
        process.waitUntilExit()
        return (process.terminationStatus, Date().timeIntervalSince(start))
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

func isAccepting(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    } == 0
}

/// Runs a command line tool and returns its standard output.
func run(_ tool: String, _ arguments: [String], input: Data? = nil) throws -> (output: String, status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    let inPipe = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
    try process.run()
    if let input {
        inPipe.fileHandleForWriting.write(input)
        try inPipe.fileHandleForWriting.close()
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (String(decoding: data, as: UTF8.self), process.terminationStatus)
}

/// Polls `condition` until it holds or `seconds` pass: for waiting on another process's reaction.
func eventually(within seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        usleep(5_000)
    } while Date() < deadline
    return false
}
