import Logging
import NIOCore
import NIOExtras
import RESP

/// One client connection of kv-stored: runs its commands in order through `CommandProcessor`,
/// batches replies per read burst, and drains its change pushes while the socket is writable.
/// A bad client is answered, logged and disconnected; it never affects another connection.
final class StoreConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = RESPCommand
    typealias OutboundOut = ByteBuffer

    /// Most bytes of pushes encoded per drain step, so one subscriber cannot monopolise its loop.
    static let drainChunkBytes = 256 << 10

    private let processor: CommandProcessor
    private let outboxLimits: OutboxBuffer.Limits
    private var logger: Logger
    private var connection: ConnectionState
    private var outbox: SubscriberOutbox?
    private var context: ChannelHandlerContext?
    private var replies: ByteBuffer

    init(processor: CommandProcessor, outboxLimits: OutboxBuffer.Limits, logger: Logger) {
        self.processor = processor
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

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let outbox else { return }
        let command = unwrapInboundIn(data)
        processor.execute(command, connection: &connection, subscriber: outbox, out: &replies)
        if connection.closeAfterReply {
            flushReplies(context)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drainChanges() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Shutdown: what has been read is answered, then the connection closes.
            flushReplies(context)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let protocolError = error as? RESPProtocolError {
            processor.statistics.protocolErrors.wrappingIncrement(ordering: .relaxed)
            logger.info("closing connection after a protocol error", metadata: ["error": "\(protocolError.message)"])
            replies.writeRESPError("ERR \(protocolError.description)")
            flushReplies(context)
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }

    private func flushReplies(_ context: ChannelHandlerContext) {
        guard replies.readableBytes > 0 else { return }
        let chunk = replies
        replies = context.channel.allocator.buffer(capacity: 1024)
        context.writeAndFlush(wrapOutboundOut(chunk), promise: nil)
    }

    /// Writes pending change pushes while the socket accepts them. What does not fit stays in
    /// the outbox, where the output-limit policy applies, until writability returns.
    func drainChanges() {
        guard let context, let outbox else { return }
        flushReplies(context)  // acknowledgements go out before the changes that follow them
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
        context.close(promise: nil)
    }
}
