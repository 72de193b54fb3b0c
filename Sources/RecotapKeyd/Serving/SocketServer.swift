import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Both sockets, accepting: `keyd.sock` (HTTP) and `credential.sock` (raw key).
/// Every connection's peer is read with `SO_PEERCRED` in the child channel's
/// initializer — before a single byte of it is read.
public final class SocketServer: Sendable {
    public let sockets: ListeningSockets
    private let channels: [any Channel]
    private let closed = Mutex(false)
    let context: ServingContext

    private init(sockets: ListeningSockets, channels: [any Channel], context: ServingContext) {
        self.sockets = sockets
        self.channels = channels
        self.context = context
    }

    /// Starts accepting on both sockets; returns once both accept.
    public static func start(
        sockets: ListeningSockets, context: ServingContext,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> SocketServer {
        var channels: [any Channel] = []
        do {
            channels.append(try await bootstrap(group: group, context: context, refusal: tooManyConnections) { channel, peer, role in
                try addAPIHandlers(to: channel, peer: peer, role: role, context: context)
            }.withBoundSocket(sockets.api.descriptor).get())
            channels.append(try await bootstrap(group: group, context: context, refusal: nil) { channel, peer, _ in
                serveCredential(on: channel, to: peer, context: context)
            }.withBoundSocket(sockets.credential.descriptor).get())
        } catch {
            // The sockets are this function's from its start: a wrapped one is closed
            // with its channel; files bound here are removed. A descriptor NIO did not
            // wrap is left open (the failed start ends the process): NIO may have
            // closed it already, and closing it again could close another's.
            for channel in channels { try? await channel.close() }
            for socket in [sockets.api, sockets.credential] where socket.origin == .bound {
                unlink(socket.path)
            }
            throw error
        }
        return SocketServer(sockets: sockets, channels: channels, context: context)
    }

    /// Stops accepting and removes the socket files bound here (never those systemd
    /// passed: they belong to the socket unit). Only the first call does anything.
    public func close() async {
        guard closed.withLock({ closed in defer { closed = true }; return !closed }) else { return }
        for channel in channels { try? await channel.close() }
        for socket in [sockets.api, sockets.credential] where socket.origin == .bound {
            unlink(socket.path)
        }
    }

    /// What an HTTP client over the connection limits reads before the close.
    static let tooManyConnections: String = {
        let body = #"{"error":"too_many_connections","message":"too many connections are open; try again shortly"}"# + "\n"
        return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body
    }()

    /// `refusal`: written before closing a connection over the limits (nothing on the
    /// raw socket, where any bytes would be taken for a key).
    ///
    /// Each connection's peer and role are decided here, once, before a byte of it is
    /// read, from what the kernel reported at `connect` (``Peer/of(_:)``) and the
    /// policy's resolved ids: no lookup by name, no `/proc`, nothing that blocks.
    private static func bootstrap(
        group: any EventLoopGroup, context: ServingContext, refusal: String?,
        serve: @escaping @Sendable (any Channel, Peer, AccessRole) throws -> Void
    ) -> ServerBootstrap {
        let counters = context.counters
        let limits = context.limits
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: ListeningSockets.backlog)
            .childChannelInitializer { channel in
                Peer.of(channel).flatMapThrowing { peer in
                    let role = context.policy.role(of: peer)
                    guard counters.admit(channel, peer: peer, role: role) else {
                        let which = role == .none
                            ? "peers with no role share \(limits.maxNoRoleConnections)"
                            : "at most \(limits.maxConnectionsPerUID) per uid, \(limits.maxConnections) in all"
                        context.peerLog.record(.overLimit, .level(.warning), peer: peer) { _ in
                            ("connection from uid \(peer.uid) refused: too many open (\(which))",
                             [LogKey.peerUID: .stringConvertible(peer.uid), LogKey.peerPID: .stringConvertible(peer.pid)])
                        }
                        if let refusal {
                            channel.writeAndFlush(ByteBuffer(string: refusal)).whenComplete { _ in channel.close(promise: nil) }
                        } else {
                            channel.close(promise: nil)
                        }
                        return
                    }
                    channel.closeFuture.whenComplete { _ in counters.release(channel) }
                    // A reload between deciding the role and registering the connection
                    // would miss it: the reload installs its policy before it looks at
                    // the registered connections, so look again now.
                    guard context.policy.role(of: peer) >= role else {
                        channel.close(promise: nil)
                        return
                    }
                    try serve(channel, peer, role)
                }
            }
    }

    /// The HTTP pipeline of one `keyd.sock` connection (also what the fuzz target
    /// drives, byte for byte).
    package static func addAPIHandlers(to channel: any Channel, peer: Peer, role: AccessRole, context: ServingContext) throws {
        let timeouts = try addHTTPCodec(to: channel, limits: context.limits)
        try channel.pipeline.syncOperations.addHandler(
            APIConnectionHandler(peer: peer, role: role, context: context, timeouts: timeouts))
    }

