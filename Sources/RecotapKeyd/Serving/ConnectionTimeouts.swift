import NIOCore

/// Signals from the HTTP handler to ``ConnectionTimeouts`` (outbound user events).
enum RequestProgress: Sendable {
    /// A whole request has been read: its answer may take as long as it takes
    /// (a long poll, a check).
    case requestRead
    /// The answer has been written: the connection is idle again.
    case responseWritten
}

/// The first handler on an API connection, below the HTTP decoder, so it sees raw
/// bytes: a request must arrive in full within `readTimeout` of its first byte (a
/// client that sends half a request and stops gets 408 and is closed), and a kept-alive
/// connection with nothing to do is closed after `idleTimeout`.
final class ConnectionTimeouts: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle, reading, busy
    }

    private let readTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var state = State.idle
    /// Bytes of a next request arrived while one was being answered.
    private var pendingBytes = false
    private var timer: Scheduled<Void>?

    init(readTimeout: Duration, idleTimeout: Duration) {
        self.readTimeout = TimeAmount(readTimeout)
        self.idleTimeout = TimeAmount(idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context: context, after: idleTimeout, reading: false)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .idle:
            state = .reading
            arm(context: context, after: readTimeout, reading: true)
        case .reading:
            break
        case .busy:
            pendingBytes = true
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let progress = event as? RequestProgress else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch progress {
        case .requestRead:
            state = .busy
            timer?.cancel()
            timer = nil
        case .responseWritten:
            if pendingBytes {
                pendingBytes = false
                state = .reading
                arm(context: context, after: readTimeout, reading: true)
            } else {
                state = .idle
                arm(context: context, after: idleTimeout, reading: false)
            }
        }
        promise?.succeed()
    }

    private func arm(context: ChannelHandlerContext, after delay: TimeAmount, reading: Bool) {
        timer?.cancel()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let context = bound.value
            guard reading else {
                context.close(promise: nil)
                return
            }
            // Below the HTTP encoder: the answer is written as bytes.
            let body = #"{"error":"request_timeout","message":"the request did not arrive in full in time"}"# + "\n"
            let response = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            let channel = context.channel
            context.writeAndFlush(NIOAny(ByteBuffer(string: response))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
