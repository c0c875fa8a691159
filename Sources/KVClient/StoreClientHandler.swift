import DequeModule
import KVCore
import NIOCore
import RESP

/// A command on its way to kv-stored and the promise its reply completes.
struct StoreRequest {
    var arguments: [ByteBuffer]
    var promise: EventLoopPromise<RESPValue>
}

/// Pipelining on one RESP3 connection: requests are written in order and their promises queued;
/// replies complete them first-in first-out. Pushes are not replies: change messages go to
/// `onChange`; `subscribe`/`unsubscribe` acknowledgements (pushes in RESP3) complete the
/// (un)subscribe request they answer.
final class StoreClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = StoreRequest
    typealias OutboundOut = ByteBuffer

    private var pending = Deque<EventLoopPromise<RESPValue>>()
    private let onChange: (StoreChange) -> Void

    init(onChange: @escaping (StoreChange) -> Void) {
        self.onChange = onChange
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: request.arguments.reduce(16) { $0 + $1.readableBytes + 16 })
        buffer.writeRESPCommand(request.arguments)
        pending.append(request.promise)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push(let elements) = value {
            switch elements.first?.string {
            case "message":
                if let change = StoreChange(push: elements) { onChange(change) }
                return
            case "subscribe", "unsubscribe":
                break  // the reply to a (un)subscribe request
            default:
                return
            }
        }
        guard let promise = pending.popFirst() else {
            context.fireErrorCaught(RESPProtocolError("a reply arrived with no request waiting for it"))
            return
        }
        promise.succeed(value)
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
        while let promise = pending.popFirst() { promise.fail(error) }
    }
}
