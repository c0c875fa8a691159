import KVCore
import Logging
import NIOCore
import NIOExtras
import RESP

/// One client connection of kv-stored. It is the whole pipeline: it parses commands in place
/// in the read buffer (no per-command allocation), runs them in order through
/// `CommandProcessor`, writes the replies of one read burst in one write, and drains change
/// pushes while the socket is writable.
///
/// Back-pressure: while the socket is not writable (the client does not read its replies), no
/// further command is executed and no further read is requested, so a pipelining client that
/// never reads cannot grow kv-stored's memory. A bad client is answered, logged and
/// disconnected; it never affects another connection.
final class StoreConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Most bytes of pushes encoded per drain step, so one subscriber cannot monopolise its loop.
    static let drainChunkBytes = 256 << 10
    /// Most reply bytes held while they wait for the log's commit. Past it, no further command
    /// runs until the commit: otherwise `SET x 1` followed by thousands of `GET big` in one
    /// write would make gigabytes of replies that nothing sends (the socket stays writable
    /// while replies are held, so writability alone never stops the loop).
    static let maxHeldReplyBytes = 1 << 20

    private let processor: CommandProcessor
    private let limits: RESPLimits
    private let outboxLimits: OutputLimits
    private var logger: Logger
    private var connection: ConnectionState
    private var outbox: SubscriberOutbox?
    private var context: ChannelHandlerContext?
    private var replies: ByteBuffer
    private var inbound: ByteBuffer?
    private var argumentRanges: [Range<Int>] = []
    /// How far the incomplete command at the start of `inbound` has been parsed.
    private var parseProgress = RESPCommandParser.Progress()
    /// The commands ahead in the read buffer, parsed together so their keys can be prefetched.
    private var burst = RESPCommandBurst()
    private var prefetchHashes: [UInt32] = []
    /// A `read` held back while the socket is not writable.
    private var pendingRead = false
    private var closing = false
    /// This event loop's group commit (nil without a log), and whether replies wait for it.
    private let commitBatch: CommitBatch?
    private var awaitingCommit = false

    init(processor: CommandProcessor, limits: RESPLimits, outboxLimits: OutputLimits, logger: Logger, commitBatch: CommitBatch? = nil) {
        self.commitBatch = commitBatch
        self.processor = processor
        self.limits = limits
        self.outboxLimits = outboxLimits
        self.connection = ConnectionState(id: processor.statistics.makeClientID())
        self.logger = logger
        self.logger[metadataKey: "connection.id"] = "\(connection.id)"
        self.replies = ByteBuffer()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.replies = context.channel.allocator.buffer(capacity: 1024)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let statistics = processor.statistics
        outbox = SubscriberOutbox(
            limits: outboxLimits,
            wake: { bound.eventLoop.execute { bound.value.drainChanges() } },
            overflow: { bound.eventLoop.execute { bound.value.closeForOutputLimit() } },
            conflated: { statistics.conflatedChanges.wrappingIncrement(by: $0, ordering: .relaxed) }
        )
        processor.statistics.connectedClients.wrappingIncrement(ordering: .relaxed)
        processor.statistics.totalConnections.wrappingIncrement(ordering: .relaxed)
        logger.debug("client connected")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let outbox { processor.dropSubscriptions(&connection, outbox) }
        processor.statistics.connectedClients.wrappingDecrement(ordering: .relaxed)
        self.context = nil
        logger.debug("client disconnected")
    }

    // MARK: - Commands

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if inbound == nil || inbound?.readableBytes == 0 {
            inbound = incoming
        } else {
            inbound?.writeBuffer(&incoming)
        }
        executeBufferedCommands(context)
    }

    /// Runs every complete command in `inbound`, unless back-pressure or a close stops it.
    private func executeBufferedCommands(_ context: ChannelHandlerContext) {
        guard let outbox, var buffer = inbound else { return }
        inbound = nil
        var executed = 0
        defer {
            burst.clear()  // what is left is parsed again with the bytes that arrive next
            if buffer.readableBytes > 0 {
                buffer.discardReadBytes()
                inbound = buffer
            }  // else nothing is kept: an idle connection holds no read buffer
            processor.statistics.totalCommands.wrappingIncrement(by: executed, ordering: .relaxed)
        }
        while buffer.readableBytes > 0, !closing, context.channel.isWritable, !holdingReplies {
            let step: Result<RESPCommandParser.Outcome, RESPProtocolError> = buffer.withUnsafeReadableBytes { raw in
                do throws(RESPProtocolError) {
                    // A command half-read has its own progress; a burst starts only between commands.
                    if burst.count == 0 && parseProgress == RESPCommandParser.Progress() { startBurst(raw) }
                    let outcome: RESPCommandParser.Outcome
                    if let consumed = burst.take(into: &argumentRanges) {
                        outcome = .command(consumed: consumed)
                    } else {
                        outcome = try RESPCommandParser.parse(raw, limits: limits, arguments: &argumentRanges, progress: &parseProgress)
                    }
                    if case .command = outcome {
                        processor.execute(
                            RESPArguments(bytes: raw, ranges: argumentRanges),
                            connection: &connection, subscriber: outbox, out: &replies)
                    }
                    return .success(outcome)
                } catch {
                    return .failure(error)
                }
            }
            switch step {
            case .success(.command(let consumed)):
                buffer.moveReaderIndex(forwardBy: consumed)
                executed += 1
                if connection.closeAfterReply {
                    closing = true
                    flushReplies(context, immediately: true)
                    context.close(promise: nil)
                }
            case .success(.nothing(let consumed)):
                buffer.moveReaderIndex(forwardBy: consumed)
            case .success(.incomplete):
                return
            case .failure(let error):
                protocolError(error, context)
                return
            }
            // Large replies are handed to the socket as they are made, not held for the burst.
            if replies.readableBytes >= 1 << 20 { flushReplies(context) }
        }
    }

    /// Commands parsed together: a `-P 16` burst.
    static let burstCapacity = 16

    /// Parses the whole commands at the start of `raw` (up to `burstCapacity`), and when there
    /// are several, prefetches their keys (each command's first argument), so the burst's
    /// lookups wait for their cache misses together rather than one after another: under
    /// `-P 16` SETs on 100k keys, a lookup's two misses were 20–25% of kv-stored's time.
    private func startBurst(_ raw: UnsafeRawBufferPointer) {
        burst.fill(raw, limits: limits, capacity: Self.burstCapacity)
        guard burst.count > 1 else { return }
        prefetchHashes.removeAll(keepingCapacity: true)
        for position in 0..<burst.count {
            if let key = burst.argument(1, ofCommand: position) { prefetchHashes.append(KeyTable.hash(UnsafeRawBufferPointer(rebasing: raw[key]))) }
        }
        processor.prefetch(keyHashes: prefetchHashes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context)
        context.fireChannelReadComplete()
    }

    /// Replies wait for the log and have reached their bound: commands wait for the commit.
    private var holdingReplies: Bool {
        awaitingCommit && replies.readableBytes >= Self.maxHeldReplyBytes
    }

    /// Reading pauses while replies cannot go out (the client does not read them, or they wait
    /// for the commit with the hold full), so unexecuted commands cannot pile up either.
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable && !closing && !holdingReplies {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            executeBufferedCommands(context)
            flushReplies(context)
            drainChanges()
            if pendingRead && context.channel.isWritable {
                pendingRead = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Shutdown: what has been read is answered, then the connection closes.
            closing = true
            flushReplies(context, immediately: true)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func protocolError(_ error: RESPProtocolError, _ context: ChannelHandlerContext) {
        processor.statistics.protocolErrors.wrappingIncrement(ordering: .relaxed)
        logger.info("closing connection after a protocol error", metadata: ["error": "\(error.message)"])
        replies.writeRESPError("ERR \(error.description)")
        closing = true
        flushReplies(context, immediately: true)
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// Sends the replies made so far. Replies that acknowledge writes wait until the log holds
    /// those writes (written, and synced with appendfsync always): normally for the end of the
    /// tick's group commit; `immediately` (before a close) commits here.
    private func flushReplies(_ context: ChannelHandlerContext, immediately: Bool = false) {
        guard replies.readableBytes > 0 else { return }
        if connection.needsCommit, let log = processor.log {
            if immediately || commitBatch == nil {
                connection.needsCommit = false
                awaitingCommit = false
                log.commitOrDie()
            } else {
                if !awaitingCommit {
                    awaitingCommit = true
                    commitBatch?.add(self)
                }
                return
            }
        }
        if awaitingCommit && !immediately { return }
        if processor.log?.hasFailed == true {
            // The log could not take these writes: nothing is acknowledged (the process is stopping).
            closing = true
            context.close(promise: nil)
            return
        }
        let chunk = replies
        replies = context.channel.allocator.buffer(capacity: 1024)
        context.writeAndFlush(wrapOutboundOut(chunk), promise: nil)
    }

    /// The tick's commit is done: everything this connection's replies acknowledge is in the log.
    func committed() {
        awaitingCommit = false
        connection.needsCommit = false
        guard let context else { return }
        flushReplies(context)
        drainChanges()
        // Commands held back by the reply bound run now, and a read held with them resumes.
        executeBufferedCommands(context)
        flushReplies(context)
        if pendingRead && context.channel.isWritable && !holdingReplies && !closing {
            pendingRead = false
            context.read()
        }
    }

    // MARK: - Change pushes

    /// Writes pending change pushes while the socket accepts them. What does not fit stays in
    /// the outbox, where the output-limit policy applies, until writability returns.
    func drainChanges() {
        guard let context, let outbox, !awaitingCommit else { return }  // `committed()` drains after the replies
        flushReplies(context)  // acknowledgements go out before the changes that follow them
        guard !awaitingCommit else { return }
        var wrote = false
        while context.channel.isWritable {
            let events = outbox.take(maxBytes: Self.drainChunkBytes)
            if events.isEmpty { break }
            var buffer = context.channel.allocator.buffer(capacity: events.reduce(0) { $0 + $1.byteCost })
            for event in events { CommandProcessor.writeChange(event, version: connection.version, into: &buffer) }
            context.write(wrapOutboundOut(buffer), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
    }

    private func closeForOutputLimit() {
        guard let context else { return }
        processor.statistics.outputLimitDisconnects.wrappingIncrement(ordering: .relaxed)
        logger.warning("closing subscriber: its output queue exceeded the limit", metadata: [
            "kv.limit_bytes": "\(outboxLimits.maxBytes)", "kv.subscriptions": "\(connection.subscriptions.count)",
        ])
        closing = true
        context.close(promise: nil)
    }
}
