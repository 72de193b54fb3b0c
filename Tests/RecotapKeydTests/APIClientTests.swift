import Foundation
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

private let goodKey = APIKey(secret: "rtk_client_test_good_key_0123")

/// The real client against the real mock, over loopback.
private func withClient(
    timeout: Duration = .seconds(2), _ body: (MockRecotapAPI, RecotapAPIClient) async throws -> Void
) async throws {
    let mock = try await MockRecotapAPI.start()
    mock.setValidKeys([goodKey.revealSecret()])
    var api = KeydConfiguration.defaults.api
    api.baseURL = mock.baseURL
    api.timeout = timeout
    let client = try RecotapAPIClient(api: api, retryAfterCap: .seconds(300), environment: [:])
    do {
        try await body(mock, client)
    } catch {
        await client.shutdown()
        try await mock.shutdown()
        throw error
    }
    await client.shutdown()
    try await mock.shutdown()
}

@Suite("API client (against the mock over loopback)", .serialized)
struct APIClientTests {
    @Test("a valid key: 200 → valid, one GET /accounts?limit=1 with the documented headers")
    func valid() async throws {
        try await withClient { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            let result = await client.check(goodKey)
            #expect(result.outcome == .valid)
            #expect(result.httpStatus == 200)
            #expect(result.latency > .zero)
            let requests = mock.requests()
            #expect(requests.count == 1)
            let request = try #require(requests.first)
            #expect(request.method == "GET")
            #expect(request.path == "/api/v1/accounts")
            #expect(request.query == "limit=1")
            #expect(request.apiKeyFingerprint == goodKey.fingerprint)
            #expect(request.accept == "application/json")
            #expect(request.userAgent == "recotap-keyd/\(KeydVersion.current)")
        }
    }

    @Test("regenerated key → invalid with the API's customMessage; a bare 401 → its message")
    func invalid() async throws {
        try await withClient { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            let fresh = mock.regenerate()
            _ = fresh
            let result = await client.check(goodKey)
            #expect(result.outcome == .invalid)
            #expect(result.httpStatus == 401)
            #expect(result.reason == "Invalid API key")
            mock.inject(.unauthorizedBare())
            #expect(await client.check(goodKey).reason == "Unauthorized access")
        }
    }

    @Test("every fault mode is classified as the README's Checking the key says, one request each")
    func faults() async throws {
        try await withClient(timeout: .seconds(1)) { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            mock.inject(.status(403))
            let forbidden = await client.check(goodKey)
            #expect(forbidden.outcome == .rejectedRequest)
            #expect(forbidden.httpStatus == 403)
            mock.inject(.status(404))
            #expect(await client.check(goodKey).outcome == .rejectedRequest)
            mock.inject(.status(500))
            #expect(await client.check(goodKey).outcome == .unreachable)
            mock.inject(.status(503))
            let unavailable = await client.check(goodKey)
            #expect(unavailable.outcome == .unreachable)
            #expect(unavailable.httpStatus == 503)
            mock.inject(.rateLimit(retryAfter: "7"))
            let limited = await client.check(goodKey)
            #expect(limited.outcome == .rateLimited)
            #expect(limited.retryAfter == .seconds(7))
            let inTwoMinutes = Date().addingTimeInterval(120)
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
            mock.inject(.rateLimit(retryAfter: formatter.string(from: inTwoMinutes)))
            let dated = try #require(await client.check(goodKey).retryAfter)
            #expect(dated > .seconds(110) && dated <= .seconds(121))
            mock.inject(.rateLimit())
            #expect(await client.check(goodKey).retryAfter == nil)
            mock.inject(.nonJSON())
            #expect(await client.check(goodKey).outcome == .valid, "the status decides")
            #expect(mock.requests().count == 8, "exactly one request per check: the client never retries")
        }
    }

    @Test("a timeout and a dropped connection are unreachable")
    func timeoutAndDrop() async throws {
        try await withClient(timeout: .seconds(1)) { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            mock.inject(.delay(milliseconds: 3000))
            let slow = await client.check(goodKey)
            #expect(slow.outcome == .unreachable)
            #expect(slow.reason?.hasPrefix("timeout") == true, "\(slow.reason ?? "")")
            #expect(slow.latency < .seconds(3))
            mock.inject(.drop())
            let dropped = await client.check(goodKey)
            #expect(dropped.outcome == .unreachable)
            #expect(dropped.httpStatus == nil)
            #expect(await client.check(goodKey).outcome == .valid, "the pool recovers")
        }
    }

