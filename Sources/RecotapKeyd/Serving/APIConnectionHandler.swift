import Foundation
import NIOCore
import NIOHTTP1

/// One connection on `keyd.sock`: collects a request within the size limits, hands it
/// to ``APIRoutes`` and writes the answer — on the event loop when it can be answered
/// from memory, from a task when it needs the store or the checker, and when the key
/// changes (or the wait ends) for a long poll. Requests on one connection are answered
/// in order (``HTTPServerPipelineHandler`` holds back pipelined ones).
final class APIConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let peer: Peer
    /// Decided at accept, from the kernel's credentials; a reload that lowers it
    /// closes the connection instead of changing it.
    private let role: AccessRole
    private let context: ServingContext
    private let routes: APIRoutes
    /// The connection's read and idle deadlines (the handler below the decoder).
    private let timeouts: ConnectionTimeouts?

    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    /// An answer has been written that ends the connection; ignore what follows.
    private var closing = false
    private var responding = false
    private var longPoll: (token: UInt64, timeout: Scheduled<Void>)?

    init(peer: Peer, role: AccessRole, context: ServingContext, timeouts: ConnectionTimeouts?) {
        self.peer = peer
        self.timeouts = timeouts
        self.role = role
        self.context = context
        self.routes = APIRoutes(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            let limits = self.context.limits
            let headerBytes = head.uri.utf8.count + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headerBytes > limits.maxHeaderBytes {
                fail(context, .init(statusCode: 431), "header_too_large", "the request line and headers exceed \(limits.maxHeaderBytes) bytes")
                return
            }
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limits.maxBodyBytes {
                fail(context, .payloadTooLarge, "body_too_large", "the request body exceeds \(limits.maxBodyBytes) bytes")
                return
            }
            self.head = head
            body.clear()
        case .body(var chunk):
            guard head != nil else { return }
            if body.readableBytes + chunk.readableBytes > self.context.limits.maxBodyBytes {
                fail(context, .payloadTooLarge, "body_too_large", "the request body exceeds \(self.context.limits.maxBodyBytes) bytes")
                return
            }
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            self.head = nil
            timeouts?.requestRead()
            handle(APIRequest(head: head, body: body), keepAlive: head.isKeepAlive, version: head.version, context: context)
        }
    }

    private func handle(_ request: APIRequest, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        let result = routes.route(request, peer: peer, role: role)
        // A peer with no role gets its one answer and is disconnected: it cannot keep
        // connections open that readers need.
        let keepAlive = keepAlive && role != .none
        responding = true
        switch result {
        case .respond(var response):
            // No resource accepts HEAD (405), but its answer must carry no body, or a
            // client reading the next answer on the connection would read this body.
            if request.method == .HEAD { response.body = nil }
            write(response, keepAlive: keepAlive, version: version, context: context)
        case .later(let work):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let answer = context.eventLoop.makePromise(of: APIResponse.self)
            let submitted = self.context.work.submit { answer.succeed(await work()) }
            if !submitted {
                answer.succeed(.error(.serviceUnavailable, "shutting_down", "recotap-keyd is shutting down"))
            }
            answer.futureResult.whenSuccess { response in
                let (handler, context) = bound.value
                handler.write(response, keepAlive: keepAlive, version: version, context: context)
            }
        case .longPoll(let after, let wait, let json):
            startLongPoll(request: request, after: after, wait: wait, json: json, keepAlive: keepAlive, version: version, context: context)
        }
    }

    private func startLongPoll(
        request: APIRequest, after: Int64, wait: Duration, json: Bool, keepAlive: Bool, version: HTTPVersion,
        context: ChannelHandlerContext
    ) {
        let spool = self.context.intake.directoryPath
        let current = self.context.current
        let answers = self.context.keyAnswers
        let metrics = self.context.metrics
        let counters = self.context.counters
        let clock = self.context.clock
        guard counters.beginLongPoll() else {
            write(
                .error(.serviceUnavailable, "too_many_waiters", "too many long polls are waiting; try again shortly",
                    headers: ["Retry-After": "5"]),
                keepAlive: keepAlive, version: version, context: context)
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let token = current.waitForChange(after: after) { record in
            loop.execute {
                let (handler, context) = bound.value
                guard handler.finishLongPoll() else { return }
                handler.write(
                    APIRoutes.keyResponse(record, request: request, spool: spool, prepared: answers, now: clock.now, metrics: metrics), keepAlive: keepAlive, version: version,
                    context: context)
            }
        }
        guard let token else {
            counters.endLongPoll()
            write(APIRoutes.keyResponse(current.record, request: request, spool: spool, prepared: answers, now: clock.now, metrics: metrics), keepAlive: keepAlive, version: version, context: context)
            return
        }
        let timeout = loop.scheduleTask(in: TimeAmount(wait)) {
            let (handler, context) = bound.value
            guard current.cancelWait(token), handler.finishLongPoll() else { return }
            handler.write(APIRoutes.notModified(current.record, now: clock.now), keepAlive: keepAlive, version: version, context: context)
        }
        longPoll = (token, timeout)
    }

    /// Ends the long poll in progress; `false` if there was none (already answered).
    private func finishLongPoll() -> Bool {
        guard let poll = longPoll else { return false }
        longPoll = nil
        poll.timeout.cancel()
        context.counters.endLongPoll()
        return true
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let poll = longPoll {
            self.context.current.cancelWait(poll.token)
            _ = finishLongPoll()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closing { return }
        switch error {
        case HTTPParserError.headerOverflow:
            fail(context, .init(statusCode: 431), "header_too_large", "the request line and headers exceed \(self.context.limits.maxHeaderBytes) bytes")
        case is HTTPParserError:
            fail(context, .badRequest, "bad_request", "not a valid HTTP/1.1 request")
        default:
            closing = true
            context.close(promise: nil)
        }
    }

    /// Answers an unusable request and closes the connection: what follows it on the
    /// wire cannot be trusted to be the start of a request.
    private func fail(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ code: String, _ message: String) {
        closing = true
        // Closed already (the request timed out and got its 408, or the peer left
        // half-way, which the decoder reports as an error): nobody to answer.
        guard context.channel.isActive else { return }
        guard !responding else {
            context.close(promise: nil)
            return
        }
        write(.error(status, code, message), keepAlive: false, version: .http1_1, context: context)
    }

    private func write(_ response: APIResponse, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        let keepAlive = keepAlive && !closing
        let head: HTTPResponseHead
        if keepAlive, version == .http1_1, let prepared = response.preparedHead {
            // Built once per key (``PreparedKeyAnswer``): nothing to add.
            head = prepared
        } else {
            var headers = response.headers
            if response.status != .notModified {
                headers.replaceOrAdd(name: "Content-Length", value: String(response.body?.readableBytes ?? 0))
            }
            if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
            head = HTTPResponseHead(version: version, status: response.status, headers: headers)
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = response.body, body.readableBytes > 0, response.status != .notModified {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        responding = false
        if keepAlive {
            // Before the end is written: writing it makes NIO's pipeline handler hand
            // over a held-back pipelined request at once, which must find the
            // connection's timeouts already back from this one.
            timeouts?.responseWritten()
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            closing = true
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            context.channel.close(after: written, grace: TimeAmount(self.context.limits.requestReadTimeout))
        }
    }
}
