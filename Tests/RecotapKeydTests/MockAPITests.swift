import Foundation
import RecotapAPIMock
import Testing

private let validKey = "rtk_mock_valid_0123456789abcdef"

/// Starts a mock with one valid key, runs `body`, shuts it down.
private func withMock(_ body: (MockRecotapAPI) async throws -> Void) async throws {
    let mock = try await MockRecotapAPI.start()
    mock.setValidKeys([validKey])
    do {
        try await body(mock)
    } catch {
        try await mock.shutdown()
        throw error
    }
    try await mock.shutdown()
}

private func accounts(_ mock: MockRecotapAPI, key: String? = validKey, limit: String = "1") throws -> TestHTTPResponse {
    var headers = ["Accept": "application/json"]
    if let key { headers["X-Api-Key"] = key }
    return try httpRequest(port: mock.port, path: "/api/v1/accounts?limit=\(limit)", headers: headers)
}

private func json(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

@Suite("Mock API")
struct MockAPITests {
    @Test("a valid key gets 200 with the documented envelope")
    func validKeyAnswer() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let response = try accounts(mock)
            #expect(response.status == 200)
            #expect(response.headers["content-type"]?.hasPrefix("application/json") == true)
            let body = response.json
            let data = try #require(body["data"] as? [[String: Any]])
            #expect(data.count == 1)
            #expect(data.first?["externalId"] as? String == "crm-001")
            #expect(body["hasNextPage"] as? Bool == true)
            #expect(body["nextCursor"] is String)
            #expect(body["syncTimestamp"] is String)
            let three = try accounts(mock, limit: "3").json["data"] as? [[String: Any]]
            #expect(three?.count == 3)
            let all = try accounts(mock, limit: "100").json
            #expect(all["hasNextPage"] as? Bool == false)
        }
    }

    @Test("a missing header gets 401 'X-Api-Key header is required'")
    func missingHeader() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let response = try accounts(mock, key: nil)
            #expect(response.status == 401)
            let body = response.json
            #expect(body["statusCode"] as? Int == 401)
            #expect(body["customMessage"] as? String == "X-Api-Key header is required")
            #expect(body["message"] as? String == "Unauthorized access")
            #expect(body["path"] as? String == "/api/v1/accounts")
            #expect(body["timestamp"] is String)
        }
    }

    @Test("an unknown key gets 401 'Invalid API key'")
    func unknownKey() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let response = try accounts(mock, key: "rtk_not_a_key_at_all")
            #expect(response.status == 401)
            #expect(response.json["customMessage"] as? String == "Invalid API key")
        }
    }

    @Test("an unknown route gets 404")
    func unknownRoute() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let response = try httpRequest(port: mock.port, path: "/api/v1/nothing", headers: ["X-Api-Key": validKey])
            #expect(response.status == 404)
            #expect(response.json["statusCode"] as? Int == 404)
        }
    }

    @Test("regenerating kills the old key at once and the new one works")
    func regenerate() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let fresh = mock.regenerate()
            #expect(fresh != validKey)
            #expect(try accounts(mock).status == 401)
            #expect(try accounts(mock, key: fresh).status == 200)

            // The same over the control API.
            let response = try httpRequest(
                port: mock.port, method: "POST", path: "/_mock/regenerate", body: json(["old": fresh, "new": "rtk_third_key_000000"]))
            #expect(response.status == 200)
            #expect(response.json["key"] as? String == "rtk_third_key_000000")
            #expect(try accounts(mock, key: fresh).status == 401)
            #expect(try accounts(mock, key: "rtk_third_key_000000").status == 200)
        }
    }

    @Test("keys can be set and added over the control API")
    func controlKeys() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            #expect(try httpRequest(port: mock.port, method: "PUT", path: "/_mock/keys", body: json(["keys": ["rtk_k1_0000000000"]])).status == 200)
            #expect(try accounts(mock).status == 401)
            #expect(try accounts(mock, key: "rtk_k1_0000000000").status == 200)
            #expect(try httpRequest(port: mock.port, method: "POST", path: "/_mock/keys", body: json(["key": validKey])).status == 200)
            #expect(try accounts(mock).status == 200)
            #expect(try httpRequest(port: mock.port, method: "PUT", path: "/_mock/keys", body: json(["nope": 1])).status == 400)
        }
    }

    @Test("status faults answer the injected status with the error shape", arguments: [403, 500, 503, 400])
    func statusFaults(_ status: Int) async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.status(status))
            let response = try accounts(mock)
            #expect(response.status == status)
            #expect(response.json["statusCode"] as? Int == status)
            #expect(try accounts(mock).status == 200, "count 1: the next request is normal again")
        }
    }

    @Test("429 with and without Retry-After")
    func rateLimit() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.rateLimit(retryAfter: "7"))
            mock.inject(.rateLimit(retryAfter: "Wed, 21 Oct 2026 07:28:00 GMT"))
            mock.inject(.rateLimit())
            let first = try accounts(mock)
            #expect(first.status == 429)
            #expect(first.headers["retry-after"] == "7")
            #expect(try accounts(mock).headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT")
            let third = try accounts(mock)
            #expect(third.status == 429)
            #expect(third.headers["retry-after"] == nil)
        }
    }

    @Test("a delay holds the answer back")
    func delay() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.delay(milliseconds: 400))
            let start = ContinuousClock.now
            let response = try accounts(mock)
            #expect(response.status == 200)
            #expect(ContinuousClock.now - start >= .milliseconds(400))
        }
    }

    @Test("a dropped connection gets no answer at all")
    func drop() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.drop())
            #expect(throws: TestHTTPError.self) { try accounts(mock) }
            #expect(try accounts(mock).status == 200)
        }
    }

    @Test("a redirect points elsewhere")
    func redirect() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.redirect(to: "https://attacker.example/steal"))
            let response = try accounts(mock)
            #expect(response.status == 302)
            #expect(response.headers["location"] == "https://attacker.example/steal")
        }
    }

    @Test("a bare 401 has no customMessage")
    func bare401() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.unauthorizedBare())
            let response = try accounts(mock)
            #expect(response.status == 401)
            #expect(response.json["message"] as? String == "Unauthorized access")
            #expect(response.json["customMessage"] == nil)
        }
    }

    @Test("faults queue in order, honour count, persist with count 0, and clear")
    func faultQueue() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            mock.inject(.status(503, count: 2))
            mock.inject(.status(500))
            #expect(try accounts(mock).status == 503)
            #expect(try accounts(mock).status == 503)
            #expect(try accounts(mock).status == 500)
            #expect(try accounts(mock).status == 200)
            let injected = try httpRequest(
                port: mock.port, method: "POST", path: "/_mock/faults", body: json(["kind": "status", "status": 502, "count": 0]))
            #expect(injected.status == 200)
            for _ in 0..<3 { #expect(try accounts(mock).status == 502) }
            #expect(try httpRequest(port: mock.port, method: "DELETE", path: "/_mock/faults").status == 200)
            #expect(try accounts(mock).status == 200)
            #expect(try httpRequest(port: mock.port, method: "POST", path: "/_mock/faults", body: json(["kind": "bogus"])).status == 400)
        }
    }

    @Test("received requests can be read back, with the key's fingerprint but never the key")
    func requestLog() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            _ = try httpRequest(
                port: mock.port, path: "/api/v1/accounts?limit=1",
                headers: ["X-Api-Key": validKey, "User-Agent": "recotap-keyd/test", "Accept": "application/json"])
            _ = try accounts(mock, key: nil)
            let requests = mock.requests()
            #expect(requests.count == 2)
            #expect(requests[0].method == "GET")
            #expect(requests[0].path == "/api/v1/accounts")
            #expect(requests[0].query == "limit=1")
            #expect(requests[0].userAgent == "recotap-keyd/test")
            #expect(requests[0].accept == "application/json")
            #expect(requests[0].apiKeyFingerprint == RedactionTests.sha256Prefix(validKey))
            #expect(requests[1].apiKeyFingerprint == nil)

            let overHTTP = try httpRequest(port: mock.port, path: "/_mock/requests")
            #expect(overHTTP.status == 200)
            #expect(!overHTTP.text.contains(validKey))
            let list = try JSONSerialization.jsonObject(with: overHTTP.body) as? [[String: Any]]
            #expect(list?.count == 2, "control calls are not recorded")
            #expect(list?.first?["api_key_fingerprint"] as? String == requests[0].apiKeyFingerprint)
        }
    }

    @Test("keep-alive: several requests on one connection")
    func keepAlive() async throws {
        try await withMock { (mock: MockRecotapAPI) async throws in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(mock.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(rc == 0)
            let request = "GET /api/v1/accounts?limit=1 HTTP/1.1\r\nHost: x\r\nX-Api-Key: \(validKey)\r\n\r\n"
            var answers = 0
            for _ in 0..<2 {
                _ = Array(request.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                // Read exactly one response: headers, then Content-Length bytes of body.
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let text = String(decoding: received, as: UTF8.self)
                    if let end = text.range(of: "\r\n\r\n"),
                        let lengthLine = text[..<end.lowerBound].split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
                        let length = Int(lengthLine.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)),
                        received.count >= text[..<end.upperBound].utf8.count + length
                    { break }
                    let count = recv(fd, &buffer, buffer.count, 0)
                    if count <= 0 { break }
                    received += buffer[0..<count]
                }
                if String(decoding: received, as: UTF8.self).hasPrefix("HTTP/1.1 200") { answers += 1 }
            }
            #expect(answers == 2)
        }
    }
}

