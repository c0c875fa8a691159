import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Under systemd, each log line starts with its syslog priority, which journald strips and
/// stores, so `journalctl -p warning` filters. The test plays systemd: JOURNAL_STREAM names the
/// device and inode of the daemon's stderr, as systemd sets it for a unit's journal stream.
@Suite("journald priorities")
struct JournalLogTests {
    private func journalStream(of path: String) throws -> String {
        var status = stat()
        guard stat(path, &status) == 0 else { throw POSIXFailure(what: "stat \(path)") }
        return "\(status.st_dev):\(status.st_ino)"
    }

    @Test("with JOURNAL_STREAM naming its stderr, every line of kv-stored carries <priority>; otherwise none does")
    func priorities() throws {
        let dir = try TempDirectory()
        let log = dir.file("kv-stored.log")
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let stream = try journalStream(of: log)
        let store = try DaemonProcess(Binaries.path("kv-stored"), ["--socket", dir.file("s"), "--persistence", "none", "--log-level", "debug"],
                                      logPath: log, environment: ["JOURNAL_STREAM": stream], append: true)
        #expect(eventually(within: 20) { store.log.contains("ready") })
        store.terminate()
        let lines = store.log.split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            #expect(line.range(of: #"^<[2-7]>kv-stored: "#, options: .regularExpression) != nil, "\(line)")
        }
        #expect(lines.contains { $0.hasPrefix("<5>") && $0.contains("ready") }, "the ready line is a notice")
        #expect(lines.contains { $0.hasPrefix("<7>") }, "debug lines are priority 7")

        let plainLog = dir.file("plain.log")
        let plain = try DaemonProcess(Binaries.path("kv-stored"), ["--socket", dir.file("t"), "--persistence", "none"],
                                      logPath: plainLog, environment: ["JOURNAL_STREAM": "1:1"])
        #expect(eventually(within: 20) { plain.log.contains("ready") })
        plain.terminate()
        #expect(!plain.log.contains("<5>"), "a JOURNAL_STREAM that is not its stderr is ignored")
    }
}

/// `--version` on every executable, and CHANGELOG.md's newest version, say the same (an
/// "Unreleased" section above it is not a version).
@Suite("versions")
struct VersionTests {
    @Test("every executable prints the version of CHANGELOG.md's newest entry")
    func versions() throws {
        let changelog = try String(contentsOfFile: Binaries.packageRoot.appendingPathComponent("CHANGELOG.md").path, encoding: .utf8)
        let newest = changelog.split(separator: "\n").first { $0.hasPrefix("## ") && $0.dropFirst(3).first?.isNumber == true }.map { $0.dropFirst(3).split(separator: " ").first.map(String.init) ?? "" }
        #expect(newest?.isEmpty == false, "CHANGELOG.md has no version heading")
        for program in ["kv-stored", "kv-fcgi", "kv-ws", "kvctl"] {
            let result = try run(Binaries.path(program), ["--version"])
            #expect(result.status == 0 && result.output.trimmingCharacters(in: .whitespacesAndNewlines) == newest, "\(program): \(result.output)")
        }
    }
}
