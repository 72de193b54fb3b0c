import Foundation
import Testing

@testable import RecotapKeyd

/// Bad clients: after each, a normal client still gets the key promptly.
@Suite("Serving: limits and misbehaving clients (real binary)", .serialized, .enabled(if: haveCurl, "needs curl"))
struct ServingLimitsTests {
    static let key = "rtk_limits_key_0123456789"

    /// A normal client gets the key — and not after a timeout: a connection that
    /// could hold others up would cost them the 10 s read timeout. (Not a latency
    /// goal: on two cores running the other suites, spawning curl alone can take
    /// seconds; the benchmark measures latency.)
    private func normalClientGetsKey(_ served: ServedDaemon, as wrapper: [String] = [], _ comment: Comment) async throws {
        let started = ContinuousClock.now
        let answer = try await served.curl("/v1/key", as: wrapper)
        #expect(answer.status == 200 && answer.body == Data(Self.key.utf8), comment)
        #expect(ContinuousClock.now - started < ServingLimits.standard.requestReadTimeout, comment)
    }

    @Test("an oversized header gets 431, a body over 4 KiB 413, garbage 400 — each connection closed, others unaffected")
    func oversized() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)

        let header = try UnixClient(path: served.api)
        header.send("GET /v1/key HTTP/1.1\r\nHost: x\r\nX-Filler: \(String(repeating: "a", count: 9000))\r\n\r\n")
        let headerAnswer = try await header.read()
        #expect(String(decoding: headerAnswer.data, as: UTF8.self).hasPrefix("HTTP/1.1 431"))
        #expect(headerAnswer.closed)
        try await normalClientGetsKey(served, "after an oversized header")

        let body = try await served.curl("/v1/report", method: "POST", body: String(repeating: "0", count: 5000))
        #expect(body.status == 413 && body.json?["error"]?.string == "body_too_large")
        // Announced length over the limit, body never sent: refused at once.
        let announced = try UnixClient(path: served.api)
        announced.send("POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        let announcedAnswer = try await announced.read(timeout: .seconds(3))
        #expect(String(decoding: announcedAnswer.data, as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        try await normalClientGetsKey(served, "after a body too big")

        let garbage = try UnixClient(path: served.api)
        garbage.send((0..<2048).map { _ in UInt8.random(in: 0...255) } + Array("\r\n\r\n".utf8))
        let garbageAnswer = try await garbage.read()
        #expect(garbageAnswer.closed)
        #expect(String(decoding: garbageAnswer.data, as: UTF8.self).hasPrefix("HTTP/1.1 400") || garbageAnswer.data.isEmpty)
        try await normalClientGetsKey(served, "after garbage")
        #expect(await served.finish() == 0)
    }

    @Test("half a request, then silence: others are served meanwhile; it gets 408 and is closed after the read timeout")
    func slowClient() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let slow = try UnixClient(path: served.api)
        slow.send("GET /v1/key HTTP/1.1\r\nHost: x\r\nX-Half: ")
        let started = ContinuousClock.now
        try await normalClientGetsKey(served, "while a request hangs half-sent")
        // Served while the half request was still pending: nothing waited for it.
        var byte: UInt8 = 0
        #expect(recv(slow.fd, &byte, 1, Int32(MSG_DONTWAIT)) < 0 && errno == EAGAIN, "the slow connection was still open")
        let answer = try await slow.read(timeout: .seconds(20))
        let waited = ContinuousClock.now - started
        #expect(answer.closed)
        #expect(String(decoding: answer.data, as: UTF8.self).hasPrefix("HTTP/1.1 408"))
        #expect(!String(decoding: answer.data, as: UTF8.self).contains(Self.key))
        let limit = ServingLimits.standard.requestReadTimeout
        #expect(waited >= limit - .milliseconds(200) && waited < limit + .seconds(10), "closed after \(waited)")
        try await normalClientGetsKey(served, "after the slow client")
        #expect(await served.finish() == 0)
    }

    @Test(
        "1,000 simultaneous connections: the excess is refused at once and counted; another user is served meanwhile; all served after",
        .enabled(if: canDropToNobody, "needs root and setpriv for the second user"))
    func manyConnections() async throws {
        ProcessHardening.raiseFileLimit()
        let served = try await ServedDaemon(
            validKeys: [Self.key],
            access: "access:\n  readers: { groups: [\"54321\"] }\n  admins: { groups: [] }", socketMode: "0666")
        chmod(served.dir.file("run"), 0o755)
        try await served.activate(Self.key)

        var clients: [UnixClient] = []
        for _ in 0..<1000 { clients.append(try UnixClient(path: served.api)) }
        // Those over the per-user cap are closed by the daemon without an answer.
        let perUID = ServingLimits.standard.maxConnectionsPerUID
        // A refused one reads a 503 and then the end of the stream.
        var refusals: [Int32: [UInt8]] = [:]
        func isClosed(_ client: UnixClient) -> Bool {
            var buffer = [UInt8](repeating: 0, count: 512)
            while true {
                let count = recv(client.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count == 0 { return true }
                if count < 0 { return false }
                refusals[client.fd, default: []] += buffer[0..<count]
            }
        }
        _ = try await eventually { clients.filter(isClosed).count >= 1000 - perUID }
        let closed = clients.filter(isClosed).count
        #expect(closed == 1000 - perUID, "\(closed) refused")
        #expect(refusals.count == closed)
        #expect(refusals.values.allSatisfy { String(decoding: $0, as: UTF8.self).hasPrefix("HTTP/1.1 503") })
        try await normalClientGetsKey(served, as: asNobody(groups: [54_321]), "another user while root holds \(perUID) connections")

        // Every admitted connection still works.
        let admitted = clients.filter { !isClosed($0) }
        #expect(admitted.count == perUID)
        for client in admitted.prefix(20) {
            client.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(try await client.text().hasPrefix("HTTP/1.1 200"))
        }
        clients.removeAll()
        try await Task.sleep(for: .milliseconds(300))
        try await normalClientGetsKey(served, "after the 1,000 closed")
        let status = try #require(try await served.curl("/v1/status").json)
        #expect(status["connections"]?["refused"]?.int == Int64(1000 - perUID))
        #expect(await served.finish() == 0)
    }
}
