import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import Testing

@testable import RecotapKeyd
import RecotapKeydFuzzTargets

/// The pieces that keep a local attacker from drowning the alerts, starving readers or
/// following links, each on its own.
@Suite("Local attacker: peer log, connection caps, rejected/, event-loop probe")
struct LocalAttackerTests {
    private func peerLog(_ capture: Capture) -> PeerLog {
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal) }
        return PeerLog(logger: logger)
    }

    private func refuse(_ log: PeerLog, uid: UInt32, times: Int, at now: Date) {
        let peer = Peer(pid: 4242, uid: uid, gid: uid)
        for _ in 0..<times {
            log.record(.accessDenied, .event(.accessDenied), peer: peer, at: now) { _ in
                ("refused uid \(uid)", [LogKey.peerUID: .stringConvertible(uid)])
            }
        }
    }

    @Test("10,000 refusals of one uid cost the journal 5 entries and one summary with the count; another uid keeps its own share")
    func refusalsAreSummarised() {
        let capture = Capture()
        let log = peerLog(capture)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        refuse(log, uid: 65534, times: 10_000, at: start)
        refuse(log, uid: 1000, times: 3, at: start.addingTimeInterval(1))
        log.drain()
        #expect(capture.events(.accessDenied).filter { $0["RECOTAP_PEER_UID"] == "65534" }.count == 5)
        #expect(capture.events(.accessDenied).filter { $0["RECOTAP_PEER_UID"] == "1000" }.count == 3)
        log.flush(now: start.addingTimeInterval(30))
        log.drain()
        #expect(capture.events(.accessDeniedSuppressed).isEmpty, "not before the minute is over")
        log.flush(now: start.addingTimeInterval(61))
        log.drain()
        let summaries = capture.events(.accessDeniedSuppressed)
        #expect(summaries.count == 1, "uid 1000 had nothing suppressed")
        #expect(summaries.first?["RECOTAP_PEER_UID"] == "65534")
        #expect(summaries.first?["RECOTAP_SUPPRESSED_COUNT"] == "9995")
        #expect(summaries.first?["RECOTAP_SUPPRESSED_ACCESS_DENIED"] == "9995")
        #expect(summaries.first?["PRIORITY"] == "4")
        // The next minute starts afresh.
        refuse(log, uid: 65534, times: 10, at: start.addingTimeInterval(62))
        log.drain()
        #expect(capture.events(.accessDenied).filter { $0["RECOTAP_PEER_UID"] == "65534" }.count == 10)
        #expect(log.counts == (written: 13, suppressed: 10_000), "\(log.counts)")
    }

    @Test("many uids: at most 200 entries in full a minute in all, and at most 101 summaries")
    func manyUIDsAreBounded() {
        let capture = Capture()
        let log = peerLog(capture)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for uid in UInt32(100_000)..<100_500 { refuse(log, uid: uid, times: 20, at: start) }
        log.flush(now: start.addingTimeInterval(61))
        log.drain()
        #expect(capture.events(.accessDenied).count == 200)
        #expect(capture.events(.accessDeniedSuppressed).count == 101, "100 per uid, the rest in one")
        #expect(capture.events(.accessDeniedSuppressed).last?["RECOTAP_SUPPRESSED_UIDS"] == "400")
    }

    @Test("peers with no role share a small cap of their own: readers and admins keep theirs")
    func noRoleCap() throws {
        var limits = ServingLimits()
        limits.maxConnections = 10
        limits.maxNoRoleConnections = 4
        let counters = ServingCounters(limits: limits)
        let channels = (0..<40).map { _ in EmbeddedChannel() }
        var admitted = 0
        for (index, channel) in channels.prefix(20).enumerated() {
            if counters.admit(channel, peer: Peer(pid: 0, uid: 20_000 + UInt32(index % 4), gid: 1), role: .none) { admitted += 1 }
        }
        #expect(admitted == 4, "no-role peers get their 4, however many uids they are")
        var readers = 0
        for channel in channels.dropFirst(20).prefix(10) where counters.admit(channel, peer: Peer(pid: 0, uid: 1000, gid: 1), role: .reader) {
            readers += 1
        }
        #expect(readers == 10, "the readers' capacity is untouched")
        #expect(!counters.admit(channels[30], peer: Peer(pid: 0, uid: 1001, gid: 1), role: .admin))
        #expect(counters.snapshot.active == 14 && counters.snapshot.noRole == 4)
        counters.release(channels[0])
        #expect(counters.admit(channels[31], peer: Peer(pid: 0, uid: 30_000, gid: 1), role: .none))
        let readerChannels = counters.connections { _, role in role == .reader }
        #expect(readerChannels.count == 10)
    }

    @Test("rejected/ swapped for a symlink or a file: never followed, the refusal says why, the file stays")
    func rejectedSwapped() throws {
        let dir = try TemporaryDirectory()
        let spool = try SpoolDirectory(path: dir.file("spool"))
        let elsewhere = dir.file("elsewhere")
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false)
        try FileManager.default.removeItem(atPath: spool.rejectedPath)
        try FileManager.default.createSymbolicLink(atPath: spool.rejectedPath, withDestinationPath: elsewhere)
        try "bad".write(toFile: spool.path + "/bad.key", atomically: false, encoding: .utf8)
        guard case .failure(let error) = spool.reject("bad.key", at: Date()) else {
            Issue.record("moved through a symlink")
            return
        }
        #expect(error.message.contains("is not a directory"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
        #expect(FileManager.default.fileExists(atPath: spool.path + "/bad.key"))

        // At start: a file in its place is a warning, not a refusal to start.
        try FileManager.default.removeItem(atPath: spool.rejectedPath)
        try "planted".write(toFile: spool.rejectedPath, atomically: false, encoding: .utf8)
        let again = try SpoolDirectory(path: spool.path)
        #expect(again.warnings.contains { $0.contains("rejected is not a directory") }, "\(again.warnings)")
        #expect(again.rejectedCount() == 0)
    }

    @Test("pruning rejected/ never removes a directory's contents")
    func pruneIsNotRecursive() throws {
        let dir = try TemporaryDirectory()
        let spool = try SpoolDirectory(path: dir.file("spool"))
        let planted = spool.rejectedPath + "/0000-old-dir"
        try FileManager.default.createDirectory(atPath: planted, withIntermediateDirectories: false)
        try "keep me".write(toFile: planted + "/inside", atomically: false, encoding: .utf8)
        var old = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        utimensat(AT_FDCWD, planted, &old, AT_SYMLINK_NOFOLLOW)
        for index in 0..<(SpoolDirectory.rejectedKept + 3) {
            try "bad".write(toFile: spool.path + "/bad-\(index)", atomically: false, encoding: .utf8)
            _ = spool.reject("bad-\(index)", at: Date())
        }
        #expect(FileManager.default.fileExists(atPath: planted + "/inside"), "the planted directory's file is still there")
    }

    @Test("the watchdog's probe finds an event loop that did not run the last probe, and none when all do")
    func eventLoopProbe() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let probe = EventLoopProbe(loops: loops)
        #expect(await probe.stuckLoops(grace: .milliseconds(500)) == 0, "nothing sent yet")
        #expect(await probe.stuckLoops(grace: .milliseconds(500)) == 0, "both ran the first probe")
        let blocked = Mutex(true)
        loops[0].execute { while blocked.withLock({ $0 }) { usleep(10_000) } }
        _ = await probe.stuckLoops(grace: .milliseconds(500))  // sends a probe the blocked loop cannot run
        #expect(await probe.stuckLoops(grace: .milliseconds(500)) == 1)
        blocked.withLock { $0 = false }
        #expect(await probe.stuckLoops(grace: .seconds(5)) == 0, "its late probe counts once it runs")
        try await group.shutdownGracefully()
    }
}

