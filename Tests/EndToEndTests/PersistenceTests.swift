import Foundation
import KVClient
import KVCore
import NIOCore
import RESP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// kv-stored's append-only log against real crashes: SIGKILL at random moments while a client
/// writes, then a restart that must bring back what was acknowledged.
@Suite("kv-stored durability", .serialized)
struct PersistenceTests {
    static let limits = RESPLimits(maxBulkBytes: 1 << 20)

    /// What a key may hold after a crash: its last acknowledged state, or (for the one write
    /// that was in flight when kv-stored died) the state that write would have made.
    struct Expected {
        var acknowledged: String?  // nil: absent
        var inFlight: String??     // .some(nil): an unacknowledged delete
        var ttl = false
    }

    /// Writes (sets, some with a TTL, and deletes) until kv-stored stops answering, keeping in
    /// `expected` what each write may have left; returns how many were acknowledged.
    /// Keys are `key0`…`key<keys - 1>`, visited in a scattered order (so writes land all over
    /// the key order).
    static func writeUntilKilled(_ client: BlockingStoreClient, round: Int, keys: Int = 97, expected: inout [String: Expected]) -> Int {
        var i = 0
        while true {
            let key = "key\(i &* 7919 % keys)"
            let value = "\"r\(round)-\(i)\""
            let withTTL = i % 3 == 0
            let delete = i % 11 == 10
            expected[key, default: Expected()].inFlight = .some(delete ? nil : value)
            do throws(KVError) {
                if delete {
                    _ = try client.delete(Array(key.utf8))
                } else {
                    try client.set(Array(key.utf8), value: Array(value.utf8), ttl: withTTL ? try TTL(milliseconds: 600_000) : nil)
                }
            } catch {
                return i  // kv-stored is gone; this write's fate is unknown
            }
            expected[key] = Expected(acknowledged: delete ? nil : value, inFlight: nil, ttl: withTTL && !delete)
            i += 1
        }
    }