    @Test("a body dribbled one byte at a time ends at api.timeout; the status still decides")
    func dribblingBody() async throws {
        try await withClient(timeout: .seconds(2)) { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            // A byte every 300 ms never trips the 2 s read timeout; only a deadline over
            // the whole exchange ends it.
            mock.inject(.dribbleBody(status: 200, everyMilliseconds: 300))
            let valid = await client.check(goodKey)
            #expect(valid.outcome == .valid)
            #expect(valid.latency >= .seconds(2) && valid.latency < .milliseconds(3500), "\(valid.latency)")
            mock.inject(.dribbleBody(status: 401, everyMilliseconds: 300))
            let invalid = await client.check(goodKey)
            #expect(invalid.outcome == .invalid)
            #expect(invalid.reason == "HTTP 401 Unauthorized", "the body never ended: the status line is the reason")
            #expect(invalid.latency < .milliseconds(3500), "\(invalid.latency)")
            #expect(await client.check(goodKey).outcome == .valid, "the next check gets a fresh connection")
        }
    }

    @Test("an endless body is cut at 64 KiB at once; the status still decides")
    func endlessBody() async throws {
        try await withClient(timeout: .seconds(2)) { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            for status in [200, 401, 503] {
                mock.inject(.endlessBody(status: status))
                let result = await client.check(goodKey)
                #expect(result.httpStatus == status)
                #expect(result.latency < .seconds(2), "cut by size, not by the deadline: \(result.latency)")
            }
            #expect(await client.check(goodKey).outcome == .valid)
        }
    }

    @Test("a redirect is not followed: the target never receives a request")
    func redirectNotFollowed() async throws {
        let target = try await MockRecotapAPI.start()
        target.setValidKeys([goodKey.revealSecret()])
        try await withClient { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            mock.inject(.redirect(to: target.baseURL + "/accounts?limit=1"))
            let result = await client.check(goodKey)
            #expect(result.outcome == .rejectedRequest)
            #expect(result.httpStatus == 302)
            #expect(result.reason?.contains("not followed") == true)
        }
        #expect(target.requests().isEmpty)
        try await target.shutdown()
    }

    @Test("nothing listening: unreachable, not invalid")
    func refused() async throws {
        let mock = try await MockRecotapAPI.start()
        let port = mock.port
        try await mock.shutdown()
        var api = KeydConfiguration.defaults.api
        api.baseURL = "http://127.0.0.1:\(port)/api/v1"
        api.timeout = .seconds(1)
        let client = try RecotapAPIClient(api: api, retryAfterCap: .seconds(300), environment: [:])
        let result = await client.check(goodKey)
        await client.shutdown()
        #expect(result.outcome == .unreachable)
        #expect(result.reason == "connection refused", "\(result.reason ?? "")")
    }

    @Test("the connection is reused between checks")
    func connectionReuse() async throws {
        try await withClient { (mock: MockRecotapAPI, client: RecotapAPIClient) async throws in
            for _ in 0..<5 { #expect(await client.check(goodKey).outcome == .valid) }
            #expect(mock.connectionCount == 1)
        }
    }

    @Test("a body echoing the key never carries it into the reason")
    func redaction() {
        let text = RecotapAPIClient.redact("bad key \(goodKey.revealSecret())!", key: goodKey)
        #expect(text == "bad key <key \(goodKey.fingerprint)>!")
    }

    @Test("proxy: api.proxy, else https_proxy, never for loopback or no_proxy hosts")
    func proxy() throws {
        var api = KeydConfiguration.defaults.api
        let env = ["https_proxy": "http://user:p%40ss@proxy.corp:3128", "NO_PROXY": "internal.example"]
        let fromEnvironment = try #require(try RecotapAPIClient.proxy(api: api, scheme: "https", host: "eapi.recotap.com", environment: env))
        #expect(fromEnvironment.host == "proxy.corp")
        #expect(fromEnvironment.port == 3128)
        #expect(fromEnvironment.authorization != nil)
        #expect(try RecotapAPIClient.proxy(api: api, scheme: "https", host: "127.0.0.1", environment: env) == nil)
        #expect(try RecotapAPIClient.proxy(api: api, scheme: "https", host: "api.internal.example", environment: env) == nil)
        #expect(try RecotapAPIClient.proxy(api: api, scheme: "https", host: "eapi.recotap.com", environment: [:]) == nil)
        api.proxy = "http://configured.example:8080"
        #expect(try RecotapAPIClient.proxy(api: api, scheme: "https", host: "eapi.recotap.com", environment: env)?.host == "configured.example")
        #expect(throws: APIClientSetupError.self) {
            try RecotapAPIClient.proxy(
                api: KeydConfiguration.defaults.api, scheme: "https", host: "eapi.recotap.com",
                environment: ["HTTPS_PROXY": "socks5://proxy:1080"])
        }
    }

    @Test("an unreadable api.ca_file stops the start with a clear error")
    func badCAFile() throws {
        let dir = try TemporaryDirectory()
        var api = KeydConfiguration.defaults.api
        api.caFile = try dir.write("ca.pem", "not a certificate")
        #expect { try RecotapAPIClient(api: api, retryAfterCap: .seconds(1), environment: [:]) } throws: { error in
            "\(error)".contains("api.ca_file")
        }
    }
}
