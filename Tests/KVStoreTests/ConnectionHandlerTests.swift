import Foundation
import KVCore
import Logging
import NIOCore
import NIOEmbedded
import NIOExtras
import RESP
import Testing
@testable import KVStore

/// A temporary folder for a log, removed with the value.
final class TemporaryLogDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/kvch-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PersistenceFailure("mkdtemp failed") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Channel-level tests: bytes in, bytes out, through the real pipeline on EmbeddedChannels.
@Suite("kv-stored connection handling")
struct ConnectionHandlerTests {
    let loop = EmbeddedEventLoop()
    // The embedded loop's time starts at 0; the keyspace's clock moves with it.
    let clock = ManualClock(startNanoseconds: 0)
    let statistics = ServerStatistics(now: 0)
    let log = RecordingLogHandler()

    func makeStore() -> Store { Store(clock: clock, timerLoop: loop) }

    func makeChannel(_ store: Store, limits: Limits = Limits(), outbox: OutputLimits = .init()) throws -> EmbeddedChannel {
        try makeChannel(processor: CommandProcessor(store: store, limits: limits, statistics: statistics, socketPath: "/test"), outbox: outbox)
    }

    func makeChannel(processor: CommandProcessor, outbox: OutputLimits = .init()) throws -> EmbeddedChannel {
        let limits = processor.limits
        let channel = EmbeddedChannel(loop: loop)
        let resp = RESPLimits(maxBulkBytes: max(limits.maxKeyBytes, limits.maxValueBytes), maxElements: 1024)
        try channel.pipeline.syncOperations.addHandler(
            StoreConnectionHandler(processor: processor, limits: resp, outboxLimits: outbox, logger: log.logger))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/test")).wait()
        return channel
    }

    func send(_ channel: EmbeddedChannel, _ args: [String]) throws {
        var buffer = ByteBuffer()
        buffer.writeRESPCommand(args.map { ByteBuffer(string: $0) })
        try channel.writeInbound(buffer)
    }

    func output(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test("pipelined commands are answered in order, in one write per read")
    func pipelining() throws {
        let channel = try makeChannel(makeStore())
        var buffer = ByteBuffer()
        for args in [["SET", "k", "v"], ["GET", "k"], ["DEL", "k"], ["GET", "k"], ["PING"]] {
            buffer.writeRESPCommand(args.map { ByteBuffer(string: $0) })
        }
        try channel.writeInbound(buffer)
        #expect(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "+OK\r\n$1\r\nv\r\n:1\r\n$-1\r\n+PONG\r\n")
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    }

    @Test("a client that does not read its replies gets nothing executed until it does")
    func backPressure() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        channel.isWritable = false
        try send(channel, ["SET", "k", "1"])
        try send(channel, ["GET", "k"])
        #expect(try output(channel).isEmpty)
        #expect(store.withKeyspace { $0.count } == 0, "no command runs while replies cannot be written")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(try output(channel) == "+OK\r\n$1\r\n1\r\n")
    }

    /// Issue 15: replies waiting for the log's commit kept the socket writable, so nothing
    /// stopped `SET x 1` + thousands of `GET big` in one write from making unbounded replies.
    @Test("replies held for the log's commit are bounded: commands wait for the commit, then all are answered in order")
    func heldRepliesAreBounded() throws {
        let dir = try TemporaryLogDirectory()
        let store = makeStore()
        let appendLog = try AppendLog(path: dir.path + "/kv-stored.aof", validBytes: 0, epoch: "e", policy: .no, logger: log.logger, onFailure: unexpectedLogFailure)
        store.withKeyspace { $0.recorder = appendLog }
        let processor = CommandProcessor(store: store, limits: Limits(), statistics: statistics, socketPath: "/test", log: appendLog)
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(StoreConnectionHandler(
            processor: processor, limits: RESPLimits(maxBulkBytes: 1 << 20), outboxLimits: .init(), logger: log.logger,
            commitBatch: CommitBatch(log: appendLog, eventLoop: loop)))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/test")).wait()
        try send(channel, ["SET", "big", String(repeating: "b", count: 64 << 10)])
        loop.run()
        #expect(try output(channel) == "+OK\r\n")

        var burst = ByteBuffer()
        burst.writeRESPCommand(["SET", "x", "1"].map { ByteBuffer(string: $0) })
        for _ in 0..<1000 { burst.writeRESPCommand(["GET", "big"].map { ByteBuffer(string: $0) }) }
        let before = statistics.totalCommands.load(ordering: .relaxed)
        channel.pipeline.fireChannelRead(burst)
        let ran = statistics.totalCommands.load(ordering: .relaxed) - before
        #expect(ran <= 1 + (StoreConnectionHandler.maxHeldReplyBytes >> 16) + 1, "\(ran) commands ran before the commit: their replies are held")
        loop.run()  // the commit, then the rest
        let replies = try output(channel)
        #expect(replies.hasPrefix("+OK\r\n$65536\r\n"))
        #expect(replies.utf8.count == 5 + 1000 * (65536 + 10), "every GET answered once, after the commit")
    }

