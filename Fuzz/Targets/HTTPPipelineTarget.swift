import NIOCore
import NIOEmbedded
import NIOHTTP1
import RecotapKeyd

extension FuzzTarget {
    /// Arbitrary bytes into one `keyd.sock` connection carrying the real pipeline
    /// (timeouts, HTTP decoder with the daemon's limits, pipelining, routes, access
    /// decisions), as a reader, an admin or an outsider. Then time passes — past the
    /// read and idle timeouts and the longest long poll. Checked: no trap; everything
    /// written back is a sequence of well-formed HTTP/1.1 responses; the connection's
    /// long polls and buffers are gone once it is.
    ///
    /// Input: a byte choosing the peer, then the bytes the peer sends.
    static let httpPipeline = FuzzTarget(
        name: "http-pipeline", summary: "keyd.sock: raw bytes through the real handlers"
    ) { bytes throws(FuzzFailure) in
        guard let first = bytes.first else { return }
        let fixture = ServingFixture.shared
        let peer = ServingFixture.peers[Int(first) % ServingFixture.peers.count]
        let input = Array(bytes.dropFirst())
        let outcome = blocking { () -> Result<[UInt8], FuzzFailure> in
            do {
                return .success(try await exchange(input, peer: peer, context: fixture.context))
            } catch let failure as FuzzFailure {
                return .failure(failure)
            } catch {
                return .failure(FuzzFailure("the test channel failed: \(error)"))
            }
        }
        let output = try outcome.get()
        if fixture.context.policy.role(of: peer) == .none {
            let text = String(decoding: output, as: UTF8.self)
            try check(!text.contains(ServingFixture.key.revealSecret()), "the key, to a peer with no role")
        }
        let responses = try parseResponses(output)
        // Every answer costs the peer at least a request line's worth of bytes, but
        // the read timeout answers even a connection that sent nothing whole.
        try check(responses <= input.count / 16 + 1, "\(responses) responses to \(input.count) bytes")
        try check(fixture.context.counters.snapshot.longPolls == 0, "a long poll outlived its connection")
    }

    private static func exchange(_ input: [UInt8], peer: Peer, context: ServingContext) async throws -> [UInt8] {
        let channel = NIOAsyncTestingChannel()
        try await channel.testingEventLoop.executeInContext {
            try SocketServer.addAPIHandlers(to: channel, peer: peer, role: context.policy.role(of: peer), context: context)
        }
        try await channel.connect(to: try SocketAddress(unixDomainSocketPath: "/keyd.sock"))
        var output: [UInt8] = []
        func drain() async throws {
            while let part = try await channel.readOutbound(as: IOData.self) {
                switch part {
                case .byteBuffer(let buffer): output += buffer.readableBytesView
                case .fileRegion: throw FuzzFailure("a file region written to a peer")
                }
            }
        }
        // In a few writes, as a socket would deliver them.
        var offset = 0
        while offset < input.count, channel.isActive {
            let size = min(input.count - offset, 1 + Int(input[offset]) * 16)
            try await channel.writeInbound(ByteBuffer(bytes: input[offset..<(offset + size)]))
            offset += size
            try await settle(channel)
            try await drain()
        }
        // Past the read timeout (10 s), idle (60 s) and the longest long poll (300 s),
        // in steps, so that what each timer's answer schedules runs too.
        for _ in 0..<2 where channel.isActive {
            await channel.testingEventLoop.advanceTime(by: .seconds(301))
            try await settle(channel)
            try await drain()
        }
        if channel.isActive { _ = try? await channel.finish(acceptAlreadyClosed: true) }
        try await drain()
        return output
    }

    /// Lets answers computed off the loop (status, history, checks) arrive.
    private static func settle(_ channel: NIOAsyncTestingChannel) async throws {
        for _ in 0..<6 {
            await Task.yield()
            await channel.testingEventLoop.run()
        }
    }

    /// Counts the responses in `bytes`; throws unless they are a sequence of
    /// well-formed HTTP/1.1 responses, each with a body of its Content-Length.
    static func parseResponses(_ bytes: [UInt8]) throws(FuzzFailure) -> Int {
        var rest = bytes[...]
        var count = 0
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        while !rest.isEmpty {
            guard let headEnd = rest.firstRange(of: end) else {
                throw FuzzFailure("an answer without the end of its head: \(String(decoding: rest.prefix(200), as: UTF8.self))")
            }
            let head = String(decoding: rest[rest.startIndex..<headEnd.lowerBound], as: UTF8.self)
            let lines = head.components(separatedBy: "\r\n")
            let status = lines[0].split(separator: " ", maxSplits: 2)
            guard status.count >= 2, status[0] == "HTTP/1.1" || status[0] == "HTTP/1.0", let code = Int(status[1]),
                (100...599).contains(code)
            else { throw FuzzFailure("a malformed status line: \(lines[0])") }
            var length = 0
            for line in lines.dropFirst() {
                let pair = line.split(separator: ":", maxSplits: 1)
                guard pair.count == 2 else { throw FuzzFailure("a malformed header line: \(line)") }
                if pair[0].lowercased() == "content-length" {
                    guard let value = Int(pair[1].trimmingCharacters(in: .whitespaces)), value >= 0 else {
                        throw FuzzFailure("a malformed Content-Length: \(line)")
                    }
                    length = value
                }
            }
            rest = rest[headEnd.upperBound...]
            guard rest.count >= length else { throw FuzzFailure("a body shorter than its Content-Length \(length)") }
            rest = rest.dropFirst(length)
            count += 1
        }
        return count
    }
}
