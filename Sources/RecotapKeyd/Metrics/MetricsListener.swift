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
/// otherwise.
///
/// Any local user can connect, so nobody may hold it: every connection gets one
/// answer and is closed (pipelined requests behind the first are dropped: one render
/// per connection); a request must arrive within `keyd.sock`'s read timeout and header
/// limit; and at most ``maxConnections`` are open at once — when a new one arrives
/// with all taken, the oldest connection not being answered is closed to make room
/// (one whose whole request has arrived is never cut), so a peer that opens
/// connections and sends nothing, or half a request, only ever pushes out its own. A `Host` header
/// other than an IP address or `localhost` is refused, so a web page's script cannot
/// read the metrics through a DNS name rebound to loopback.
public final class MetricsListener: Sendable {
    public static let maxConnections = 16

    private let channel: any Channel
    /// Where it listens.
    public let address: String

    private init(channel: any Channel) {
        self.channel = channel
        self.address = channel.localAddress.map { address in
            guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
            return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        } ?? "?"
    }

    public static func start(
        address: MetricsListenAddress, context: ServingContext,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> MetricsListener {
        let connections = Connections()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.admit(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let timeouts = try SocketServer.addHTTPCodec(to: channel, limits: context.limits)
                    try channel.pipeline.syncOperations.addHandler(
                        MetricsHTTPHandler(context: context, timeouts: timeouts, connections: connections))
                }
            }
            .bind(host: address.host, port: address.port).get()
        return MetricsListener(channel: channel)
    }

    public func close() async {
        try? await channel.close()
    }

    /// The open connections, oldest first, and which of them have a request in progress.
    final class Connections: Sendable {
        private struct Open {
            var channel: any Channel
            var busy = false
        }
        private let open = Mutex<[(id: ObjectIdentifier, connection: Open)]>([])

        /// Registers `channel`, closing the oldest idle connection when all are taken
        /// (or `channel` itself, when every one is answering a request).
        func admit(_ channel: any Channel) {
            let id = ObjectIdentifier(channel)
            let evicted = open.withLock { open -> (any Channel)? in
                var evicted: (any Channel)?
                if open.count >= MetricsListener.maxConnections {
                    guard let oldest = open.firstIndex(where: { !$0.connection.busy }) else { return channel }
                    evicted = open.remove(at: oldest).connection.channel
                }
                open.append((id, Open(channel: channel)))
                return evicted
            }
            evicted?.close(promise: nil)
            guard evicted !== channel else { return }
            channel.closeFuture.whenComplete { [self] _ in
                open.withLock { $0.removeAll { $0.id == id } }
            }
        }

        /// A whole request arrived on `channel`: it is not to be evicted until it closes.
        func markBusy(_ channel: any Channel) {
            let id = ObjectIdentifier(channel)
            open.withLock { open in
                if let index = open.firstIndex(where: { $0.id == id }) { open[index].connection.busy = true }
            }
        }
    }
}

/// One connection of the metrics listener: `GET /metrics` (or `HEAD`), else 404 or 405;
/// one answer, then the connection is closed. A request's body is not read into
/// memory (nothing here takes one).
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let context: ServingContext
    private let timeouts: ConnectionTimeouts
    private let connections: MetricsListener.Connections
    private var head: HTTPRequestHead?
    private var answered = false

    init(context: ServingContext, timeouts: ConnectionTimeouts, connections: MetricsListener.Connections) {
        self.context = context
        self.timeouts = timeouts
        self.connections = connections
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            answered = true
            // Protected from eviction only once the request is whole: a peer that sends
            // a head and holds back the body can be pushed out like an idle one.
            connections.markBusy(context.channel)
            timeouts.requestRead()
            answer(head, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A malformed request: nothing after it on the wire can be trusted.
        context.close(promise: nil)
    }

    /// An IP address or `localhost`, with or without a port (or no `Host` at all, as
    /// HTTP/1.0 allows): anything else is a name that may have been rebound to loopback.
    static func acceptableHost(_ headers: HTTPHeaders) -> Bool {
        let hosts = headers[canonicalForm: "host"]
        guard let host = hosts.first else { return true }
        guard hosts.count == 1 else { return false }
        var name = Substring(host)
        if name.hasPrefix("["), let close = name.firstIndex(of: "]") {
            name = name[name.index(after: name.startIndex)..<close]
            return MetricsListenAddress("[\(name)]:1") != nil
        }
        if let colon = name.lastIndex(of: ":") { name = name[..<colon] }
        return name.lowercased() == "localhost" || MetricsListenAddress("\(name):1") != nil
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let text = "text/plain; charset=utf-8"
        guard Self.acceptableHost(head.headers) else {
            write(.misdirectedRequest, text, Array("Host must be an IP address or localhost\n".utf8), head: head, context: context)
            return
        }
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            write(.notFound, text, Array("only /metrics is served here\n".utf8), head: head, context: context)
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            write(.methodNotAllowed, text, Array("/metrics accepts GET and HEAD\n".utf8), head: head,
                  extra: ["Allow": "GET, HEAD"], context: context)
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
                handler.write(.serviceUnavailable, text, Array("shutting down\n".utf8), head: head, context: context)
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
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD, !body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        context.channel.close(after: written, grace: TimeAmount(self.context.limits.requestReadTimeout))
    }
}
