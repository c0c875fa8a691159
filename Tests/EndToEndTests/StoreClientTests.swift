import Foundation
import KVClient
import KVCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RESP
import Testing

private let limits = RESPLimits(maxBulkBytes: 600 << 20)

@Suite("Blocking client against kv-stored")
struct BlockingStoreClientTests {
    @Test("get, set with and without TTL, delete, and an 8 MiB value")
    func operations() throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        let client = BlockingStoreClient(socketPath: store.socketPath, limits: limits)
        let key = Array("ключ/with spaces".utf8)
        #expect(try client.get(key) == nil)
        try client.set(key, value: Array("[1,2]".utf8), ttl: nil)
        #expect(try client.get(key).map { String(buffer: $0) } == "[1,2]")
        try client.set(key, value: Array("\"short\"".utf8), ttl: try TTL(milliseconds: 30))
        #expect(eventually { isMissing(key, in: client) })
        #expect(try client.delete(key) == false)

        var big = [UInt8](repeating: UInt8(ascii: "x"), count: 8 << 20)
        big[0] = UInt8(ascii: "\""); big[big.count - 1] = UInt8(ascii: "\"")
        try client.set(Array("big".utf8), value: big, ttl: nil)
        #expect(try client.get(Array("big".utf8)).map { Array($0.readableBytesView) } == big)
        #expect(try client.delete(Array("big".utf8)))
    }

    @Test("a pipeline: 200 mixed operations answered in order, a 1 MiB value among them; after a kv-stored restart it is sent again whole")
    func pipeline() throws {
        let dir = try TempDirectory()
        let path = dir.file("s")
        var store: StoreProcess? = try StoreProcess(socketPath: path)
        let client = BlockingStoreClient(socketPath: path, limits: limits)
        let big = "\"" + String(repeating: "b", count: 1 << 20) + "\""
        func value(_ i: Int) -> [UInt8] { Array((i == 50 ? big : String(i)).utf8) }
        let sets = (0..<100).map { i in StoreCommand<[UInt8], WriteResult>.versionedSet(Array("p\(i)".utf8), value: value(i), ttl: nil, precondition: .none) }
        let gets = (0..<100).map { i in StoreCommand<[UInt8], VersionedValue?>.versionedGet(Array("p\(i)".utf8)) }
        // Each get follows its set in the same pipeline: replies in order, each to its command.
        let replies = client.pipeline(zip(sets, gets).flatMap { [$0.operation, $1.operation] })
        #expect(replies.count == 200)
        for i in 0..<100 {
            guard case .success(.applied) = sets[i].reply(replies[2 * i]) else { Issue.record("set \(i): \(replies[2 * i])"); continue }
            let read = try gets[i].reply(replies[2 * i + 1].get())
            #expect(read?.value == value(i), "get \(i)")
        }
        // A connection found dead when reused (kv-stored restarted): the pipeline goes again on a
        // new one, as nothing of it was applied.
        store?.terminate()
        store = try StoreProcess(socketPath: path)
        let again = client.pipeline([sets[1].operation, gets[1].operation])
        #expect(try gets[1].reply(again[1].get())?.value == value(1), "\(again)")
        _ = store
    }

    @Test("while kv-stored is down calls fail at once with storageUnavailable, and recover when it returns")
    func unavailableThenRecovered() throws {
        let dir = try TempDirectory()
        let path = dir.file("s")
        var store: StoreProcess? = try StoreProcess(socketPath: path)
        // With a 10 s I/O timeout, "fails at once" is told apart from "waited for the timeout"
        // by a wide margin even on a loaded 2-core machine.
        let client = BlockingStoreClient(socketPath: path, limits: limits, timeoutMilliseconds: 10_000)
        try client.set(Array("k".utf8), value: Array("1".utf8), ttl: nil)
        store?.terminate()
        store = nil

        let start = Date()
        for _ in 0..<5 {
            #expect { try client.get(Array("k".utf8)) } throws: { ($0 as? KVError)?.code == .storageUnavailable }
        }
        #expect(Date().timeIntervalSince(start) < 5, "failing calls must not wait for the I/O timeout")

        store = try StoreProcess(socketPath: path)
        // The backoff is at most 2 s; the client reconnects by itself, without a restart.
        #expect(eventually(within: 5) { isMissing(Array("k".utf8), in: client) })
        try client.set(Array("k".utf8), value: Array("2".utf8), ttl: nil)
        #expect(try client.get(Array("k".utf8)).map { String(buffer: $0) } == "2")
        _ = store
    }
}