@Suite("recotap-api-mock executable")
struct MockExecutableTests {
    @Test("--port 0 picks a port, prints where it listens, and serves the keys from --keys-file")
    func executable() throws {
        let dir = try TemporaryDirectory()
        let mock = try MockProcess(keys: ["rtk_exec_key_one_00000", "", "rtk_exec_key_two_00000"], in: dir)
        #expect(mock.banner.hasPrefix("recotap-api-mock listening on http://127.0.0.1:\(mock.port)/api/v1"))
        #expect(mock.banner.contains("(2 valid key(s))"))
        #expect(!mock.banner.contains("rtk_exec_key"), "keys are never printed")
        #expect(try httpRequest(port: mock.port, path: "/api/v1/accounts?limit=1", headers: ["X-Api-Key": "rtk_exec_key_two_00000"]).status == 200)
        #expect(try httpRequest(port: mock.port, path: "/api/v1/accounts?limit=1", headers: ["X-Api-Key": "rtk_exec_key_three_000"]).status == 401)
        #expect(try httpRequest(port: mock.port, path: "/_mock/state").json["valid_keys"] as? Int == 2)
        let fresh = try mock.regenerate()
        #expect(try httpRequest(port: mock.port, path: "/api/v1/accounts?limit=1", headers: ["X-Api-Key": "rtk_exec_key_two_00000"]).status == 401)
        #expect(try httpRequest(port: mock.port, path: "/api/v1/accounts?limit=1", headers: ["X-Api-Key": fresh]).status == 200)
    }
}
