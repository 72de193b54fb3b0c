import Foundation
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

/// What any local user, spool writer or API server can send, against the real binary:
/// after each, the daemon is still running and still serves the key.
@Suite("Hostile input (real binary)", .serialized, .enabled(if: haveCurl, "needs curl"))
struct HostileInputTests {
    static let key = "rtk_hostile_input_key_0123456789"

    private func stillServes(_ served: ServedDaemon, after what: String) async throws {
        let answer = try await served.curl("/v1/key")
        #expect(answer.status == 200 && answer.body == Data(Self.key.utf8), "serves the key after \(what)")
        #expect(served.daemon.process.isRunning, "still running after \(what)")
    }

    @Test("a reader that pipelines requests and never reads the answers is read no further once they back up: the daemon buffers a bounded amount, and serves others")
    func neverReadingClient() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let path = served.api
        // Writes pipelined GETs without ever reading, until the daemon stops taking
        // them (a send that cannot go on for 2 s) or 16 MiB have gone.
        let written = try await offload { () -> Int in
            let client = try UnixClient(path: path)
            defer { withExtendedLifetime(client) {} }
            let fd = client.fd
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let chunk = Array(String(repeating: "GET /v1/key HTTP/1.1\r\nHost: x\r\n\r\n", count: 1024).utf8)
            var total = 0
            while total < 16 << 20 {
                let sent = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent > 0 {
                    total += sent
                    continue
                }
                guard errno == EAGAIN || errno == EWOULDBLOCK else { return -1 }
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, 2000) == 0 { break }
            }
            return total
        }
        print("a client that never reads got \(written) bytes of requests in before the daemon stopped reading")
        #expect(written > 0)
        #expect(written < 4 << 20, "the daemon kept reading requests whose answers nobody reads: \(written) bytes")
        try await stillServes(served, after: "a client that never reads")
        #expect(await served.finish() == 0)
    }

    @Test("absurd query parameters never trap: refused with 400 naming the parameter, or cut to their cap")
    func queryParameters() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)

        // The issue's own example, as sent: a long poll cut to 300 s, so it waits; the
        // daemon must survive it and answer others meanwhile.
        let waiting = try UnixClient(path: served.api)
        waiting.send("GET /v1/key?wait=1e16 HTTP/1.1\r\nHost: x\r\n\r\n")
        try await stillServes(served, after: "wait=1e16")

        // Cut to the cap and answered at once, because `after` names another version.
        for query in ["wait=1e16&after=0", "wait=1e400&after=0", "wait=99999999999999999999999&after=0",
                      "wait=9223372036854775.807&after=0", "wait=18446744073709551616&after=0"] {
            let answer = try await served.curl("/v1/key?" + query)
            #expect(answer.status == 200 && answer.body == Data(Self.key.utf8), "\(query)")
        }
        let refused: [(String, String)] = [
            ("/v1/key?wait=-1", "wait"), ("/v1/key?wait=nan", "wait"), ("/v1/key?wait=inf", "wait"),
            ("/v1/key?wait=-inf", "wait"), ("/v1/key?wait=0x10", "wait"), ("/v1/key?wait=", "wait"),
            ("/v1/key?wait=1e", "wait"), ("/v1/key?wait=%00", "wait"), ("/v1/key?wait=1%0a2", "wait"),
            ("/v1/key?wait=1&after=99999999999999999999", "after"), ("/v1/key?wait=1&after=-1", "after"),
            ("/v1/key?wait=1&after=1.5", "after"), ("/v1/key?after=abc", "after"),
            ("/v1/history?limit=99999999999999999999", "limit"), ("/v1/history?limit=0", "limit"),
            ("/v1/history?limit=-9223372036854775808", "limit"), ("/v1/history?limit=1e3", "limit"),
        ]
        for (path, parameter) in refused {
            let answer = try await served.curl(path)
            #expect(answer.status == 400, "\(path)")
            #expect(answer.json?["error"]?.string == "invalid_parameter", "\(path)")
            #expect(answer.json?["parameter"]?.string == parameter, "\(path)")
            #expect(answer.json?["message"]?.string?.hasPrefix(parameter + " must be") == true, "\(path)")
        }
        try await stillServes(served, after: "absurd parameters")
        #expect(!served.daemon.output.contains(Self.key))
        #expect(await served.finish() == 0)
    }

    @Test("odd but valid HTTP on one kept-alive connection: each answer parses, the next request is answered right")
    func oddRequests() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let client = try UnixClient(path: served.api)
        let requests = [
            "HEAD /v1/key HTTP/1.1\r\nHost: x\r\n\r\n",  // no body may follow a HEAD answer
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/key?wait=1&wait=1e16&after=0 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/%6Bey HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/key?%77ait=.5&after=0 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ]
        client.send(requests.joined())
        let answer = try await client.read()
        #expect(answer.closed)
        let text = String(decoding: answer.data, as: UTF8.self)
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["405", "404", "200", "404", "200", "200"], "\(text)")
        #expect(text.hasSuffix(Self.key), "the last answer is the key, whole")
        try await stillServes(served, after: "odd requests")
        #expect(await served.finish() == 0)
    }

    @Test("a spool file named with an escape sequence, a newline and a tag character is logged, listed and shown escaped")
    func escapedFileName() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        // U+E0041 (a tag character, beyond the BMP) trapped the hand-written JSON writer.
        let hostile = "evil\u{1b}[2J\u{1b}]0;owned\u{07}\nKEY_ACTIVATED forged\u{E0041}"
        // Refused (malformed content): the name reaches SPOOL_REJECTED and /v1/spool.
        try "not a key".write(toFile: served.spool + "/" + hostile, atomically: false, encoding: .utf8)
        let escaped = #"evil\x1b[2J\x1b]0;owned\x07\nKEY_ACTIVATED forged"#
        #expect(try await served.logged(escaped), "the console log shows the name escaped")
        for line in served.daemon.output.split(separator: "\n") where line.contains("evil") {
            #expect(!line.contains("\u{1b}") && !line.contains("\u{07}"), "no raw control character: \(line)")
        }
        #expect(!served.daemon.output.contains("\nKEY_ACTIVATED forged"), "no forged line")

        let spool = try await served.curl("/v1/spool")
        #expect(spool.status == 200)
        #expect(spool.text.contains(#"forged\udb40\udc41"#), "a surrogate pair beyond the BMP")
        #expect(!spool.body.contains(0x1b) && !spool.body.contains(0x07), "JSON escapes control characters")
        #expect(spool.text.contains(#"evil\u001b[2J"#))
        #expect(spool.json?["recent"]?.array?.first?["file"]?.string == hostile, "the JSON still decodes to the real name")

        // Accepted from such a name: the name is the key's source, shown by keyctl.
        let next = "rtk_hostile_input_key_second_99"
        served.mock.addValidKey(next)
        try next.write(toFile: served.spool + "/" + hostile + "2", atomically: false, encoding: .utf8)
        #expect(try await eventually(timeout: .seconds(15)) {
            (try? await served.curl("/v1/key").headers["x-key-fingerprint"]) == APIKey.fingerprint(of: next)
        })
        let history = try await runCommand([productsDirectory + "/recotap-keyctl", "history", "--socket", served.api])
        #expect(history.status == 0)
        #expect(!history.stdout.contains(0x1b) && !history.stdout.contains(0x07), "keyctl prints no raw control character")
        #expect(history.output.contains(#"evil\x1b[2J"#))
        #expect(history.output.split(separator: "\n").count == 3, "header and two rows: the newline stays escaped")
        #expect(await served.finish() == 0)
    }

    @Test("a spool file whose name is not UTF-8 is refused by name, moved to rejected/, and the key stays")
    func undecodableFileName() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let raw: [UInt8] = Array("key-".utf8) + [0xFF, 0xFE, 0x1B] + Array("x".utf8)
        let path = Array(served.spool.utf8) + [0x2F] + raw + [0]
        let fd = path.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_CREAT | O_WRONLY, 0o600) } }
        #expect(fd >= 0)
        _ = "rtk_some_other_key_0000".withCString { write(fd, $0, 23) }
        close(fd)
        #expect(try await served.logged("refused key-%FF%FE%1Bx: the file name is not valid UTF-8"))
        #expect(SpoolDirectory.rawNames(in: served.spool).filter { $0 != Array("rejected".utf8) }.isEmpty, "gone from the spool")
        let rejected = try FileManager.default.contentsOfDirectory(atPath: served.spool + "/rejected")
        #expect(rejected.contains { $0.hasSuffix("-key-%FF%FE%1Bx") }, "\(rejected)")
        let spool = try await served.curl("/v1/spool")
        #expect(spool.json?["recent"]?.array?.first?["verdict"]?.string == "rejected")
        try await stillServes(served, after: "a name that is not UTF-8")
        #expect(await served.finish() == 0)
    }

    @Test("an API that dribbles or never ends its body: each check ends at api.timeout, memory stays flat, the watchdog keeps pinging")
    func hostileAPI() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.key],
            extra: "check:\n  report_min_interval: 0s\n  backoff_min: 1s\n  backoff_max: 2s",
            environment: ["WATCHDOG_USEC": "2000000"])
        try await served.activate(Self.key)
        let pid = served.daemon.process.processIdentifier
        let rssBefore = try #require(residentKiB(pid))

        // Endless bodies, through admin checks: each is cut at 64 KiB.
        served.mock.inject(.endlessBody(status: 200, count: 0))
        for _ in 0..<30 {
            let answer = try await served.curl("/v1/check", method: "POST")
            #expect(answer.status == 200 && answer.json?["outcome"]?.string == "valid")
        }
        let rssAfter = try #require(residentKiB(pid))
        #expect(rssAfter - rssBefore < 16 * 1024, "resident memory grew from \(rssBefore) KiB to \(rssAfter) KiB")

        // A body dribbled for ever, answered 503: the scheduler retries every 1–2 s and
        // each try ends at the 2 s api.timeout; the watchdog (2 s: pings every 1 s)
        // never stops, since no check outlasts its window.
        served.mock.clearFaults()
        served.mock.inject(.dribbleBody(status: 503, everyMilliseconds: 300, count: 0))
        let check = try await served.curl("/v1/check", method: "POST")
        #expect(check.json?["outcome"]?.string == "unreachable")
        #expect((check.json?["latency_ms"]?.int ?? .max) < 3500, "the exchange ends at api.timeout: \(check.text)")
        let notify = served.notify
        let messages = try await offload { () -> [String] in
            var seen: [String] = []
            let end = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < end {
                if let message = notify.receive(timeout: .seconds(1)) { seen.append(message) }
            }
            return seen
        }
        let pings = messages.filter { $0.contains("WATCHDOG=1") }.count
        #expect(pings >= 6, "\(pings) watchdog pings in 10 s")
        #expect(!served.daemon.output.contains("withholding WATCHDOG=1"))
        let tries = served.mock.requests().filter { $0.receivedAt > Date().timeIntervalSince1970 - 10 }.count
        #expect(tries >= 2, "the scheduler kept retrying: \(tries) requests in 10 s")
        served.mock.clearFaults()
        try await stillServes(served, after: "a hostile API")
        #expect(await served.finish() == 0)
    }

    /// `VmRSS` of a process, in KiB.
    private func residentKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    @Test("1,000 consumer reports and 1,000 admin checks within 10 s cost at most one request per report_min_interval")
    func callBudget() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let fingerprint = APIKey.fingerprint(of: Self.key)
        let before = served.mock.requests().count
        let started = Date()
        // Pipelined on one keep-alive connection: as fast as the daemon answers.
        let client = try UnixClient(path: served.api)
        var request = ""
        for _ in 0..<1000 {
            request += "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: \(fingerprint.utf8.count)\r\n\r\n\(fingerprint)"
            request += "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        }
        request += "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        client.send(request)
        let answers = String(decoding: try await client.read(timeout: .seconds(60)).data, as: UTF8.self)
        let elapsed = Date().timeIntervalSince(started)
        #expect(answers.components(separatedBy: "HTTP/1.1 202").count - 1 == 1000, "every report accepted")
        #expect(answers.components(separatedBy: "HTTP/1.1 200").count - 1 == 1001, "every check answered, and the health check")
        try await Task.sleep(for: .milliseconds(500))  // reports start their checks after answering
        let requests = served.mock.requests().count - before
        // report_min_interval is 10 s: one on-demand request per started 10 s.
        let bound = Int(elapsed / 10) + 1
        #expect(requests <= bound, "\(requests) API requests for 2,000 on-demand asks in \(elapsed) s (bound \(bound))")
        #expect(requests >= 1, "the first on-demand check did go out")
        try await stillServes(served, after: "the flood of checks")
        #expect(await served.finish() == 0)
    }
}
