import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// `metrics.listen` (README "Monitoring"): a TCP listener for a Prometheus that scrapes
/// the host, serving `GET /metrics` and nothing else — no key, no status, no admin
/// call is reachable through it. TCP peers have no credentials to check, so it is
/// off by default, and on a loopback address unless `metrics.allow_remote` says
/// otherwise. It has the limits of `keyd.sock`: a request must arrive within the
/// read timeout and within the header limit, idle connections are closed, and at
/// most ``maxConnections`` are open at once (more are closed at accept).
public final class MetricsListener: Sendable {
    public static let maxConnections = 16

    private let channel: any Channel
    /// Where it listens (the port the kernel chose, when configured with port 0).
    public let address: String

    private init(channel: any Channel) {
        self.channel = channel
        self.address = channel.localAddress.map { "\($0)" } ?? "?"
    }

    public static func start(
        address: MetricsListenAddress, context: ServingContext,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> MetricsListener {
        let open = Atomic<Int>(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                guard open.add(1, ordering: .relaxed).newValue <= maxConnections else {
                    open.subtract(1, ordering: .relaxed)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.subtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    try addHandlers(to: channel, context: context)
                }
            }
            .bind(host: address.host, port: address.port).get()
        return MetricsListener(channel: channel)
    }

    public func close() async {
        try? await channel.close()
    }

    package static func addHandlers(to channel: any Channel, context: ServingContext) throws {
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderListSize = context.limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldSize = context.limits.maxHeaderBytes
        let pipeline = channel.pipeline.syncOperations
        let timeouts = ConnectionTimeouts(readTimeout: context.limits.requestReadTimeout, idleTimeout: context.limits.idleTimeout)
        try pipeline.addHandler(timeouts)
        try pipeline.addHandler(HTTPResponseEncoder())
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(
            leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .drop, limitConfiguration: decoderLimits)))
        try pipeline.addHandler(HTTPServerPipelineHandler())
        try pipeline.addHandler(MetricsHTTPHandler(context: context, timeouts: timeouts))
    }
}

/// One connection of the metrics listener: `GET /metrics` (or `HEAD`), else 404 or 405.
/// A request's body is not read into memory (nothing here takes one).
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let context: ServingContext
    private let timeouts: ConnectionTimeouts
    private var head: HTTPRequestHead?

    init(context: ServingContext, timeouts: ConnectionTimeouts) {
        self.context = context
        self.timeouts = timeouts
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            timeouts.requestRead()
            answer(head, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A malformed request: nothing after it on the wire can be trusted.
        context.close(promise: nil)
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            write(.notFound, "text/plain; charset=utf-8", Array("only /metrics is served here\n".utf8), head: head, context: context)
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            write(.methodNotAllowed, "text/plain; charset=utf-8", Array("/metrics accepts GET\n".utf8), head: head,
                  extra: ["Allow": "GET"], context: context)
            return
        }
        // Rendered off the event loop (it reads /proc/self), like keyd.sock's /metrics.
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let rendered = context.eventLoop.makePromise(of: [UInt8]?.self)
        let serving = self.context
        if !serving.work.submit({ rendered.succeed(serving.renderMetrics()) }) { rendered.succeed(nil) }
        rendered.futureResult.whenSuccess { bytes in
            let (handler, context) = bound.value
            guard let bytes else {
                handler.write(.serviceUnavailable, "text/plain; charset=utf-8", Array("shutting down\n".utf8), head: head, context: context)
                return
            }
            handler.write(.ok, KeydMetrics.contentType, bytes, head: head, context: context)
        }
    }

    private func write(
        _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8], head request: HTTPRequestHead,
        extra: HTTPHeaders = [:], context: ChannelHandlerContext
    ) {
        guard context.channel.isActive else { return }
        var headers = extra
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD, !body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            timeouts.responseWritten()
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            context.channel.close(after: written, grace: TimeAmount(self.context.limits.requestReadTimeout))
        }
    }
}