/// True when the client reached kv-stored and the key is absent (an error is not "absent").
func isMissing(_ key: [UInt8], in client: BlockingStoreClient) -> Bool {
    do { return try client.get(key) == nil } catch { return false }
}

/// Collects a StoreConnection's events.
final class EventLog: Sendable {
    private let box = NIOLockedValueBox<[StoreConnectionEvent]>([])
    func append(_ event: StoreConnectionEvent) { box.withLockedValue { $0.append(event) } }
    var events: [StoreConnectionEvent] { box.withLockedValue { $0 } }
    var changes: [String] {
        events.compactMap { event in
            guard case .change(let c) = event else { return nil }
            return "\(String(buffer: c.key)) \(c.kind.rawValue)\(c.value.map { "=" + String(buffer: $0) } ?? "") @\(c.revision)"
        }
    }
}

@Suite("Async store connection against kv-stored")
struct StoreConnectionTests {
    static let group = MultiThreadedEventLoopGroup.singleton

    func connect(_ path: String, log: EventLog) -> StoreConnection {
        StoreConnection(
            socketPath: path, eventLoop: Self.group.next(), limits: limits,
            logger: Logger(label: "test"), requestTimeout: .seconds(10), onEvent: { log.append($0) })
    }

    @Test("pipelined requests, and subscriptions that see changes from other clients and expiry")
    func subscriptions() async throws {
        let dir = try TempDirectory()
        let store = try StoreProcess(socketPath: dir.file("s"))
        let log = EventLog()
        let watcher = connect(store.socketPath, log: log)
        let writer = connect(store.socketPath, log: EventLog())

        try await watcher.subscribe(ByteBuffer(string: "k"))
        #expect(try await watcher.get(ByteBuffer(string: "k")) == nil)
        try await writer.set(ByteBuffer(string: "k"), value: ByteBuffer(string: "1"), ttl: nil)
        try await writer.set(ByteBuffer(string: "other"), value: ByteBuffer(string: "x"), ttl: nil)
        #expect(try await writer.delete(ByteBuffer(string: "k")))
        try await watcher.set(ByteBuffer(string: "k"), value: ByteBuffer(string: "own"), ttl: try TTL(milliseconds: 20))

        // 200 pipelined writes, all in flight at once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask { try await writer.set(ByteBuffer(string: "p\(i)"), value: ByteBuffer(string: "\(i)"), ttl: nil) }
            }
            try await group.waitForAll()
        }
        #expect(try await writer.get(ByteBuffer(string: "p199")) == ByteBuffer(string: "199"))

        #expect(eventually { log.changes.count == 4 })
        #expect(log.changes.prefix(3) == ["k set=1 @1", "k deleted @3", "k set=own @4"])
        #expect(log.changes.last?.hasPrefix("k expired @") == true, "\(log.changes)")

        try await watcher.unsubscribe(ByteBuffer(string: "k"))
        try await writer.set(ByteBuffer(string: "k"), value: ByteBuffer(string: "after"), ttl: nil)
        #expect(try await watcher.get(ByteBuffer(string: "k")) == ByteBuffer(string: "after"))
        #expect(log.changes.count == 4)
        await watcher.close()
        await writer.close()
    }

    @Test("after kv-stored restarts, subscriptions are restored and the gap is reported")
    func restoredAfterRestart() async throws {
        let dir = try TempDirectory()
        let path = dir.file("s")
        var store: StoreProcess? = try StoreProcess(socketPath: path)
        let log = EventLog()
        let watcher = connect(path, log: log)
        try await watcher.subscribe(ByteBuffer(string: "k"))
        store?.terminate()
        store = nil
        #expect(eventually { log.events.contains(.disconnected) })

        let start = Date()
        await #expect { try await watcher.get(ByteBuffer(string: "k")) } throws: { ($0 as? KVError)?.code == .storageUnavailable }
        #expect(Date().timeIntervalSince(start) < 5, "must fail fast, not wait for the 10 s request timeout")

        store = try StoreProcess(socketPath: path)
        #expect(eventually(within: 5) { log.events.contains(.restored(subscriptions: 1)) })
        let writer = BlockingStoreClient(socketPath: path, limits: limits)
        try writer.set(Array("k".utf8), value: Array("back".utf8), ttl: nil)
        #expect(eventually { log.changes.contains("k set=back @1") })
        await watcher.close()
        _ = store
    }
}
