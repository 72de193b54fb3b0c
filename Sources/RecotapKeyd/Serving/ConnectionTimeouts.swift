import NIOCore

/// The first handler on an API connection, below the HTTP decoder, so it sees raw
/// bytes: a request must arrive in full within `readTimeout` of its first byte (a
/// client that sends half a request and stops gets 408 and is closed), and a kept-alive
/// connection with nothing to do is closed after `idleTimeout`.
///
/// The HTTP handler tells it, by direct calls on the connection's event loop, when a
/// request has been read (``requestRead()``) and its answer written
/// (``responseWritten()``). Nothing is scheduled per request: one timer per
/// connection, re-armed only when it fires early (its deadline moved later meanwhile)
/// or when a request is still incomplete at the end of a read.
final class ConnectionTimeouts: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Waiting for a request: close at the deadline.
        case idle
        /// A request has started to arrive: 408 at the deadline.
        case reading
        /// A request is being answered: no deadline.
        case busy
    }

    private let readTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var state = State.idle
    /// When the current state times out (`nil` while busy).
    private var deadline: NIODeadline?
    /// Bytes of a next request arrived while one was being answered.
    private var pendingBytes = false
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    /// This handler's own place in the pipeline (below the HTTP codec: the 408 is
    /// written as bytes), kept from `handlerAdded` for the direct calls.
    private var context: ChannelHandlerContext?

    init(readTimeout: Duration, idleTimeout: Duration) {
        self.readTimeout = TimeAmount(readTimeout)
        self.idleTimeout = TimeAmount(idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        deadline = context.eventLoop.now + idleTimeout
        ensureTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.task.cancel()
        timer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.task.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .idle:
            state = .reading
            deadline = context.eventLoop.now + readTimeout
        case .reading:
            break
        case .busy:
            pendingBytes = true
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A request still incomplete after this read: its deadline may be earlier than
        // the timer (set for the idle deadline before it).
        if state == .reading { ensureTimer(context: context) }
        context.fireChannelReadComplete()
    }

    /// A whole request has been read: its answer may take as long as it takes (a long
    /// poll, a check).
    func requestRead() {
        state = .busy
        deadline = nil
    }

    /// The answer has been written: the connection is idle again (or reading the next
    /// request, if its bytes came meanwhile).
    func responseWritten() {
        guard let context else { return }
        let now = context.eventLoop.now
        if pendingBytes {
            pendingBytes = false
            state = .reading
            deadline = now + readTimeout
        } else {
            state = .idle
            deadline = now + idleTimeout
        }
        // A read deadline (pipelined bytes came meanwhile) may be earlier than the timer.
        ensureTimer(context: context)
    }

    /// Makes sure a timer fires no later than the deadline.
    private func ensureTimer(context: ChannelHandlerContext) {
        guard let deadline else { return }
        if let timer {
            if timer.at <= deadline { return }
            timer.task.cancel()
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timer = nil
            handler.fire(context: context)
        }
        timer = (task, deadline)
    }

    private func fire(context: ChannelHandlerContext) {
        guard let deadline else { return }
        if deadline > context.eventLoop.now {
            ensureTimer(context: context)
            return
        }
        guard state == .reading else {
            context.close(promise: nil)
            return
        }
        self.deadline = nil
        // Below the HTTP encoder: the answer is written as bytes.
        let body = #"{"error":"request_timeout","message":"the request did not arrive in full in time"}"# + "\n"
        let response = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        let channel = context.channel
        // A peer whose earlier answers still fill the socket will not read this one.
        guard channel.isWritable else {
            context.close(promise: nil)
            return
        }
        channel.close(after: context.writeAndFlush(NIOAny(ByteBuffer(string: response))), grace: readTimeout)
    }
}

extension Channel {
    /// Closes the connection once its last answer (`written`) is taken — or, when the
    /// peer does not take it (it never reads, and earlier answers fill the socket),
    /// after `grace`, instead of holding the connection open forever.
    func close(after written: EventLoopFuture<Void>, grace: TimeAmount) {
        let abandoned = eventLoop.scheduleTask(in: grace) { [self] in close(promise: nil) }
        written.whenComplete { [self] _ in
            abandoned.cancel()
            close(promise: nil)
        }
    }
}