    @Test("a subscription acknowledgement precedes the changes, which arrive in revision order")
    func subscription() throws {
        let store = makeStore()
        let subscriber = try makeChannel(store)
        let writer = try makeChannel(store)
        try send(subscriber, ["SUBSCRIBE", "k"])
        try send(writer, ["SET", "k", "1"])
        try send(writer, ["SET", "k", "2", "PX", "10"])
        try send(writer, ["DEL", "nothing"])
        loop.run()
        #expect(try output(subscriber) == "*3\r\n$9\r\nsubscribe\r\n$1\r\nk\r\n:1\r\n"
            + "*3\r\n$7\r\nmessage\r\n$1\r\nk\r\n$7\r\nset:1:1\r\n"
            + "*3\r\n$7\r\nmessage\r\n$1\r\nk\r\n$7\r\nset:2:2\r\n")
        // The expiry timer fires at the deadline: the clock and the loop move together.
        clock.advance(milliseconds: 10)
        loop.advanceTime(by: .milliseconds(10))
        #expect(try output(subscriber) == "*3\r\n$7\r\nmessage\r\n$1\r\nk\r\n$9\r\nexpired:3\r\n")
        try send(subscriber, ["GET", "k"])
        #expect(try output(subscriber).contains("only (P|S)SUBSCRIBE"))
        try send(subscriber, ["UNSUBSCRIBE"])
        #expect(try output(subscriber) == "*3\r\n$11\r\nunsubscribe\r\n$1\r\nk\r\n:0\r\n")
        #expect(store.withKeyspace { $0.subscriptionCount } == 0)
    }

    @Test("on RESP3, pushes are '>' frames and commands may interleave with subscriptions")
    func resp3() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        try send(channel, ["HELLO", "3"])
        #expect(try output(channel).hasPrefix("%7\r\n"))
        try send(channel, ["SUBSCRIBE", "k"])
        try send(channel, ["GET", "k"])
        try send(channel, ["SET", "k", "v"])
        loop.run()
        #expect(try output(channel) == ">3\r\n$9\r\nsubscribe\r\n$1\r\nk\r\n:1\r\n_\r\n+OK\r\n"
            + ">3\r\n$7\r\nmessage\r\n$1\r\nk\r\n$7\r\nset:1:v\r\n")
    }

    @Test("closing a connection drops its subscriptions")
    func closeDropsSubscriptions() throws {
        let store = makeStore()
        let channel = try makeChannel(store)
        try send(channel, ["SUBSCRIBE", "a", "b"])
        #expect(store.withKeyspace { $0.subscriptionCount } == 2)
        _ = try channel.finish()
        #expect(store.withKeyspace { $0.subscriptionCount } == 0)
    }

    @Test("a subscriber that cannot be written to gets the newest value per key, or is cut off")
    func slowSubscriber() throws {
        let store = makeStore()
        let subscriber = try makeChannel(store, outbox: .init(conflateBytes: 1000, maxBytes: 4000))
        let writer = try makeChannel(store)
        try send(subscriber, ["SUBSCRIBE", "k"])
        _ = try output(subscriber)
        subscriber.isWritable = false
        for i in 0..<500 { try send(writer, ["SET", "k", "value-\(i)"]) }
        loop.run()
        #expect(try output(subscriber).isEmpty)
        subscriber.isWritable = true
        subscriber.pipeline.fireChannelWritabilityChanged()
        let delivered = try output(subscriber)
        #expect(delivered.hasSuffix("set:500:value-499\r\n"), "the final value must arrive")
        #expect(delivered.ranges(of: "message").count < 100, "superseded values are dropped")
        #expect(statistics.conflatedChanges.load(ordering: .relaxed) > 400)

        // Many distinct keys cannot be conflated away: past the hard limit the subscriber is closed.
        try send(subscriber, (0..<200).map { "key\($0)" }.reduce(into: ["SUBSCRIBE"]) { $0.append($1) })
        _ = try output(subscriber)
        subscriber.isWritable = false
        for i in 0..<200 { try send(writer, ["SET", "key\(i)", "x"]) }
        loop.run()
        #expect(!subscriber.isActive)
        #expect(statistics.outputLimitDisconnects.load(ordering: .relaxed) == 1)
        #expect(log.logged.contains { $0.level == .warning && $0.message.contains("output queue exceeded the limit") })
        #expect(store.withKeyspace { $0.subscriptionCount } == 0)
    }

    @Test("a protocol error is answered and closes only that connection")
    func protocolError() throws {
        let channel = try makeChannel(makeStore(), limits: Limits(maxKeyBytes: 16, maxValueBytes: 16))
        try channel.writeInbound(ByteBuffer(string: "*1\r\n$999\r\n"))
        #expect(try output(channel).hasPrefix("-ERR Protocol error: bulk of 999 exceeds the limit of 16"))
        #expect(log.logged.contains { $0.level == .info && $0.message.contains("protocol error") })
        #expect(!channel.isActive)
    }

    @Test("graceful shutdown answers what was read, then closes")
    func quiesce() throws {
        let channel = try makeChannel(makeStore())
        try send(channel, ["SET", "k", "v"])
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(try output(channel) == "+OK\r\n")
        #expect(!channel.isActive)
    }

    // MARK: - The command table (CommandTable.swift), checked once at dispatch

    @Test("every key argument of every command is held to the key limit, and the command changes nothing", arguments: Command.allCases.filter { $0.spec.firstKey > 0 })
    func keyLimitAtDispatch(command: Command) throws {
        let store = makeStore()
        let channel = try makeChannel(store, limits: Limits(maxKeyBytes: 8, maxValueBytes: 64))
        let name = command.spec.name.description
        let long = String(repeating: "k", count: 9)
        // The over-long key in the last key position, after a fine one where the command takes several.
        var args = [name, long]
        if command.spec.lastKey < 0 { args = [name, "fine", long] }
        if command.spec.value > 0 { args.append("1") }
        try send(channel, ["SET", "fine", "before"])
        _ = try output(channel)
        try send(channel, args)
        #expect(try output(channel) == "-ERR key is 9 bytes, the limit is 8\r\n", "\(args)")
        try send(channel, ["GET", "fine"])
        #expect(try output(channel) == "$6\r\nbefore\r\n", "\(name) changed something")
        #expect(store.withKeyspace { $0.watchedKeyCount } == 0, "\(name) subscribed")
    }

    @Test("the value argument is held to the value limit at dispatch", arguments: [Command.set, .kvset])
    func valueLimitAtDispatch(command: Command) throws {
        // A key limit above the value limit, so the protocol's bulk limit (the larger of the
        // two) lets the value through to the dispatch.
        let channel = try makeChannel(makeStore(), limits: Limits(maxKeyBytes: 32, maxValueBytes: 16))
        try send(channel, [command.spec.name.description, "k", String(repeating: "v", count: 17)])
        #expect(try output(channel) == "-ERR value is 17 bytes, the limit is 16\r\n")
        try send(channel, ["EXISTS", "k"])
        #expect(try output(channel) == ":0\r\n")
    }

    @Test("a wrong number of arguments is refused by the table's arity, for every command", arguments: Command.allCases)
    func arityAtDispatch(command: Command) throws {
        let channel = try makeChannel(makeStore())
        let spec = command.spec
        // One argument short of the minimum (at least), or one too many (exact).
        let count = spec.arity >= 0 ? spec.arity + 1 : -spec.arity - 1
        guard count >= 1 else { return }  // "at least 1": every command line qualifies
        let args = [spec.name.description] + (0..<(count - 1)).map { "a\($0)" }
        try send(channel, args)
        #expect(try output(channel) == "-ERR wrong number of arguments for '\(spec.name.description.lowercased())' command\r\n", "\(args)")
    }

    @Test("COMMAND INFO, COUNT and LIST answer from the table, as Redis's do")
    func commandIntrospection() throws {
        let channel = try makeChannel(makeStore())
        try send(channel, ["COMMAND", "INFO", "get", "del", "nosuch"])
        #expect(try output(channel) == "*3\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
                + "*6\r\n$3\r\ndel\r\n:-2\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:1\r\n$-1\r\n")
        try send(channel, ["COMMAND", "COUNT"])
        #expect(try output(channel) == ":\(Command.allCases.count)\r\n")
        try send(channel, ["COMMAND", "LIST"])
        let list = try output(channel)
        for command in Command.allCases { #expect(list.contains("\r\n\(command.spec.name.description.lowercased())\r\n")) }
        try send(channel, ["COMMAND", "NOSUCH"])
        #expect(try output(channel).hasPrefix("-ERR unknown subcommand"))
    }

    @Test("while a RESP2 connection subscribes, the commands without the table's subscriber-context flag are refused")
    func subscriberContext() throws {
        let channel = try makeChannel(makeStore())
        try send(channel, ["SUBSCRIBE", "k"])
        _ = try output(channel)
        for command in Command.allCases where !command.spec.flags.contains(.subscriberContext) {
            let spec = command.spec
            let args = [spec.name.description] + Array(repeating: "k", count: max(0, abs(spec.arity) - 1))
            try send(channel, args)
            #expect(try output(channel).contains("only (P|S)SUBSCRIBE"), "\(args)")
        }
        try send(channel, ["PING"])
        #expect(try output(channel) == "*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    }
}