@Suite("Connection timeouts with pipelined requests (the real handlers on a test channel)")
struct PipelinedTimeoutTests {
    /// The real `keyd.sock` pipeline, as root (an admin), on a channel whose clock the
    /// test moves.
    private func connect() async throws -> NIOAsyncTestingChannel {
        // The fixture is built by blocking on its own tasks: never on the test's pool.
        let context = try await offload { ServingFixture.shared.context }
        let channel = NIOAsyncTestingChannel()
        try await channel.testingEventLoop.executeInContext {
            try SocketServer.addAPIHandlers(to: channel, peer: ServingFixture.peers[0], role: .admin, context: context)
        }
        try await channel.connect(to: try SocketAddress(unixDomainSocketPath: "/keyd.sock"))
        return channel
    }

    private func statuses(_ channel: NIOAsyncTestingChannel) async throws -> [String] {
        var text = ""
        while let part = try await channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = part { text += String(buffer: buffer) }
        }
        return text.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.1 ") }
    }

    @Test("a long poll pipelined behind an answered one keeps its connection past the idle timeout, and is answered 304 at its end")
    func pipelinedLongPollIsNotIdle() async throws {
        let channel = try await connect()
        let version = try await offload { ServingFixture.shared.context.current.version }
        try await channel.writeInbound(ByteBuffer(string:
            "GET /v1/key?wait=1&after=\(version) HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/key?wait=300&after=\(version) HTTP/1.1\r\nHost: t\r\n\r\n"))
        await channel.testingEventLoop.advanceTime(by: .seconds(2))
        #expect(try await statuses(channel) == ["HTTP/1.1 304 Not Modified"])
        // Past the idle timeout (60 s), within the second poll's 300 s.
        await channel.testingEventLoop.advanceTime(by: .seconds(120))
        #expect(channel.isActive, "the connection was closed as idle while its long poll waited")
        #expect(try await statuses(channel).isEmpty)
        await channel.testingEventLoop.advanceTime(by: .seconds(200))
        #expect(try await statuses(channel) == ["HTTP/1.1 304 Not Modified"])
        _ = try? await channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a last answer (Connection: close) the peer never takes is dropped with the connection at the read timeout, not held forever")
    func unreadLastAnswer() async throws {
        let channel = try await connect()
        // In front of the real handlers: writes that never complete, as on a socket
        // whose peer never reads.
        try await channel.pipeline.addHandler(NeverWritten(), position: .first)
        try await channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        await channel.testingEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive, "closed before its answer could be taken")
        await channel.testingEventLoop.advanceTime(by: .seconds(6))
        #expect(!channel.isActive, "still open 11 s after an answer nobody takes")
        _ = try? await channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a 408 the peer never takes is dropped with the connection a read timeout later, not held forever")
    func unreadTimeoutAnswer() async throws {
        let channel = try await connect()
        try await channel.pipeline.addHandler(NeverWritten(), position: .first)
        try await channel.writeInbound(ByteBuffer(string: "GET /v1/key HTTP/1.1\r\nHost: t\r\nX-Pad: "))
        await channel.testingEventLoop.advanceTime(by: .seconds(11))
        #expect(channel.isActive, "the 408 is written at the read timeout; its peer gets a read timeout to take it")
        await channel.testingEventLoop.advanceTime(by: .seconds(11))
        #expect(!channel.isActive, "still open with a 408 nobody takes")
        _ = try? await channel.finish(acceptAlreadyClosed: true)
    }

    @Test("half a request pipelined behind a long poll gets its 408 at the read timeout after the answer, not at the idle timeout")
    func partialRequestAfterPipelinedAnswer() async throws {
        let channel = try await connect()
        let version = try await offload { ServingFixture.shared.context.current.version }
        try await channel.writeInbound(ByteBuffer(string: "GET /v1/key?wait=5&after=\(version) HTTP/1.1\r\nHost: t\r\n\r\n"))
        await channel.testingEventLoop.advanceTime(by: .seconds(1))
        // The next request's first bytes arrive while the poll waits; the rest never.
        try await channel.writeInbound(ByteBuffer(string: "GET /v1/key HTTP/1.1\r\nHost: t\r\nX-Pad: "))
        await channel.testingEventLoop.advanceTime(by: .seconds(5))
        #expect(try await statuses(channel) == ["HTTP/1.1 304 Not Modified"])
        // The read timeout is 10 s from the answer; the idle timeout would be 60 s.
        // (The 408 is written below the HTTP encoder, as bytes, and closes the connection.)
        #expect(channel.isActive)
        await channel.testingEventLoop.advanceTime(by: .seconds(11))
        #expect(!channel.isActive, "no 408 at the read timeout after the answer")
        let late = try await channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } ?? ""
        #expect(late.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(late.prefix(40))")
        _ = try? await channel.finish(acceptAlreadyClosed: true)
    }
}

/// Holds every write unfinished until the channel closes: a peer that never reads.
private final class NeverWritten: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    private var held: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let promise { held.append(promise) }
    }

    func flush(context: ChannelHandlerContext) {}

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        for promise in held { promise.fail(ChannelError.ioOnClosedChannel) }
        held = []
        context.close(mode: mode, promise: promise)
    }
}
