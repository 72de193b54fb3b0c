import Foundation
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

/// keyd.sock with the real binary and real curl: every request of the README's Serving the key.
@Suite("Serving: the HTTP API on keyd.sock (real binary, real curl)", .enabled(if: haveCurl, "needs curl"))
struct ServingAPITests {
    static let key = "rtk_served_key_0123456789"
    static let fingerprint = APIKey.fingerprint(of: key)

    @Test("GET /v1/key: exactly the key as text, the JSON form, version headers, ETag and If-None-Match")
    func getKey() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)

        let text = try await served.curl("/v1/key")
        #expect(text.status == 200)
        #expect(text.body == Data(Self.key.utf8), "exactly the key, no newline")
        #expect(text.headers["x-key-fingerprint"] == Self.fingerprint)
        #expect(text.headers["x-key-version"] == "1")
        #expect(text.headers["content-type"]?.hasPrefix("text/plain") == true)
        #expect(text.headers["cache-control"] == "no-store")
        #expect(text.headers["x-key-age"].flatMap { Int($0) }.map { (0...60).contains($0) } == true, "whole seconds since it was added")
        let etag = try #require(text.headers["etag"])

        let json = try await served.curl("/v1/key", headers: ["Accept: application/json"])
        #expect(json.status == 200)
        let body = try #require(json.json)
        #expect(body["key"]?.string == Self.key)
        #expect(body["fingerprint"]?.string == Self.fingerprint)
        #expect(body["version"]?.int == 1)
        #expect(body["state"]?.string == "valid")
        #expect(body["activated_at"]?.string != nil && body["last_verified_at"]?.string != nil)
        #expect(body["age_seconds"]?.int.map { (0...60).contains($0) } == true)
        #expect(try await served.curl("/v1/status").json?["age_seconds"]?.int.map { (0...60).contains($0) } == true)

        let unchanged = try await served.curl("/v1/key", headers: ["If-None-Match: \(etag)"])
        #expect(unchanged.status == 304 && unchanged.body.isEmpty)

        #expect(await served.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key))
    }

    @Test("no key: /v1/key is 404 with a JSON error, /healthz 503; with a key /healthz is 200")
    func noKey() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        let missing = try await served.curl("/v1/key")
        #expect(missing.status == 404)
        #expect(missing.json?["error"]?.string == "no_key")
        #expect(missing.json?["message"]?.string?.contains(served.spool) == true)
        #expect(try await served.curl("/healthz").status == 503)
        try await served.activate(Self.key)
        // The verification before activation is the key's first check.
        let status = try #require(try await served.curl("/v1/status").json)
        #expect(status["last_check"]?["outcome"]?.string == "valid")
        #expect(status["last_check"]?["reason"]?.string?.contains("verification before activation") == true)
        let health = try await served.curl("/healthz")
        #expect(health.status == 200 && health.text == "ok\n")
        #expect(await served.finish() == 0)
    }

    @Test("a key the API confirmed invalid: /v1/key 503 saying since when, /healthz 503, POST /v1/check says invalid")
    func invalidKey() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], extra: "check:\n  confirm_delay: 1s")
        try await served.activate(Self.key)
        served.mock.regenerate()
        // An admin check sees the 401; the second one confirms it.
        let first = try await served.curl("/v1/check", method: "POST")
        #expect(first.json?["outcome"]?.string == "invalid")
        let second = try await served.curl("/v1/check", method: "POST")
        #expect(second.json?["outcome"]?.string == "invalid")

        let dead = try await served.curl("/v1/key")
        #expect(dead.status == 503)
        #expect(dead.json?["error"]?.string == "key_invalid")
        #expect(dead.json?["invalid_since"]?.string != nil)
        #expect(dead.json?["fingerprint"]?.string == Self.fingerprint)
        #expect(!dead.text.contains(Self.key))
        #expect(try await served.curl("/healthz").status == 503)

        let again = try await served.curl("/v1/check", method: "POST")
        #expect(again.status == 200)
        #expect(again.json?["checked"]?.bool == false && again.json?["outcome"]?.string == "invalid")
        #expect(served.daemon.output.contains("event=KEY_INVALIDATED"))
        #expect(await served.finish() == 0)
    }

    @Test("long poll: answers the moment a key is activated through the spool; 304 at the timeout")
    func longPoll() async throws {
        let next = "rtk_served_next_key_987654"
        let served = try await ServedDaemon(validKeys: [Self.key, next])
        try await served.activate(Self.key)

        let timedOut = try await served.curl("/v1/key?wait=1&after=1")
        #expect(timedOut.status == 304)
        #expect(timedOut.headers["x-key-version"] == "1")

        let api = served.api
        let waiting = Task.detached { try await curl(api, "/v1/key?wait=60&after=1", timeout: .seconds(70)) }
        try await Task.sleep(for: .milliseconds(300))
        let status = try #require(try await served.curl("/v1/status").json)
        #expect(status["connections"]?["long_polls"]?.int == 1)
        let dropped = ContinuousClock.now
        _ = try SpoolWriter.write(APIKey(secret: next), into: served.spool)
        let answer = try await waiting.value
        let elapsed = ContinuousClock.now - dropped
        #expect(answer.status == 200)
        #expect(answer.body == Data(next.utf8))
        #expect(answer.headers["x-key-version"] == "2")
        #expect(elapsed < .seconds(20), "answered \(elapsed) after the drop, not at the 60 s timeout")
        print("long poll answered \(elapsed) after the spool rename (verification against the mock included)")

        // A version already behind is answered at once.
        let behind = try await served.curl("/v1/key?wait=60&after=1")
        #expect(behind.status == 200 && behind.headers["x-key-version"] == "2")
        let bad = try await served.curl("/v1/key?wait=soon")
        #expect(bad.status == 400 && bad.json?["error"]?.string == "invalid_parameter")
        #expect(await served.finish() == 0)
    }

    @Test("POST /v1/report: the active fingerprint gets 202, CONSUMER_REPORTED_401 and a check; another gets 409 and nothing")
    func report() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        // Let the check at activation finish before counting.
        try await Task.sleep(for: .milliseconds(500))
        let before = served.mock.requests().count

        let stale = try await served.curl("/v1/report", method: "POST", body: "0123456789ab")
        #expect(stale.status == 409)
        #expect(stale.json?["error"]?.string == "not_active")
        try await Task.sleep(for: .milliseconds(300))
        #expect(served.mock.requests().count == before, "a stale report triggers nothing")
        #expect(!served.daemon.output.contains("event=CONSUMER_REPORTED_401"))

        let accepted = try await served.curl("/v1/report", method: "POST", body: "{\"fingerprint\": \"\(Self.fingerprint)\"}")
        #expect(accepted.status == 202)
        #expect(try await eventually { served.mock.requests().count == before + 1 })
        #expect(served.daemon.output.contains("event=CONSUMER_REPORTED_401"))
        #expect(served.daemon.output.contains("peer.comm=curl"))

        // Debounced: a second report at once is accepted but sends nothing.
        #expect(try await served.curl("/v1/report", method: "POST", body: Self.fingerprint).status == 202)
        try await Task.sleep(for: .milliseconds(300))
        #expect(served.mock.requests().count == before + 1)

        let garbage = try await served.curl("/v1/report", method: "POST", body: "not a fingerprint")
        #expect(garbage.status == 400 && garbage.json?["error"]?.string == "invalid_fingerprint")
        #expect(await served.finish() == 0)
    }

    @Test("GET /v1/status, POST /v1/check and GET /v1/history answer what they promise, without the secret")
    func statusCheckHistory() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)

        let check = try await served.curl("/v1/check", method: "POST")
        #expect(check.status == 200)
        #expect(check.json?["outcome"]?.string == "valid" && check.json?["http_status"]?.int == 200)

        let status = try #require(try await served.curl("/v1/status").json)
        #expect(status["state"]?.string == "valid")
        #expect(status["fingerprint"]?.string == Self.fingerprint)
        #expect(status["version"]?.int == 1)
        #expect(status["last_check"]?["outcome"]?.string == "valid")
        #expect(status["last_check"]?["http_status"]?.int == 200)
        #expect(status["last_check"]?["latency_ms"]?.int != nil)
        #expect(status["next_check"]?.string != nil)
        #expect(status["invalid_since"] == .null)
        #expect(status["spool"]?["pending"]?.int == 0)
        #expect(status["uptime_seconds"]?.int != nil)
        #expect(status["daemon_version"]?.string == KeydVersion.current)

        let history = try await served.curl("/v1/history")
        #expect(history.status == 200)
        let keys = try #require(history.json?["keys"]?.array)
        #expect(keys.count == 1 && keys[0]["fingerprint"]?.string == Self.fingerprint && keys[0]["status"]?.string == "active")
        for response in [history, check, try await served.curl("/v1/status")] {
            #expect(!response.text.contains(Self.key))
        }
        #expect(await served.finish() == 0)
    }

    @Test("unknown paths 404, wrong methods 405 with Allow, errors are JSON with a stable code; keep-alive works")
    func errorsAndKeepAlive() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        try await served.activate(Self.key)
        let missing = try await served.curl("/v2/nothing")
        #expect(missing.status == 404 && missing.json?["error"]?.string == "not_found")
        let method = try await served.curl("/v1/key", method: "DELETE")
        #expect(method.status == 405 && method.headers["allow"] == "GET")
        #expect(method.json?["error"]?.string == "method_not_allowed")

        // Three requests on one connection.
        let client = try UnixClient(path: served.api)
        client.send(String(repeating: "GET /v1/key HTTP/1.1\r\nHost: x\r\n\r\n", count: 2) + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let (data, closed) = try await client.read()
        let text = String(decoding: data, as: UTF8.self)
        #expect(closed)
        #expect(text.components(separatedBy: "HTTP/1.1 200 OK").count == 4, "\(text.count) bytes")
        #expect(await served.finish() == 0)
    }
}