    static func killSoon(_ store: StoreProcess, after seconds: Double) {
        let pid = store.process.processIdentifier
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            kill(pid, SIGKILL)
        }
    }

    /// SIGKILL once the compaction under way has finished: it runs on CPU time the writes
    /// leave (SCHED_IDLE), so how long it takes depends on the machine's load.
    static func killAfterCompaction(_ store: StoreProcess) {
        let pid = store.process.processIdentifier, socket = store.socketPath
        Thread.detachNewThread {
            let watcher = BlockingStoreClient(socketPath: socket, limits: limits)
            while (try? persistenceInfo(watcher, "aof_rewrite_in_progress")) != 0 { usleep(2_000) }
            kill(pid, SIGKILL)
        }
    }

    /// Every key holds what `expected` allows, with its TTL when the acknowledged write had one.
    /// Returns what each key held: an unacknowledged write found there is durable from now on.
    @discardableResult
    static func check(_ socket: String, _ expected: [String: Expected]) throws -> [String: String?] {
        let client = BlockingStoreClient(socketPath: socket, limits: limits)
        var found: [String: String?] = [:]
        let keys = Array(expected.keys)
        for start in stride(from: 0, to: keys.count, by: 1_000) {  // pipelined: one round trip per 1,000 keys
            let batch = keys[start..<min(start + 1_000, keys.count)]
            let values = client.pipeline(batch.map { .get(key: Array($0.utf8)) })
            let ttls = client.pipeline(batch.map { .other([Array("PTTL".utf8), Array($0.utf8)]) })
            for (index, key) in batch.enumerated() {
                guard case .success(let value) = values[index], let want = expected[key] else {
                    Issue.record("GET \(key): \(values[index])")
                    continue
                }
                let got = value.string
                found[key] = got
                let allowed: [String?] = [want.acknowledged] + (want.inFlight.map { [$0] } ?? [])
                if !allowed.contains(got) {
                    Issue.record("\(key): found \(got ?? "nothing"), acknowledged \(want.acknowledged ?? "nothing")")
                }
                if got == want.acknowledged, want.ttl, want.acknowledged != nil {
                    guard case .success(.integer(let ms)) = ttls[index] else { Issue.record("PTTL \(key): \(ttls[index])"); continue }
                    #expect(ms > 500_000 && ms <= 600_000, "\(key): the TTL came back as \(ms) ms")
                }
            }
        }
        return found
    }

    /// `check`, then what a restart found becomes what is expected: a write in flight at the
    /// kill that was applied is what the key must hold now, even if the next round is killed
    /// before writing the key again (its TTL unknown).
    static func checkAndSettle(_ socket: String, _ expected: inout [String: Expected]) throws {
        let found = try check(socket, expected)
        for (key, got) in found where got != expected[key]?.acknowledged {
            expected[key] = Expected(acknowledged: got, inFlight: nil, ttl: false)
        }
        for key in expected.keys { expected[key]?.inFlight = nil }
    }

    /// `rounds` times: start kv-stored on one data directory, check everything acknowledged so
    /// far is there, write until a SIGKILL at a random moment within `killAfter` seconds. Then
    /// once more, to check the last round.
    static func crashRepeatedly(policy: String, rounds: Int, killAfter: ClosedRange<Double>) throws {
        let dir = try TempDirectory()
        let socket = dir.file("s"), data = dir.file("data")
        let arguments = ["--data-dir", data, "--appendfsync", policy]
        var expected: [String: Expected] = [:]
        var writes = 0
        for round in 0..<rounds {
            let store = try StoreProcess(socketPath: socket, arguments: arguments)
            try checkAndSettle(socket, &expected)
            killSoon(store, after: Double.random(in: killAfter))
            writes += writeUntilKilled(BlockingStoreClient(socketPath: socket, limits: limits), round: round, expected: &expected)
            store.process.waitUntilExit()
            #expect(store.process.terminationReason == .uncaughtSignal, "killed, not exited: \(store.log.suffix(500))")
        }
        let last = try StoreProcess(socketPath: socket, arguments: arguments)
        try check(socket, expected)
        #expect(writes > 100, "the crashes must interrupt real traffic: only \(writes) writes were acknowledged")
        #expect(last.log.contains("loaded the log"))
        last.terminate()
    }

    @Test("appendfsync always: after SIGKILL at random moments, every acknowledged write is back, value and TTL")
    func crashesWithAlways() throws {
        try Self.crashRepeatedly(policy: "always", rounds: 6, killAfter: 0.05...0.3)
    }

    @Test("appendfsync everysec: a crash of kv-stored loses nothing acknowledged (the log reached the kernel before the reply)")
    func crashesWithEverysec() throws {
        // Only a crash of the machine can lose the last second with everysec: the kernel still
        // holds what kv-stored wrote. A SIGKILL therefore must not lose any acknowledged write.
        try Self.crashRepeatedly(policy: "everysec", rounds: 3, killAfter: 0.2...1.5)
    }

    @Test("BGREWRITEAOF while writes flow: the log shrinks, and after a crash nothing acknowledged is missing")
    func compactionUnderWrites() throws {
        let dir = try TempDirectory()
        let socket = dir.file("s"), data = dir.file("data")
        let store = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data, "--appendfsync", "always", "--compact-factor", "0"])
        let client = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        func info(_ field: String) throws -> Int { try Self.persistenceInfo(client, field) ?? -1 }
        var expected: [String: Expected] = [:]
        for i in 0..<20_000 {  // 97 keys rewritten over and over: a log far larger than the data
            let key = "key\(i % 97)", value = "\"v\(i)\""
            try client.set(Array(key.utf8), value: Array(value.utf8), ttl: nil)
            expected[key] = Expected(acknowledged: value)
        }
        let before = try info("aof_current_size")
        #expect(try client.request([Array("BGREWRITEAOF".utf8)]) == .simpleString(ByteBuffer(string: "Background append only file rewriting started")))
        Self.killAfterCompaction(store)
        _ = Self.writeUntilKilled(BlockingStoreClient(socketPath: socket, limits: Self.limits), round: 1, expected: &expected)
        store.process.waitUntilExit()
        #expect(store.log.contains("compacted the log"), "\(store.log.suffix(1500))")

        let restarted = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data, "--compact-factor", "0"])
        try Self.check(socket, expected)
        let size = try Self.persistenceInfo(BlockingStoreClient(socketPath: socket, limits: Self.limits), "aof_current_size") ?? -1
        #expect(size > 0 && size < before, "the log was \(before) bytes before compaction and \(size) after the crash")
        restarted.terminate()
    }

    /// A field of `INFO persistence`, as a number.
    static func persistenceInfo(_ client: BlockingStoreClient, _ field: String) throws -> Int? {
        guard case .bulkString(let text) = try client.request([Array("INFO".utf8), Array("persistence".utf8)]) else { return nil }
        let line = String(buffer: text).split(whereSeparator: \.isNewline).first { $0.hasPrefix(field + ":") }
        return line.flatMap { Int($0.dropFirst(field.count + 1)) }
    }

    @Test("SIGKILL at points spread over a compaction of 5,000 keys, while writes land all over the key order: every acknowledged write is back")
    func crashesDuringCompaction() throws {
        let dir = try TempDirectory()
        let socket = dir.file("s"), data = dir.file("data")
        let arguments = ["--data-dir", data, "--appendfsync", "always", "--compact-factor", "0"]
        let keys = 5_000
        var expected: [String: Expected] = [:]
        let first = try StoreProcess(socketPath: socket, arguments: arguments)
        let loader = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        let ttl = try TTL(milliseconds: 600_000)
        for batch in stride(from: 0, to: keys, by: 1_000) {
            let operations = (batch..<batch + 1_000).map { i in
                StoreOperation<[UInt8]>.set(key: Array("key\(i)".utf8), value: Array("\"start \(i)\"".utf8), ttl: i % 5 == 0 ? ttl : nil)
            }
            for case .failure(let error) in loader.pipeline(operations) { Issue.record("loading: \(error)") }
            for i in batch..<batch + 1_000 { expected["key\(i)"] = Expected(acknowledged: "\"start \(i)\"", ttl: i % 5 == 0) }
        }
        // How long one compaction takes here, to spread the kills over it.
        _ = try loader.request([Array("BGREWRITEAOF".utf8)])
        while try Self.persistenceInfo(loader, "aof_rewrite_in_progress") != 0 { usleep(5_000) }
        let milliseconds = Double(max(1, try Self.persistenceInfo(loader, "aof_last_rewrite_time_ms") ?? 1))
        // INFO reports how long the compaction held writes up (bench/persistence.sh prints it).
        let piece = try Self.persistenceInfo(loader, "aof_last_rewrite_longest_piece_us")
        let switched = try Self.persistenceInfo(loader, "aof_last_rewrite_switch_us")
        #expect((piece ?? 0) > 0 && (switched ?? 0) > 0)
        _ = first.terminate()

        var interrupted = 0, completed = 0
        // Kills spread over a compaction's length, and a last one once it has finished.
        for (round, fraction) in [0.05, 0.2, 0.4, 0.6, 0.8, 1.0, nil].enumerated() {
            let store = try StoreProcess(socketPath: socket, arguments: arguments)
            try Self.checkAndSettle(socket, &expected)
            let client = BlockingStoreClient(socketPath: socket, limits: Self.limits)
            _ = try client.request([Array("BGREWRITEAOF".utf8)])
            if let fraction {
                Self.killSoon(store, after: milliseconds * fraction * Double.random(in: 0.8...1.2) / 1_000)
            } else {
                Self.killAfterCompaction(store)
            }
            _ = Self.writeUntilKilled(client, round: round, keys: keys, expected: &expected)
            store.process.waitUntilExit()
            // The log file is appended to by every round's process: count this round's line.
            let compactions = store.log.components(separatedBy: "compacted the log").count - 1
            if compactions > 1 + completed { completed += 1 } else { interrupted += 1 }
        }
        let last = try StoreProcess(socketPath: socket, arguments: arguments)
        try Self.check(socket, expected)
        #expect(interrupted > 0 && completed > 0, "kills must land both within and after a compaction (\(milliseconds) ms): \(interrupted) within, \(completed) after")
        _ = last.terminate()
    }

    @Test("a log of format 1 (no checksums) loads, is rewritten in the current format at startup, and keeps loading")
    func upgradeFromFormatOne() throws {
        let dir = try TempDirectory()
        let socket = dir.file("s"), data = dir.file("data")
        #expect(mkdir(data, 0o700) == 0)
        let v1 = "*3\r\n$5\r\nKVLOG\r\n$1\r\n1\r\n$4\r\nbeef\r\n*4\r\n$3\r\nSET\r\n$3\r\nold\r\n$3\r\n\"v\"\r\n$1\r\n7\r\n"
        #expect(FileManager.default.createFile(atPath: data + "/kv-stored.aof", contents: Data(v1.utf8)))
        let store = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data])
        let client = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        #expect(try client.get(Array("old".utf8)).map { String(buffer: $0) } == "\"v\"")
        #expect(store.log.contains("rewrote the log in the current format"), "\(store.log.suffix(800))")
        try client.set(Array("new".utf8), value: Array("1".utf8), ttl: nil)
        store.terminate()
        let log = try String(contentsOfFile: data + "/kv-stored.aof", encoding: .utf8)
        // Format 2, and a new epoch: a hand-made log is no clean stop of kv-stored's (CleanStop).
        #expect(log.hasPrefix("*4\r\n$5\r\nKVLOG\r\n$1\r\n2\r\n$16\r\n"), "\(log.prefix(80))")

        let again = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data])
        let reader = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        #expect(try reader.get(Array("old".utf8)) != nil && reader.get(Array("new".utf8)) != nil)
        let info = try reader.request([Array("INFO".utf8), Array("keyspace".utf8)])
        #expect(info.string?.contains("revision:8\r\n") == true, "the revision continues from the format 1 log's 7: \(info)")
        again.terminate()
    }

    /// Issue 15: a repaired or restored log kept its epoch, so revisions a client had seen were
    /// used again for other data and a resume from them passed for the same history.
    @Test("a log put back from an older copy starts a new epoch: a resume from the newer data is a reset, not a replay")
    func restoredLogNewEpoch() throws {
        let dir = try TempDirectory()
        let socket = dir.file("s"), data = dir.file("data"), log = data + "/kv-stored.aof"
        let store = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data])
        let client = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        try client.set(Array("k".utf8), value: Array("1".utf8), ttl: nil)
        store.terminate()
        let backup = try Data(contentsOf: URL(fileURLWithPath: log))

        let newer = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data])
        let writer = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        for i in 2...5 { try writer.set(Array("k".utf8), value: Array(String(i).utf8), ttl: nil) }
        let seen = try writer.request([Array("KVSYNC".utf8), Array("k".utf8), Array("INITIAL".utf8)])
        let seenEpoch = try #require(seen.elements?[1].string)
        newer.terminate()

        // The admin puts the older copy back: revisions 2… will be used again for other values.
        try backup.write(to: URL(fileURLWithPath: log))
        let restored = try StoreProcess(socketPath: socket, arguments: ["--data-dir", data])
        let reader = BlockingStoreClient(socketPath: socket, limits: Self.limits)
        for i in 6...9 { try reader.set(Array("k".utf8), value: Array(String(i * 100).utf8), ttl: nil) }
        let resume = try reader.request([Array("KVSYNC".utf8), Array("k".utf8), Array("SINCE".utf8), Array("3".utf8), Array("EPOCH".utf8), Array(seenEpoch.utf8)])
        #expect(resume.elements?[1].string != seenEpoch, "a new epoch at every start")
        #expect(resume.elements?[0].string == "reset", "\(resume)")
        restored.terminate()
    }

    @Test("values written over HTTP survive a kv-stored restart, and kv-fcgi recovers without being restarted")
    func restartBehindHTTP() throws {
        let data = try TempDirectory()
        let stack = try HTTPStack(storeArguments: ["--data-dir", data.file("data"), "--appendfsync", "always"])
        let http = stack.client()
        #expect(try http.send("POST", "/storage/durable", json: #"{"value":{"kept":[1,2,3]}}"#).status == 202)
        #expect(try http.send("POST", "/storage/brief", json: #"{"value":1,"ttl":"10m"}"#).status == 202)
        #expect(try http.send("POST", "/storage/dropped", json: #"{"value":2}"#).status == 202)
        #expect(try http.send("DELETE", "/storage/dropped").status == 200)
        kill(try #require(stack.store).process.processIdentifier, SIGKILL)
        stack.store?.process.waitUntilExit()
        #expect(try http.send("GET", "/storage/durable").status == 503)
        try stack.restartStore()
        #expect(eventually { (try? http.send("GET", "/storage/durable"))?.status == 200 }, "kv-fcgi reconnects by itself")
        #expect(try http.send("GET", "/storage/durable").text == #"{"value":{"kept":[1,2,3]}}"#)
        #expect(try http.send("GET", "/storage/brief").text == #"{"value":1}"#)
        let dropped = try http.send("GET", "/storage/dropped")
        #expect(dropped.status == 204, "\(dropped)")
    }
}
