import DequeModule
import KVCore
import NIOCore
import RESP

/// A command on its way to the store and who waits for its reply (called on the event loop).
struct StoreRequest {
    var arguments: [ByteBuffer]
    /// Whether the reply comes as a push (RESP3 answers (un)subscribe requests that way).
    var repliedByPush: Bool
    var reply: (Result<RESPValue, KVError>) -> Void
}

/// Pipelining on one RESP3 connection: requests are written in order and their promises queued;
/// replies complete them first-in first-out. Pushes are not replies: change messages go to
/// `onChange`; `subscribe`/`unsubscribe` acknowledgements (pushes in RESP3) complete the
/// (un)subscribe request they answer.
final class StoreClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = StoreRequest
    typealias OutboundOut = ByteBuffer

    /// Whose pushes these are: kv-stored's change feed, or Redis's sharded pub/sub and expiry events.
    enum Dialect { case kvStored, redis }

    private var pending = Deque<(reply: (Result<RESPValue, KVError>) -> Void, byPush: Bool)>()
    private let dialect: Dialect
    private let onChange: (StoreChange) -> Void
    private let onDropped: (ByteBuffer) -> Void

    /// `onDropped`: the store ended a key's subscription by itself (a cluster slot moved).
    init(dialect: Dialect = .kvStored, onChange: @escaping (StoreChange) -> Void, onDropped: @escaping (ByteBuffer) -> Void = { _ in }) {
        self.dialect = dialect
        self.onChange = onChange
        self.onDropped = onDropped
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: request.arguments.reduce(16) { $0 + $1.readableBytes + 16 })
        buffer.writeRESPCommand(request.arguments)
        pending.append((request.reply, request.repliedByPush))
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push(let elements) = value {
            switch elements.first?.string {
            case "message", "smessage", "pmessage":
                let change = dialect == .redis ? RedisFunctions.change(fromPush: elements) : StoreChange(push: elements)
                if let change { onChange(change) }
                return
            case "subscribe", "unsubscribe", "ssubscribe", "sunsubscribe", "psubscribe", "punsubscribe":
                // The reply to a (un)subscribe request, unless none waits first: then the server
                // unsubscribed us by itself (a cluster node whose slot moved away).
                guard pending.first?.byPush == true else {
                    if elements.first?.string == "sunsubscribe", elements.count >= 2, case .bulkString(let channel) = elements[1],
                       let key = RedisKeyLayout.key(of: Array(channel.readableBytesView)) {
                        onDropped(ByteBuffer(bytes: key))
                    }
                    return
                }
            default:
                return
            }
        }
        guard let (reply, _) = pending.popFirst() else {
            context.fireErrorCaught(RESPProtocolError("a reply arrived with no request waiting for it"))
            return
        }
        reply(.success(value))
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(KVError(.storageUnavailable, "storage unavailable: the connection to kv-stored closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(KVError(.storageError, "kv-stored connection failed: \(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: KVError) {
        while let (reply, _) = pending.popFirst() { reply(.failure(error)) }
    }
}