    /// HTTP/1.1 with the limits of README "Serving the key", below a connection's
    /// handler (keyd.sock's, and the metrics listener's): back-pressure, the read and
    /// idle timeouts (returned: the handler tells them when a request is read and its
    /// answer written), the codec with the header limits, and one request at a time.
    static func addHTTPCodec(to channel: any Channel, limits: ServingLimits) throws -> ConnectionTimeouts {
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
        let pipeline = channel.pipeline.syncOperations
        // A peer that pipelines requests and never reads the answers is read no further
        // once its answers back up (NIO's write buffer past its high-water mark): what
        // the daemon holds for one connection stays bounded.
        try pipeline.addHandler(BackPressureHandler())
        let timeouts = ConnectionTimeouts(readTimeout: limits.requestReadTimeout, idleTimeout: limits.idleTimeout)
        try pipeline.addHandler(timeouts)
        try pipeline.addHandler(HTTPResponseEncoder())
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(
            leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .drop, limitConfiguration: decoderLimits)))
        try pipeline.addHandler(HTTPServerPipelineHandler())
        return timeouts
    }

    /// `credential.sock`: the key's bytes to an allowed peer, then close; nothing (and
    /// a journal entry) to anyone else, or when there is no usable key.
    private static func serveCredential(on channel: any Channel, to peer: Peer, context: ServingContext) {
        guard context.policy.mayReceiveCredential(peer) else {
            let asked = peer.unit.map { "LoadCredential=\(peer.credentialID ?? "?") for \($0)" } ?? "the key on credential.sock"
            let logged = context.denied(
                peer, on: .credential, asked: asked,
                needed: peer.unit == nil ? "a reader (access.readers or access.admins)" : "its unit listed in access.units")
            // Closed once the entry naming the peer is written, while its comm is readable.
            if let logged { logged.whenComplete { _ in channel.close(promise: nil) } } else { channel.close(promise: nil) }
            return
        }
        // What is logged is built only when it is logged (a reader's line is debug).
        @Sendable func metadata(_ record: KeyRecord?) -> Logger.Metadata {
            var metadata: Logger.Metadata = [
                LogKey.peerUID: .stringConvertible(peer.uid), LogKey.peerPID: .stringConvertible(peer.pid),
            ]
            if let unit = peer.unit { metadata[LogKey.peerUnit] = .string(unit) }
            if let record {
                metadata[LogKey.keyFingerprint] = .string(record.fingerprint)
                metadata[LogKey.keyVersion] = .stringConvertible(record.id)
            }
            return metadata
        }
        @Sendable func who() -> String { peer.unit.map { "unit \($0)" } ?? "uid \(peer.uid) (pid \(peer.pid))" }
        let record = context.current.record
        guard let record, record.state != .invalid, let secret = record.key?.revealSecret() else {
            context.peerLog.record(.credentialUnavailable, .level(.warning), peer: peer) { _ in
                let why = record.map { record in
                    record.secretUnavailable.map { "key \(record.fingerprint) cannot be read (\($0))" }
                        ?? "key \(record.fingerprint) is known invalid"
                } ?? "there is no key yet"
                return ("\(who()) asked for the key on credential.sock, but \(why): closed without data", metadata(nil))
            }
            channel.close(promise: nil)
            return
        }
        // An audit line per unit served (systemd, as root, is trusted not to flood);
        // a debug line per reader.
        context.peerLog.record(.credentialServed, .level(peer.unit != nil ? .info : .debug), peer: peer, limited: peer.unit == nil) {
            _ in
            let message = peer.unit.map {
                "handed key \(record.fingerprint) to \(who()) (LoadCredential=\(peer.credentialID ?? "?") for \($0))"
            } ?? "handed key \(record.fingerprint) to \(who()) on credential.sock"
            return (message, metadata(record))
        }
        context.metrics.served(on: .credential)
        channel.writeAndFlush(ByteBuffer(string: secret)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Writes the peer log's summaries when a window that suppressed entries ends, and
/// closes the sockets on graceful shutdown. Sleeps only while summaries are owed: an
/// idle daemon has no timer here. The sockets themselves are opened by
/// `KeydDaemon.build`
/// before `READY=1`.
struct ServingService: Service, CustomStringConvertible {
    let server: SocketServer
    var description: String { "ServingService" }

    func run() async throws {
        let peerLog = server.context.peerLog
        let clock = server.context.clock
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await peerLog.summariesOwed.wait()
                while let due = peerLog.summariesDue(), !Task.isCancelled {
                    try? await clock.sleep(for: max(due.since(clock.now), .milliseconds(10)))
                    peerLog.flush()
                }
            }
        }
        await server.close()
        peerLog.flush(now: .distantFuture)
        peerLog.drain()
    }
}
