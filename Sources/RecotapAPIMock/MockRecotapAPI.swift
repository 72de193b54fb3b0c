import NIOCore
import NIOHTTP1
import NIOPosix

/// A local stand-in for the Recotap External API (README, "The mock API"), on SwiftNIO.
///
/// It implements what Recotap documents — `GET /api/v1/accounts?limit=N` with
/// `X-Api-Key`, 401 with `customMessage` "X-Api-Key header is required" or
/// "Invalid API key", 404 for unknown routes — and control calls under `/_mock/`
/// (also available as methods here) to set valid keys, regenerate a key, inject
/// faults and read back the requests it received.
public final class MockRecotapAPI: Sendable {
    private let state: MockBackend
    private let channel: any Channel
    /// The port it listens on (useful when started on port 0).
    public let port: Int
    public let host: String

    /// Starts listening; port 0 picks a free port.
    public static func start(host: String = "127.0.0.1", port: Int = 0) async throws -> MockRecotapAPI {
        let backend = MockBackend()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                backend.connectionOpened()
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MockHTTPHandler(backend: backend))
                }
            }
            .bind(host: host, port: port)
            .get()
        let bound = channel.localAddress?.port ?? port
        return MockRecotapAPI(channel: channel, host: host, port: bound, backend: backend)
    }

    private init(channel: any Channel, host: String, port: Int, backend: MockBackend) {
        self.channel = channel
        self.host = host
        self.port = port
        self.state = backend
    }

    /// `http://HOST:PORT/api/v1`, the value for `api.base_url`.
    public var baseURL: String {
        let shown = host.contains(":") ? "[\(host)]" : host
        return "http://\(shown):\(port)/api/v1"
    }

    /// Replaces the set of valid keys.
    public func setValidKeys(_ keys: [String]) { state.setValidKeys(keys) }
    /// Adds one valid key.
    public func addValidKey(_ key: String) { state.addValidKey(key) }
    /// The old key (or, without one, every key) dies at once; the new one (random if
    /// not given) is valid. Returns the new key.
    @discardableResult
    public func regenerate(old: String? = nil, new: String? = nil) -> String { state.regenerate(old: old, new: new) }
    /// Queues a fault for the next API request(s).
    public func inject(_ fault: MockFault) { state.inject(fault) }
    public func clearFaults() { state.clearFaults() }
    /// How many TCP connections clients have opened (to see connection reuse).
    public var connectionCount: Int { state.connectionCount }
    /// Every API request received so far (control calls excluded).
    public func requests() -> [MockRequest] { state.requests() }

    public func shutdown() async throws {
        try await channel.close()
    }
}

/// Collects one request and answers it as ``MockBackend`` decides.
private final class MockHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let backend: MockBackend
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(backend: MockBackend) {
        self.backend = backend
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.removeAll()
        case .body(var buffer):
            if body.count < 1 << 20, let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body.append(contentsOf: bytes)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let headers = head.headers.map { ($0.name, $0.value) }
            let action = backend.handle(method: head.method.rawValue, uri: head.uri, headers: headers, body: body)
            switch action {
            case .drop:
                context.close(promise: nil)
            case .dribble(let status, let interval):
                writeHead(status: status, headers: [("Content-Length", "4096")], version: head.version, context: context)
                dribble(every: .milliseconds(Int64(interval)), left: 4096, context: context)
            case .endless(let status):
                writeHead(status: status, headers: [("Transfer-Encoding", "chunked")], version: head.version, context: context)
                pour(context: context)
            case .respond(let response, let delay):
                let keepAlive = head.isKeepAlive
                if delay > 0 {
                    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    context.eventLoop.scheduleTask(in: .milliseconds(Int64(delay))) {
                        let (handler, context) = loopBound.value
                        handler.write(response, keepAlive: keepAlive, version: head.version, context: context)
                    }
                } else {
                    write(response, keepAlive: keepAlive, version: head.version, context: context)
                }
            }
        }
    }

    private func write(_ response: MockResponse, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func writeHead(status: Int, headers: [(String, String)], version: HTTPVersion, context: ChannelHandlerContext) {
        var fields = HTTPHeaders(headers)
        fields.add(name: "Content-Type", value: "application/json")
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: fields)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
    }

    /// One byte, then the next after `interval`, until the client goes away.
    private func dribble(every interval: TimeAmount, left: Int, context: ChannelHandlerContext) {
        guard context.channel.isActive, left > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: " ")))), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: interval) {
            let (handler, context) = bound.value
            handler.dribble(every: interval, left: left - 1, context: context)
        }
    }

    /// 16 KiB chunks, each written once the previous one has left (so the mock's own
    /// memory stays flat), until the client goes away.
    private func pour(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 16 * 1024)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(chunk)))).whenSuccess {
            // A fresh turn of the loop: a write that completes at once must not recurse.
            loop.execute {
                let (handler, context) = bound.value
                handler.pour(context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
